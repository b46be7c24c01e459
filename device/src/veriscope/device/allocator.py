"""Keeps the daemon's resident memory bounded by how glibc's malloc hands memory back.

A scan decodes frames of megabytes (a 3 MP frame is 9 MB of pixels, the
quality gate's float planes more), in worker threads. With glibc's defaults
each thread may get its own arena (up to eight per core), and after the first
large block is freed malloc raises its mmap threshold, so later frames are
carved from those arenas and stay resident after they are freed. Under load
that doubles the daemon's RSS for no work done.

:func:`tune` fixes both: at most :data:`ARENAS` arenas, and a fixed mmap
threshold so every frame-sized block is its own mapping, returned to the
system when it is freed. Settings an operator gave in the ``MALLOC_*``
environment variables win. Elsewhere than glibc it does nothing.
"""

from __future__ import annotations

import ctypes
import ctypes.util
import logging
import os
import platform

_log = logging.getLogger(__name__)

# mallopt parameters, from glibc's <malloc.h>.
_M_TRIM_THRESHOLD = -1
_M_MMAP_THRESHOLD = -3
_M_ARENA_MAX = -8

ARENAS = 2
"""Malloc arenas the daemon's threads share."""
MMAP_THRESHOLD_BYTES = 1024 * 1024
"""Blocks at least this large are mapped on their own, and unmapped when freed."""
TRIM_THRESHOLD_BYTES = 4 * 1024 * 1024
"""Free memory at the top of the heap beyond this is returned to the system."""

_SETTINGS = (
    ("MALLOC_ARENA_MAX", _M_ARENA_MAX, ARENAS),
    ("MALLOC_MMAP_THRESHOLD_", _M_MMAP_THRESHOLD, MMAP_THRESHOLD_BYTES),
    ("MALLOC_TRIM_THRESHOLD_", _M_TRIM_THRESHOLD, TRIM_THRESHOLD_BYTES),
)


def tune() -> dict[str, int]:
    """Apply the daemon's malloc settings; call it before the server starts its threads.

    Returns the settings applied, by environment-variable name: empty when the
    C library is not glibc, and without those the environment already sets.
    Never raises: memory tuning must not stop a unit from serving.
    """
    if platform.system() != "Linux" or platform.libc_ver()[0] != "glibc":
        return {}
    try:
        libc = ctypes.CDLL(ctypes.util.find_library("c") or "libc.so.6")
        mallopt = libc.mallopt
    except (OSError, AttributeError):
        return {}
    mallopt.argtypes = (ctypes.c_int, ctypes.c_int)
    mallopt.restype = ctypes.c_int
    applied: dict[str, int] = {}
    for env_name, param, value in _SETTINGS:
        if env_name in os.environ:
            continue
        if mallopt(param, value) == 1:
            applied[env_name] = value
        else:
            _log.warning("mallopt refused %s=%d; memory use under load may be higher", env_name, value)
    return applied
