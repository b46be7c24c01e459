"""Durable storage of scans (SQLite, WAL) and of their images (content-addressed files).

Layout under the data directory::

    scans.sqlite3           one row per scan: the record as JSON plus indexed columns;
                            and which image files each scan references
    images/ab/abcdef….png   image files named by the SHA-256 of their bytes

Images are written to a temporary file, fsynced, renamed and their directory
fsynced, so a crash never leaves a partial image under its final name. A scan
row is written after its images, and pruning deletes rows before files, so a
stored scan never points at a missing image. Every commit is durable when it
returns (WAL with synchronous=FULL). The schema is versioned by
``PRAGMA user_version`` and brought up to date at open by :data:`MIGRATIONS`.
A full volume fails the write at hand with ResourceExhausted and leaves
everything stored before intact. device/docs/storage.md has the whole story.
"""

from __future__ import annotations

import base64
import collections
import contextlib
import errno
import hashlib
import json
import logging
import math
import shutil
import sqlite3
import threading
import time
from collections.abc import Callable, Iterable, Iterator, Sequence
from dataclasses import dataclass
from datetime import UTC, datetime, timedelta
from pathlib import Path

from veriscope.device._serde import from_jsonable, to_jsonable
from veriscope.device.codec import ImageFormat
from veriscope.device.errors import FailedPrecondition, InvalidArgument, NotFound, ResourceExhausted
from veriscope.device.fsutil import fsync_dir, write_atomic
from veriscope.device.scans.records import ScanLabel, ScanRecord, ScanState

_log = logging.getLogger("veriscope.device.scans.store")
_MIB = 1024 * 1024
_FULL_ERRNOS = frozenset({errno.ENOSPC, errno.EDQUOT})
_AGE_PRUNE_INTERVAL_S = 3600.0
"""How often ``max_age_days`` is applied while the daemon runs, in seconds (it is also applied at start)."""
ORPHAN_GRACE_S = 3600.0
"""Age, in seconds, past which an image file that no scan references is deleted when the store opens."""

_LABEL = "json_extract(record, '$.label')"
"""The expert label of a stored scan, as SQL: read from the record's JSON; NULL when unlabelled."""


@dataclass(frozen=True)
class Migration:
    """One step of the schema, from version ``version - 1`` to ``version``.

    ``apply`` runs in the same transaction that records the new version in
    ``PRAGMA user_version``, so a step either completes or leaves the database
    at the version before it. Steps are appended, never edited: a database
    already at a version never runs that version's step again.
    """

    version: int
    """The schema version the step brings the database to: 1 for the first step, then one more for each."""
    description: str
    """What the step changes, in a few words, for logs and errors."""
    apply: Callable[[sqlite3.Connection], None]
    """Runs the step on the open database, inside the migration's transaction; it must not commit."""


def _sql(*statements: str) -> Callable[[sqlite3.Connection], None]:
    """A migration step that runs these statements in order."""

    def apply(db: sqlite3.Connection) -> None:
        for statement in statements:
            db.execute(statement)

    return apply


def _index_images(db: sqlite3.Connection) -> None:
    """Create the image reference table and fill it from the records already stored."""
    db.execute(
        """
        CREATE TABLE scan_images (
            scan_id TEXT NOT NULL,
            sha256 TEXT NOT NULL,
            format TEXT NOT NULL,
            PRIMARY KEY (scan_id, sha256)
        ) WITHOUT ROWID
        """
    )
    db.execute("CREATE INDEX scan_images_by_sha256 ON scan_images (sha256)")
    for scan_id, text in db.execute("SELECT scan_id, record FROM scans").fetchall():
        db.executemany(
            "INSERT OR IGNORE INTO scan_images VALUES (?, ?, ?)",
            [(scan_id, image["sha256"], image["format"]) for image in json.loads(text).get("images", [])],
        )


MIGRATIONS: tuple[Migration, ...] = (
    # Version 1 is the schema of the first daemons, which kept no version: IF NOT EXISTS adopts such a database.
    Migration(
        1,
        "scans and their time index",
        _sql(
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
        ),
    ),
    # The record stays the one source of truth for the label; this index lets ListScans find labelled scans.
    Migration(2, "index of expert labels", _sql(f"CREATE INDEX IF NOT EXISTS scans_by_label ON scans ({_LABEL})")),
    # Which scans reference which image files, derived from the records, so that pruning can tell in one indexed
    # look-up whether another scan still shares an image.
    Migration(3, "image references of scans", _index_images),
)
"""The schema, as the ordered steps that build it; the last step's version is the schema version of this code."""


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
    label: ScanLabel | None = None
    not_label: ScanLabel | None = None
    labelled: bool | None = None
    """True: only scans with a label; False: only scans without one."""


@dataclass(frozen=True)
class RetentionPolicy:
    """Which finished scans the store may delete, and the free space it keeps on the data volume.

    Only scans that are no longer IN_PROGRESS are ever pruned, oldest first;
    scans with an expert label are kept unless ``prune_labelled``.
    """

    max_age_days: int = 0
    """Scans created more than this many days ago are pruned; 0 keeps scans for ever."""
    min_free_mb: int = 256
    """Free-disk floor, in MiB: below it the oldest scans are pruned, and when that is not enough new scans and
    images are refused with RESOURCE_EXHAUSTED, so that scans in progress can still finish."""
    prune_labelled: bool = False
    """True lets pruning delete scans with an expert label too; by default they are kept, as they feed training."""


@dataclass(frozen=True)
class PruneReport:
    """What one pruning pass deleted."""

    scans: int = 0
    """Scans deleted."""
    images: int = 0
    """Image files deleted (an image another scan still references is kept)."""
    freed_bytes: int = 0
    """Size of the deleted image files, in bytes."""

    def __add__(self, other: PruneReport) -> PruneReport:
        """The two passes' deletions together."""
        return PruneReport(self.scans + other.scans, self.images + other.images, self.freed_bytes + other.freed_bytes)


class ScanStore:
    """Scans and images under one data directory. Thread-safe.

    Opening migrates the database to :data:`MIGRATIONS` (a database written by
    newer code is refused) and removes what a crash left behind: temporary
    image files, and image files no scan references that are older than
    ``orphan_grace_s``. ``free_bytes`` reports the free space of the data
    volume in bytes (by default from ``shutil.disk_usage``); ``clock`` gives the
    time that ``retention.max_age_days`` counts from. Both are for tests.

    Raises FailedPrecondition when the database is newer than this code or a
    migration fails (the database is then left at its old version).
    """

    def __init__(
        self,
        data_dir: Path,
        *,
        retention: RetentionPolicy = RetentionPolicy(),
        free_bytes: Callable[[], int] | None = None,
        clock: Callable[[], datetime] = lambda: datetime.now(UTC),
        orphan_grace_s: float = ORPHAN_GRACE_S,
        migrations: Sequence[Migration] = MIGRATIONS,
    ) -> None:
        self._dir = data_dir
        self._path = data_dir / "scans.sqlite3"
        self._images = data_dir / "images"
        self._images.mkdir(parents=True, exist_ok=True)
        self._retention = retention
        self._free_bytes = free_bytes or (lambda: shutil.disk_usage(self._dir).free)
        self._clock = clock
        self._lock = threading.Lock()
        self._unclaimed: collections.Counter[str] = collections.Counter()
        """Images written by put_image that no saved scan references yet; pruning never deletes them."""
        self._prune_lock = threading.Lock()
        """Serialises pruning passes, so that two writers short of room never prune one scan too many."""
        self._age_pruned_at = -math.inf
        self.pruned = PruneReport()
        """Everything pruned since the store was opened."""
        self._db = sqlite3.connect(self._path, check_same_thread=False, isolation_level=None)
        try:
            self._db.execute("PRAGMA journal_mode=WAL")
            # In WAL mode FULL fsyncs the log at every commit, so a commit that returned survives a power cut.
            self._db.execute("PRAGMA synchronous=FULL")
            self._migrate(migrations)
        except BaseException:
            self._db.close()
            raise
        self._remove_leftovers(orphan_grace_s)

    @property
    def data_dir(self) -> Path:
        """The directory the store keeps its database and images in."""
        return self._dir

    @property
    def schema_version(self) -> int:
        """The schema version of the open database (``PRAGMA user_version``)."""
        with self._lock:
            return int(self._db.execute("PRAGMA user_version").fetchone()[0])

    def _migrate(self, migrations: Sequence[Migration]) -> None:
        if [m.version for m in migrations] != list(range(1, len(migrations) + 1)):
            raise ValueError("migration versions must be 1, 2, 3, ... in order")
        latest = len(migrations)
        current = int(self._db.execute("PRAGMA user_version").fetchone()[0])
        if current > latest:
            raise FailedPrecondition(
                f"the scan database {self._path} has schema version {current}, but this daemon knows versions up to "
                f"{latest}: it was written by a newer daemon. Run that daemon version or a newer one; the database "
                "was left as it is (it is never downgraded)"
            )
        for step in migrations[current:]:
            try:
                self._db.execute("BEGIN IMMEDIATE")
                step.apply(self._db)
                self._db.execute(f"PRAGMA user_version = {step.version:d}")
                self._db.execute("COMMIT")
            except Exception as exc:
                if self._db.in_transaction:
                    self._db.execute("ROLLBACK")
                raise FailedPrecondition(
                    f"could not migrate the scan database {self._path} from schema version {step.version - 1} to "
                    f"{step.version} ({step.description}): {exc}. It was left at version {step.version - 1}"
                ) from exc
            _log.info("scan database migrated to schema version %d: %s", step.version, step.description)

    def _remove_leftovers(self, orphan_grace_s: float) -> None:
        """Delete the temporary files of interrupted image writes, and old image files that no scan references."""
        with self._lock:
            referenced = {row[0] for row in self._db.execute("SELECT DISTINCT sha256 FROM scan_images")}
        cutoff = time.time() - orphan_grace_s
        temporary = orphans = 0
        for path in self._images.glob("*/*"):
            with contextlib.suppress(FileNotFoundError):
                if ".tmp" in path.name:
                    path.unlink()
                    temporary += 1
                elif path.stem not in referenced and path.stat().st_mtime < cutoff:
                    # Written by a scan that never saved it (the daemon stopped first), or left by a pruning
                    # pass that stopped between deleting the rows and deleting the files.
                    path.unlink()
                    orphans += 1
        if temporary or orphans:
            _log.warning(
                "removed %d temporary image files and %d image files no scan references, left by a crash",
                temporary,
                orphans,
            )

    def close(self) -> None:
        """Close the database."""
        with self._lock:
            self._db.close()

    # Images

    def put_image(self, data: bytes, fmt: ImageFormat) -> str:
        """Store an encoded image durably and return its SHA-256 (lowercase hex).

        When this returns the image is on disk under its final name and that
        name survives a power cut; an image already stored is not written again.
        The image is then protected from pruning until a saved scan references it.

        Raises ResourceExhausted when writing it would take the data volume below
        the free-disk floor and pruning cannot make room, or when the volume fills
        up during the write; no partial file is left behind either way.
        """
        digest = hashlib.sha256(data).hexdigest()
        path = self.image_path(digest, fmt)
        with self._lock:
            self._unclaimed[digest] += 1
            stored = path.exists()
        if stored:
            return digest
        try:
            self.ensure_room(len(data), "the image was not stored")
            self._write_image(path, data)
        except BaseException:
            with self._lock:
                self._claim([digest])
            raise
        return digest

    def _write_image(self, path: Path, data: bytes) -> None:
        """Write a file durably under its final name: temporary file, fsync, rename, fsync of the directory."""
        try:
            if not path.parent.is_dir():
                path.parent.mkdir(exist_ok=True)
                fsync_dir(self._images)
            write_atomic(path, data, unique=True)  # threads may store the same image at once
        except OSError as exc:
            if exc.errno in _FULL_ERRNOS:
                raise ResourceExhausted(_full_message(self._dir, "the image was not stored")) from None
            raise

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

    def save(self, scan: ScanRecord, *, existing: bool = False) -> None:
        """Insert or replace a scan record; the change survives a power cut once this returns.

        ``existing`` True only replaces a stored record, and raises NotFound when
        the scan is gone, so that a change to a finished scan (which retention may
        prune meanwhile) never brings it back without its images. Raises
        ResourceExhausted when the data volume is full; the stored record is then
        the one before, and the database stays consistent.
        """
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
        images = {image.sha256: image.format.value for image in scan.images}
        with self._lock:
            with self._transaction("the scan was not saved"):
                if existing and not self._db.execute("SELECT 1 FROM scans WHERE scan_id = ?", row[:1]).fetchone():
                    raise NotFound(f"scan {scan.scan_id!r} not found (the retention policy pruned it)")
                self._db.execute("INSERT OR REPLACE INTO scans VALUES (?, ?, ?, ?, ?, ?, ?)", row)
                before = {
                    r[0] for r in self._db.execute("SELECT sha256 FROM scan_images WHERE scan_id = ?", (scan.scan_id,))
                }
                if before != set(images):
                    self._db.execute("DELETE FROM scan_images WHERE scan_id = ?", (scan.scan_id,))
                    self._db.executemany(
                        "INSERT INTO scan_images VALUES (?, ?, ?)",
                        [(scan.scan_id, sha256, fmt) for sha256, fmt in images.items()],
                    )
            self._claim(set(images) - before)

    @contextlib.contextmanager
    def _transaction(self, refused: str) -> Iterator[None]:
        """One durable write transaction (the caller holds the lock); a full disk rolls it back.

        Raises ResourceExhausted, with ``refused`` in its message, when SQLite finds the volume full.
        """
        try:
            self._db.execute("BEGIN IMMEDIATE")
            yield
            self._db.execute("COMMIT")
        except BaseException as exc:
            if self._db.in_transaction:
                with contextlib.suppress(sqlite3.Error):
                    self._db.execute("ROLLBACK")
            # Errors raised by the sqlite3 module itself carry no SQLite code.
            code = getattr(exc, "sqlite_errorcode", None)
            if isinstance(exc, sqlite3.Error) and isinstance(code, int) and code & 0xFF == sqlite3.SQLITE_FULL:
                raise ResourceExhausted(_full_message(self._dir, refused)) from None
            raise

    def _claim(self, digests: Iterable[str]) -> None:
        """Note that these images are referenced by a saved scan (or were never stored); the lock is held."""
        for digest in digests:
            if self._unclaimed[digest] > 1:
                self._unclaimed[digest] -= 1
            else:
                self._unclaimed.pop(digest, None)

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
        if flt.label is not None:
            where.append(f"{_LABEL} = ?")
            args.append(flt.label.value)
        if flt.not_label is not None:
            where.append(f"({_LABEL} IS NULL OR {_LABEL} != ?)")
            args.append(flt.not_label.value)
        if flt.labelled is True:
            # IN, not IS NOT NULL, so that SQLite answers from the label index.
            labels = [label.value for label in ScanLabel]
            where.append(f"{_LABEL} IN ({', '.join('?' for _ in labels)})")
            args += labels
        elif flt.labelled is False:
            where.append(f"{_LABEL} IS NULL")
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

    # Retention

    def prune(self) -> PruneReport:
        """Apply the retention policy now, and return what it deleted.

        Deletes the finished scans older than ``max_age_days`` (when set), then
        the oldest finished scans while free space is below the floor. Labelled
        scans are kept unless ``prune_labelled``. Raises ResourceExhausted only
        when the volume is so full that even deleting rows fails.
        """
        with self._prune_lock:
            return self._prune_by_age() + self._prune_for_space(self._retention.min_free_mb * _MIB)

    def ensure_room(self, need_bytes: int, refused: str) -> None:
        """Make sure that writing ``need_bytes`` keeps the free-disk floor, pruning per the policy if needed.

        Also applies ``max_age_days`` when it was last applied more than an hour
        ago. Raises ResourceExhausted, its message beginning with ``refused``,
        when even pruning leaves too little room; nothing beyond the policy is
        deleted.
        """
        floor = self._retention.min_free_mb * _MIB
        with self._prune_lock:
            if time.monotonic() - self._age_pruned_at > _AGE_PRUNE_INTERVAL_S:
                self._prune_by_age()
            if self._free_bytes() - need_bytes >= floor:
                return
            self._prune_for_space(floor + need_bytes)
            free = self._free_bytes()
        if free - need_bytes >= floor:
            return
        kept = "scans in progress are" if self._retention.prune_labelled else "scans in progress and labelled scans are"
        raise ResourceExhausted(
            f"{refused}: the data volume ({self._dir}) has {free / _MIB:.0f} MiB free, below the floor of "
            f"{self._retention.min_free_mb} MiB ([retention] min_free_mb), and no scan is left that the retention "
            f"policy lets the daemon delete ({kept} kept). Free space on the volume, lower [retention] min_free_mb"
            + ("" if self._retention.prune_labelled else ", or set [retention] prune_labelled = true")
        )

    def _prune_by_age(self) -> PruneReport:
        """Delete the prunable scans created more than ``max_age_days`` ago; the prune lock is held."""
        self._age_pruned_at = time.monotonic()
        days = self._retention.max_age_days
        report = PruneReport()
        if days <= 0:
            return report
        cutoff = _ts(self._clock() - timedelta(days=days))
        after: tuple[str, str] | None = None
        while batch := self._candidates(cutoff, after, 64):
            after = (batch[-1][1], batch[-1][0])
            report += self._delete([scan_id for scan_id, _ in batch])
        if report.scans:
            _log.warning(
                "pruned %d scans created more than %d days ago ([retention] max_age_days) and %d image files (%.1f MiB)",
                report.scans,
                days,
                report.images,
                report.freed_bytes / _MIB,
            )
        return report

    def _prune_for_space(self, target_free_bytes: int) -> PruneReport:
        """Delete the oldest prunable scans one at a time until ``target_free_bytes`` are free; the prune lock is held."""
        report = PruneReport()
        after: tuple[str, str] | None = None
        while self._free_bytes() < target_free_bytes:
            batch = self._candidates(None, after, 16)
            if not batch:
                break
            for scan_id, create_time in batch:
                after = (create_time, scan_id)
                report += self._delete([scan_id])
                if self._free_bytes() >= target_free_bytes:
                    break
        if report.scans:
            _log.warning(
                "free space was below %d MiB ([retention] min_free_mb): pruned the %d oldest scans and %d image "
                "files (%.1f MiB); %.0f MiB are free now",
                self._retention.min_free_mb,
                report.scans,
                report.images,
                report.freed_bytes / _MIB,
                self._free_bytes() / _MIB,
            )
        return report

    def _candidates(self, before: str | None, after: tuple[str, str] | None, limit: int) -> Sequence[tuple[str, str]]:
        """(scan_id, create_time) of the oldest prunable scans, created before ``before`` and after ``after``."""
        where, args = _prunable(self._retention)
        if before is not None:
            where.append("create_time < ?")
            args.append(before)
        if after is not None:
            where.append("(create_time > ? OR (create_time = ? AND scan_id > ?))")
            args += [after[0], after[0], after[1]]
        sql = f"SELECT scan_id, create_time FROM scans WHERE {' AND '.join(where)}"
        with self._lock:
            rows = self._db.execute(f"{sql} ORDER BY create_time, scan_id LIMIT ?", [*args, limit]).fetchall()
        return [(str(r[0]), str(r[1])) for r in rows]

    def _delete(self, scan_ids: Sequence[str]) -> PruneReport:
        """Delete these scans, then the image files no other scan references; rows go first, so none dangles."""
        where, args = _prunable(self._retention)
        with self._lock:
            with self._transaction("pruning could not delete scans"):
                # Checked again inside the transaction: a scan labelled since it was chosen is kept.
                marks = ", ".join("?" for _ in scan_ids)
                rows = self._db.execute(
                    f"SELECT scan_id FROM scans WHERE scan_id IN ({marks}) AND {' AND '.join(where)}",
                    [*scan_ids, *args],
                ).fetchall()
                deleted = [str(r[0]) for r in rows]
                marks = ", ".join("?" for _ in deleted)
                images = self._db.execute(
                    f"SELECT DISTINCT sha256, format FROM scan_images WHERE scan_id IN ({marks})", deleted
                ).fetchall()
                self._db.execute(f"DELETE FROM scan_images WHERE scan_id IN ({marks})", deleted)
                self._db.execute(f"DELETE FROM scans WHERE scan_id IN ({marks})", deleted)
            files = freed = 0
            for sha256, fmt in images:
                shared = self._db.execute("SELECT 1 FROM scan_images WHERE sha256 = ? LIMIT 1", (sha256,)).fetchone()
                if shared is not None or sha256 in self._unclaimed:
                    continue
                path = self.image_path(sha256, ImageFormat(fmt))
                with contextlib.suppress(FileNotFoundError):
                    size = path.stat().st_size
                    path.unlink()
                    files += 1
                    freed += size
            report = PruneReport(len(deleted), files, freed)
            self.pruned += report
        if deleted:
            _log.info("pruned %s", ", ".join(f"scans/{scan_id}" for scan_id in deleted))
        return report


def _prunable(retention: RetentionPolicy) -> tuple[list[str], list[object]]:
    """SQL conditions, and their arguments, that select the scans ``retention`` lets pruning delete."""
    where = ["state != ?"]
    args: list[object] = [ScanState.IN_PROGRESS.value]
    if not retention.prune_labelled:
        where.append(f"{_LABEL} IS NULL")
    return where, args


def _full_message(data_dir: Path, refused: str) -> str:
    return (
        f"{refused}: the data volume ({data_dir}) is full. Everything stored before is intact; free space on the "
        "volume (or prune old scans with [retention]) and retry"
    )


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
