"""Resumable uploads of bundle files: what has arrived is kept on disk, synced, so a dropped stream resumes.

Layout, under ``DATA_DIR/updates/incoming``:

- ``<upload_id>.json``: the header (size and SHA-256 of the whole file), written when the upload starts;
- ``<upload_id>.part``: the bytes so far, each chunk fsynced before it counts as committed;
- ``<upload_id>.bundle``: the whole file, once its SHA-256 matched the header.

The committed offset is the size of the ``.part`` file: a resumed stream must start exactly there.
"""

from __future__ import annotations

import contextlib
import hashlib
import json
import os
import re
import shutil
from dataclasses import dataclass
from pathlib import Path
from typing import Final

from veriscope.device.errors import FailedPrecondition, InvalidArgument, NotFound, ResourceExhausted
from veriscope.device.fsutil import fsync_dir, write_atomic

MAX_BUNDLE_BYTES: Final = 1024 * 1024 * 1024 + 16 * 1024 * 1024
"""Largest bundle file accepted, in bytes: 1 GiB of payloads and room for the tar's headers."""
MAX_CHUNK_BYTES: Final = 4 * 1024 * 1024
"""Largest chunk accepted in one message, in bytes."""
FREE_MARGIN_BYTES: Final = 64 * 1024 * 1024
"""Space left free on the data volume after an upload and its installed copy, in bytes."""

_UPLOAD_ID = re.compile(r"^[a-z0-9][a-z0-9-]{0,63}$")
_SHA256 = re.compile(r"^[0-9a-f]{64}$")
_HASH_CHUNK = 1024 * 1024


@dataclass(frozen=True)
class UploadState:
    """Where an upload stands.

    Attributes:
        upload_id: The client's id of the upload.
        size_bytes: Size of the whole file.
        sha256: Hex SHA-256 of the whole file.
        committed_bytes: Bytes written and synced so far.
        complete: True when every byte arrived and the SHA-256 matched.
    """

    upload_id: str
    size_bytes: int
    sha256: str
    committed_bytes: int
    complete: bool


def check_upload_id(upload_id: str) -> str:
    """Return ``upload_id``, or raise InvalidArgument when it is not 1..64 lowercase letters, digits and '-'."""
    if not _UPLOAD_ID.match(upload_id):
        raise InvalidArgument(f"upload_id must be 1..64 lowercase letters, digits and '-', got {upload_id!r:.80}")
    return upload_id


class UploadStore:
    """The uploads held in one directory. Methods block on disk I/O: call them from a worker thread."""

    def __init__(self, directory: Path) -> None:
        self.directory = directory

    def _paths(self, upload_id: str) -> tuple[Path, Path, Path]:
        base = self.directory / check_upload_id(upload_id)
        return base.with_suffix(".json"), base.with_suffix(".part"), base.with_suffix(".bundle")

    def get(self, upload_id: str) -> UploadState:
        """The upload's state. Raises NotFound when the unit holds no such upload."""
        meta_path, part, done = self._paths(upload_id)
        try:
            meta = json.loads(meta_path.read_text())
        except (OSError, ValueError):
            raise NotFound(f"no upload {upload_id!r} on this unit; start it with an UploadBundle header") from None
        size, sha256 = int(meta["size_bytes"]), str(meta["sha256"])
        if done.is_file():
            return UploadState(upload_id, size, sha256, size, True)
        committed = part.stat().st_size if part.is_file() else 0
        return UploadState(upload_id, size, sha256, committed, False)

    def start(self, upload_id: str, size_bytes: int, sha256: str) -> UploadState:
        """Begin an upload, or resume the one with this id and the same size and SHA-256.

        Raises:
            InvalidArgument: A field is malformed or the size is out of range.
            FailedPrecondition: The id belongs to an upload of a different file.
            ResourceExhausted: The data volume has no room for the file and its installed copy.
        """
        check_upload_id(upload_id)
        if not 0 < size_bytes <= MAX_BUNDLE_BYTES:
            raise InvalidArgument(f"size_bytes must be 1..{MAX_BUNDLE_BYTES}, got {size_bytes}")
        if not _SHA256.match(sha256):
            raise InvalidArgument("sha256 must be 64 lowercase hex digits")
        with contextlib.suppress(NotFound):
            existing = self.get(upload_id)
            if (existing.size_bytes, existing.sha256) != (size_bytes, sha256):
                raise FailedPrecondition(
                    f"upload {upload_id!r} is of a different file ({existing.size_bytes} bytes, sha256 "
                    f"{existing.sha256[:12]}...); resume it with the same file or use a new upload_id"
                )
            if existing.committed_bytes == existing.size_bytes and not existing.complete:
                # Stopped between the last chunk and its rename: finish it now.
                return self._finish(existing)
            return existing
        self.directory.mkdir(parents=True, exist_ok=True)
        needed = 2 * size_bytes + FREE_MARGIN_BYTES
        free = shutil.disk_usage(self.directory).free
        if free < needed:
            raise ResourceExhausted(
                f"the data volume has {free // 2**20} MiB free; this upload needs {needed // 2**20} MiB "
                "(the file, its installed copy and a margin)"
            )
        meta_path, part, done = self._paths(upload_id)
        # The header goes last: while it exists the upload does, so what an interrupted start or delete
        # left of an earlier upload with this id is cleared first.
        with contextlib.suppress(FileNotFoundError):
            done.unlink()
        with part.open("wb") as f:
            os.fsync(f.fileno())
        write_atomic(meta_path, json.dumps({"size_bytes": size_bytes, "sha256": sha256}).encode())
        return self.get(upload_id)

    def append(self, upload_id: str, offset: int, data: bytes) -> UploadState:
        """Write ``data`` at ``offset``, which must be the committed offset, and sync it.

        When the last byte arrives the whole file's SHA-256 is checked; a mismatch deletes the upload.

        Raises:
            NotFound: No such upload.
            FailedPrecondition: The upload is complete already, or ``offset`` is not the committed offset.
            InvalidArgument: The chunk is empty, too large, runs past the declared size, or the whole file's
                SHA-256 does not match the header.
        """
        state = self.get(upload_id)
        if state.complete:
            raise FailedPrecondition(f"upload {upload_id!r} is complete; install it or start a new one")
        if offset != state.committed_bytes:
            raise FailedPrecondition(
                f"chunk offset {offset} is not the committed offset {state.committed_bytes}; resume from there"
            )
        if not 0 < len(data) <= MAX_CHUNK_BYTES:
            raise InvalidArgument(f"a chunk must hold 1..{MAX_CHUNK_BYTES} bytes, got {len(data)}")
        if offset + len(data) > state.size_bytes:
            raise InvalidArgument(f"chunk ends at {offset + len(data)}, past the declared size {state.size_bytes}")
        _, part, _ = self._paths(upload_id)
        # Created when missing: a delete interrupted after the part went leaves the header, at offset 0.
        with os.fdopen(os.open(part, os.O_WRONLY | os.O_CREAT, 0o644), "wb") as f:
            f.seek(offset)
            f.write(data)
            f.flush()
            os.fsync(f.fileno())
        committed = offset + len(data)
        if committed < state.size_bytes:
            return UploadState(upload_id, state.size_bytes, state.sha256, committed, False)
        return self._finish(UploadState(upload_id, state.size_bytes, state.sha256, committed, False))

    def _finish(self, state: UploadState) -> UploadState:
        """Check the whole file's SHA-256 and make it the complete bundle; a mismatch deletes the upload."""
        upload_id = state.upload_id
        _, part, done = self._paths(upload_id)
        digest = hashlib.sha256()
        with part.open("rb") as f:
            while chunk := f.read(_HASH_CHUNK):
                digest.update(chunk)
        if digest.hexdigest() != state.sha256:
            self.delete(upload_id)
            raise InvalidArgument(
                f"upload {upload_id!r} does not match the SHA-256 its header declared; it was deleted, upload again"
            )
        os.replace(part, done)
        fsync_dir(self.directory)
        return UploadState(upload_id, state.size_bytes, state.sha256, state.size_bytes, True)

    def bundle_path(self, upload_id: str) -> Path:
        """The complete file of an upload. Raises NotFound, or FailedPrecondition when it is not complete."""
        state = self.get(upload_id)
        if not state.complete:
            raise FailedPrecondition(
                f"upload {upload_id!r} is not complete: {state.committed_bytes} of {state.size_bytes} bytes; "
                "finish it with UploadBundle first"
            )
        return self._paths(upload_id)[2]

    def delete(self, upload_id: str) -> None:
        """Remove every file of an upload, its header last; a missing upload is not an error."""
        meta_path, part, done = self._paths(upload_id)
        for path in (done, part, meta_path):
            with contextlib.suppress(FileNotFoundError):
                path.unlink()
