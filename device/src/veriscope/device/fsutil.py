"""Crash-safe file replacement: after a power cut a file holds its old content or its new one, never a mix.

Every small state file of the unit (tokens, pairing code, calibration, identity
keys, update slot pointers) is written the same way: to a temporary file beside
it, fsynced, renamed over it, and the directory fsynced so the rename itself
survives. The temporary name is ``.<name>.tmp``, so what a crash leaves behind
is overwritten by the next write of the same file; writers that may write one
file from several threads or processes at once ask for a unique name instead
(the process and thread ids appended) and sweep ``.tmp`` leftovers themselves.
"""

from __future__ import annotations

import contextlib
import errno
import os
import threading
from pathlib import Path

_NO_DIRECTORY_SYNC = (errno.EINVAL, errno.EOPNOTSUPP, errno.ENOTSUP)
"""What a filesystem that cannot fsync directories answers; there, a rename is as durable as it gets."""


def fsync_dir(path: Path) -> None:
    """Make the entries of directory ``path`` (a rename, a new file) durable.

    Raises :class:`OSError` when the sync fails (an I/O error must not pass
    for durable), but not on a filesystem that cannot sync directories.
    """
    fd = os.open(path, os.O_RDONLY | os.O_DIRECTORY)
    try:
        os.fsync(fd)
    except OSError as exc:
        if exc.errno not in _NO_DIRECTORY_SYNC:
            raise
    finally:
        os.close(fd)


def write_atomic(path: Path, data: bytes, *, mode: int = 0o644, sync_dir: bool = True, unique: bool = False) -> None:
    """Replace ``path`` with ``data`` so that a crash at any point leaves the old file or the new one.

    ``mode`` is set on the new file before any data is written (0o600 for
    secrets). ``sync_dir`` False skips the directory fsync, for callers that
    sync it once after several renames. ``unique`` names the temporary file
    after the process and thread, for files written concurrently. Raises
    :class:`OSError` as the system gives it (the temporary file is removed
    first); callers translate it.
    """
    suffix = f"{os.getpid()}.{threading.get_ident()}" if unique else ""
    tmp = path.with_name(f".{path.name}.tmp{suffix}")
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
