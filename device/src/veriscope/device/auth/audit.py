"""The audit log: one JSON line per privileged or refused call, appended to ``DATA_DIR/audit.log``.

A line records who (token id, name and role), what (the method and the role it
needs), when (start time, duration), from where (the peer) and how it ended
(the gRPC status name, with its message for failures)::

    {"time": "2025-03-01T12:00:00.123Z", "method": "/veriscope.v1.CalibrationService/Calibrate",
     "required_role": "technician", "token_id": "1a2b3c4d", "token_name": "bench-2", "role": "technician",
     "peer": "ipv4:10.0.0.5:51324", "outcome": "OK", "duration_ms": 4210}

The file is opened append-only with mode 0600. When a line would take it past
``max_bytes`` it is renamed ``audit.log.1`` (older files shift up to
``audit.log.<backups>``, the oldest is dropped) and a new one is started.
"""

from __future__ import annotations

import json
import logging
import os
import threading
from collections.abc import Mapping
from pathlib import Path
from typing import Any

AUDIT_FILE = "audit.log"
"""The audit log's name in the data directory."""

_log = logging.getLogger("veriscope.device.audit")


class AuditLog:
    """Appends audit records as JSON lines, rotating the file at a size.

    A write that fails (the disk full, say) is reported in the daemon's log and
    does not fail the call being audited.

    Args:
        path: The log file, usually ``DATA_DIR/audit.log``.
        max_bytes: Size at which the file is rotated, at least 1 KiB.
        backups: Rotated files kept (``audit.log.1`` newest), at least 1.
    """

    def __init__(self, path: Path, *, max_bytes: int = 10 * 1024 * 1024, backups: int = 3) -> None:
        if max_bytes < 1024 or backups < 1:
            raise ValueError("max_bytes must be >= 1024 and backups >= 1")
        self.path = Path(path)
        self.max_bytes = max_bytes
        self.backups = backups
        self._lock = threading.Lock()
        self._failed = False

    def write(self, record: Mapping[str, Any]) -> None:
        """Append one record as a line of JSON."""
        line = (json.dumps(record, separators=(",", ":"), ensure_ascii=False) + "\n").encode("utf-8")
        with self._lock:
            try:
                # Opened per line: privileged calls are few, and no descriptor outlives the daemon or a rotation.
                fd = self._open()
                try:
                    size = os.fstat(fd).st_size
                    if size and size + len(line) > self.max_bytes:
                        os.close(fd)
                        fd = -1
                        self._rotate()
                        fd = self._open()
                    os.write(fd, line)
                finally:
                    if fd >= 0:
                        os.close(fd)
                self._failed = False
            except OSError as exc:
                if not self._failed:  # once per run of failures, not once per call
                    _log.error("cannot write the audit log %s: %s", self.path, exc.strerror)
                self._failed = True

    def _open(self) -> int:
        return os.open(self.path, os.O_WRONLY | os.O_APPEND | os.O_CREAT, 0o600)

    def _rotate(self) -> None:
        for n in range(self.backups - 1, 0, -1):
            older = self.path.with_name(f"{self.path.name}.{n}")
            if older.exists():
                os.replace(older, self.path.with_name(f"{self.path.name}.{n + 1}"))
        os.replace(self.path, self.path.with_name(f"{self.path.name}.1"))
