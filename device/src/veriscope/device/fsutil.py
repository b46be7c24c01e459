"""Crash-safe file replacement: after a power cut a file holds its old content or its new one, never a mix.

Every small state file of the unit (tokens, pairing code, calibration, identity
keys, update slot pointers) is written the same way: to a temporary file beside
it, fsynced, renamed over it, and the directory fsynced so the rename itself
survives. The temporary name starts with a dot and holds the process id, so two
processes never write the same one and listings skip it.
"""

from __future__ import annotations

import contextlib
import os
from pathlib import Path


def fsync_dir(path: Path) -> None:
    """Make the entries of directory ``path`` (a rename, a new file) durable; best effort where unsupported."""
    with contextlib.suppress(OSError):
        fd = os.open(path, os.O_RDONLY)
        try:
            os.fsync(fd)
        finally:
            os.close(fd)


def write_atomic(path: Path, data: bytes, *, mode: int = 0o644, sync_dir: bool = True) -> None:
    """Replace ``path`` with ``data`` so that a crash at any point leaves the old file or the new one.

    ``mode`` is set on the new file before any data is written (0o600 for
    secrets). ``sync_dir`` False skips the directory fsync, for callers that
    sync it once after several renames. Raises :class:`OSError` as the system
    gives it (the temporary file is removed first); callers translate it.
    """
    tmp = path.with_name(f".{path.name}.tmp{os.getpid()}")
    try:
        fd = os.open(tmp, os.O_WRONLY | os.O_CREAT | os.O_TRUNC, mode)
        try:
            os.fchmod(fd, mode)  # the creation mode is masked by the umask
            view = memoryview(data)
            while view:
                view = view[os.write(fd, view) :]
            os.fsync(fd)
        finally:
            os.close(fd)
        os.replace(tmp, path)
    except BaseException:
        with contextlib.suppress(OSError):
            tmp.unlink()
        raise
    if sync_dir:
        fsync_dir(path.parent)
