"""Durable storage of scans (SQLite, WAL) and of their images (content-addressed files).

Layout under the data directory::

    scans.sqlite3           one row per scan; the record as JSON plus indexed columns
    images/ab/abcdef….png   image files named by the SHA-256 of their bytes

Images are written to a temporary file, fsynced, then renamed, so a crash
never leaves a partial image under its final name. A scan row is written after
its images, so a stored scan never points at a missing image.
"""

from __future__ import annotations

import base64
import contextlib
import hashlib
import json
import os
import sqlite3
import threading
from dataclasses import dataclass
from datetime import UTC, datetime
from pathlib import Path

from veriscope.device._serde import from_jsonable, to_jsonable
from veriscope.device.codec import ImageFormat
from veriscope.device.errors import InvalidArgument, NotFound, ResourceExhausted
from veriscope.device.scans.records import ScanRecord, ScanState

_SCHEMA = [
    """
    CREATE TABLE IF NOT EXISTS scans (
        scan_id TEXT PRIMARY KEY,
        create_time TEXT NOT NULL,
        state TEXT NOT NULL,
        verdict TEXT,
        item_type TEXT NOT NULL,
        partner_item_id TEXT NOT NULL,
        record TEXT NOT NULL
    )
    """,
    "CREATE INDEX IF NOT EXISTS scans_by_time ON scans (create_time DESC, scan_id DESC)",
]


@dataclass(frozen=True)
class ScanFilter:
    """Conditions on listed scans; every set field must match."""

    item_type: str | None = None
    partner_item_id: str | None = None
    state: ScanState | None = None
    verdict: str | None = None
    not_state: ScanState | None = None
    not_verdict: str | None = None
    create_after: datetime | None = None
    """Strictly after, or at or after when ``create_inclusive``."""
    create_before: datetime | None = None
    create_after_inclusive: bool = False
    create_before_inclusive: bool = False


class ScanStore:
    """Scans and images under one data directory. Thread-safe."""

    def __init__(self, data_dir: Path) -> None:
        self._dir = data_dir
        self._images = data_dir / "images"
        self._images.mkdir(parents=True, exist_ok=True)
        self._lock = threading.Lock()
        self._db = sqlite3.connect(data_dir / "scans.sqlite3", check_same_thread=False, isolation_level=None)
        self._db.execute("PRAGMA journal_mode=WAL")
        self._db.execute("PRAGMA synchronous=FULL")
        for statement in _SCHEMA:
            self._db.execute(statement)

    def close(self) -> None:
        """Close the database."""
        with self._lock:
            self._db.close()

    # Images

    def put_image(self, data: bytes, fmt: ImageFormat) -> str:
        """Store an encoded image durably and return its SHA-256 (lowercase hex)."""
        digest = hashlib.sha256(data).hexdigest()
        path = self.image_path(digest, fmt)
        if path.exists():
            return digest
        path.parent.mkdir(parents=True, exist_ok=True)
        tmp = path.with_suffix(path.suffix + f".tmp{os.getpid()}.{threading.get_ident()}")
        try:
            with open(tmp, "wb") as f:
                f.write(data)
                f.flush()
                os.fsync(f.fileno())
            os.replace(tmp, path)
        except OSError as exc:
            with contextlib.suppress(OSError):
                tmp.unlink()
            if exc.errno == 28:  # ENOSPC
                raise ResourceExhausted("the data volume is full; the image was not stored") from None
            raise
        return digest

    def image_path(self, sha256: str, fmt: ImageFormat) -> Path:
        """Where the image with this digest is (or would be) stored."""
        if len(sha256) != 64 or any(c not in "0123456789abcdef" for c in sha256):
            raise InvalidArgument(f"not a SHA-256 digest: {sha256!r}")
        return self._images / sha256[:2] / f"{sha256}.{'png' if fmt is ImageFormat.PNG else 'jpg'}"

    def read_image(self, sha256: str, fmt: ImageFormat) -> bytes:
        """The bytes of a stored image; NotFound when missing."""
        try:
            return self.image_path(sha256, fmt).read_bytes()
        except FileNotFoundError:
            raise NotFound(f"image {sha256} is not stored") from None

    # Scans

    def save(self, scan: ScanRecord) -> None:
        """Insert or replace a scan record, durably."""
        verdict = scan.outcome.verdict if scan.outcome else None
        row = (
            scan.scan_id,
            _ts(scan.create_time),
            scan.state.value,
            verdict,
            scan.item_type,
            scan.partner_item_id,
            json.dumps(to_jsonable(scan), separators=(",", ":")),
        )
        with self._lock:
            try:
                self._db.execute("INSERT OR REPLACE INTO scans VALUES (?, ?, ?, ?, ?, ?, ?)", row)
            except sqlite3.OperationalError as exc:
                if "full" in str(exc):
                    raise ResourceExhausted("the data volume is full; the scan was not saved") from None
                raise

    def get(self, scan_id: str) -> ScanRecord:
        """The scan with this id; NotFound otherwise."""
        with self._lock:
            row = self._db.execute("SELECT record FROM scans WHERE scan_id = ?", (scan_id,)).fetchone()
        if row is None:
            raise NotFound(f"scan {scan_id!r} not found")
        return from_jsonable(ScanRecord, json.loads(row[0]))

    def list(self, flt: ScanFilter, *, page_size: int, page_token: str) -> tuple[list[ScanRecord], str]:
        """One page of scans matching ``flt``, newest first, and the token of the next page ("" at the end)."""
        where: list[str] = []
        args: list[object] = []
        for column, value, op in (
            ("item_type", flt.item_type, "="),
            ("partner_item_id", flt.partner_item_id, "="),
            ("state", flt.state.value if flt.state else None, "="),
            ("verdict", flt.verdict, "="),
            ("state", flt.not_state.value if flt.not_state else None, "!="),
            ("create_time", _ts(flt.create_after) if flt.create_after else None, ">="),
            ("create_time", _ts(flt.create_before) if flt.create_before else None, "<="),
        ):
            if value is not None:
                if column == "create_time" and op == ">=" and not flt.create_after_inclusive:
                    op = ">"
                if column == "create_time" and op == "<=" and not flt.create_before_inclusive:
                    op = "<"
                where.append(f"{column} {op} ?")
                args.append(value)
        if flt.not_verdict is not None:
            where.append("(verdict IS NULL OR verdict != ?)")
            args.append(flt.not_verdict)
        if page_token:
            create_time, scan_id = _decode_token(page_token)
            where.append("(create_time < ? OR (create_time = ? AND scan_id < ?))")
            args += [create_time, create_time, scan_id]
        sql = "SELECT record, create_time, scan_id FROM scans"
        if where:
            sql += " WHERE " + " AND ".join(where)
        sql += " ORDER BY create_time DESC, scan_id DESC LIMIT ?"
        args.append(page_size + 1)
        with self._lock:
            rows = self._db.execute(sql, args).fetchall()
        scans = [from_jsonable(ScanRecord, json.loads(r[0])) for r in rows[:page_size]]
        token = _encode_token(rows[page_size - 1][1], rows[page_size - 1][2]) if len(rows) > page_size else ""
        return scans, token

    def mark_interrupted(self) -> int:
        """Mark every IN_PROGRESS scan INTERRUPTED (after a restart); returns how many."""
        with self._lock:
            rows = self._db.execute(
                "SELECT record FROM scans WHERE state = ?", (ScanState.IN_PROGRESS.value,)
            ).fetchall()
        count = 0
        for (text,) in rows:
            scan = from_jsonable(ScanRecord, json.loads(text))
            self.save(scan.evolve(state=ScanState.INTERRUPTED, error_message="the daemon stopped during the scan"))
            count += 1
        return count


def _ts(when: datetime) -> str:
    """A sortable UTC text form of a time, fixed width so string order is time order."""
    return when.astimezone(UTC).isoformat(timespec="microseconds")


def _encode_token(create_time: str, scan_id: str) -> str:
    return base64.urlsafe_b64encode(json.dumps([create_time, scan_id]).encode()).decode()


def _decode_token(token: str) -> tuple[str, str]:
    try:
        create_time, scan_id = json.loads(base64.urlsafe_b64decode(token.encode()))
        if not isinstance(create_time, str) or not isinstance(scan_id, str):
            raise ValueError
        return create_time, scan_id
    except (ValueError, TypeError, json.JSONDecodeError, UnicodeDecodeError):
        raise InvalidArgument(f"page_token {token!r} is not a token this device issued") from None
