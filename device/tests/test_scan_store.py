import hashlib
import json
import os
import signal
import sqlite3
import subprocess
import sys
import time
from datetime import UTC, datetime, timedelta
from pathlib import Path

import pytest

from veriscope.device._serde import to_jsonable
from veriscope.device.codec import ImageFormat
from veriscope.device.errors import FailedPrecondition, InvalidArgument, NotFound
from veriscope.device.pipeline.quality import QualityIssue, QualityReport
from veriscope.device.scans.filter import parse_filter
from veriscope.device.scans.records import (
    ImageMeta,
    ImageOrigin,
    ImageRecord,
    ScanOutcome,
    ScanRecord,
    ScanState,
)
from veriscope.device.scans.store import MIGRATIONS, ORPHAN_GRACE_S, Migration, ScanFilter, ScanStore

T0 = datetime(2026, 11, 1, 12, 0, tzinfo=UTC)


def _scan(i: int, *, state: ScanState = ScanState.COMPLETED, verdict: str | None = "AUTHENTIC") -> ScanRecord:
    when = T0 + timedelta(minutes=i)
    outcome = None
    if verdict is not None:
        outcome = ScanOutcome(verdict, None, 0.9, 0.5, "ok", "m", "1.0.0", "ab" * 32, when, ())
    return ScanRecord(
        scan_id=f"s{i:04d}",
        item_type="tote-classic" if i % 2 else "wallet-compact",
        partner_item_id=f"p{i}",
        state=state,
        create_time=when,
        update_time=when,
        outcome=outcome,
    )


def test_round_trip_with_images(tmp_path: Path) -> None:
    store = ScanStore(tmp_path)
    digest = store.put_image(b"\x89PNG fake", ImageFormat.PNG)
    image = ImageRecord(
        "001",
        "canvas",
        ImageOrigin.UPLOAD,
        digest,
        9,
        ImageFormat.PNG,
        QualityReport((QualityIssue("glare", "tilt", 0.1, 0.01),), {"mean_level": 0.4}),
        ImageMeta(10, 10, T0),
    )
    scan = _scan(1).evolve(images=(image,))
    store.save(scan)
    store.close()
    reopened = ScanStore(tmp_path)
    assert reopened.get("s0001") == scan
    assert reopened.read_image(digest, ImageFormat.PNG) == b"\x89PNG fake"
    with pytest.raises(NotFound):
        reopened.get("nope")
    with pytest.raises(InvalidArgument):
        reopened.read_image("../../etc/passwd", ImageFormat.PNG)


def test_paging_is_newest_first_and_complete(tmp_path: Path) -> None:
    store = ScanStore(tmp_path)
    for i in range(23):
        store.save(_scan(i))
    seen: list[str] = []
    token = ""
    while True:
        page, token = store.list(ScanFilter(), page_size=5, page_token=token)
        seen += [s.scan_id for s in page]
        if not token:
            break
    assert seen == [f"s{i:04d}" for i in reversed(range(23))]


def test_filters(tmp_path: Path) -> None:
    store = ScanStore(tmp_path)
    for i in range(10):
        store.save(_scan(i, verdict="AUTHENTIC" if i < 4 else "UNVERIFIED"))
    store.save(_scan(10, state=ScanState.IN_PROGRESS, verdict=None))

    def ids(text: str) -> list[str]:
        return [s.scan_id for s in store.list(parse_filter(text), page_size=100, page_token="")[0]]

    assert ids("verdict = AUTHENTIC") == ["s0003", "s0002", "s0001", "s0000"]
    assert "s0010" in ids("verdict != AUTHENTIC")
    assert ids("state = IN_PROGRESS") == ["s0010"]
    assert ids("item_type = tote-classic AND verdict = UNVERIFIED") == ["s0009", "s0007", "s0005"]
    assert ids('create_time >= "2026-11-01T12:08:00Z"') == ["s0010", "s0009", "s0008"]
    assert ids('create_time > "2026-11-01T12:08:00Z"') == ["s0010", "s0009"]
    assert ids("partner_item_id = p3") == ["s0003"]


def test_bad_page_token(tmp_path: Path) -> None:
    with pytest.raises(InvalidArgument, match="page_token"):
        ScanStore(tmp_path).list(ScanFilter(), page_size=5, page_token="garbage!")


def test_restart_marks_in_progress_scans_interrupted(tmp_path: Path) -> None:
    store = ScanStore(tmp_path)
    store.save(_scan(1, state=ScanState.IN_PROGRESS, verdict=None))
    store.save(_scan(2))
    assert store.mark_interrupted() == 1
    assert store.get("s0001").state is ScanState.INTERRUPTED
    assert store.get("s0002").state is ScanState.COMPLETED


# Schema migrations

_V0_SCHEMA = """
CREATE TABLE scans (
    scan_id TEXT PRIMARY KEY,
    create_time TEXT NOT NULL,
    state TEXT NOT NULL,
    verdict TEXT,
    item_type TEXT NOT NULL,
    partner_item_id TEXT NOT NULL,
    record TEXT NOT NULL
);
CREATE INDEX scans_by_time ON scans (create_time DESC, scan_id DESC);
"""


def _image(digest: str, image_id: str = "001") -> ImageRecord:
    return ImageRecord(
        image_id,
        "canvas",
        ImageOrigin.UPLOAD,
        digest,
        9,
        ImageFormat.PNG,
        QualityReport((), {}),
        ImageMeta(10, 10, T0),
    )


def _old_database(path: Path, scans: list[ScanRecord], user_version: int = 0) -> None:
    """A database as the first daemons wrote it: no schema version, no image references."""
    db = sqlite3.connect(path / "scans.sqlite3")
    db.executescript(_V0_SCHEMA)
    for scan in scans:
        db.execute(
            "INSERT INTO scans VALUES (?, ?, ?, ?, ?, ?, ?)",
            (
                scan.scan_id,
                scan.create_time.astimezone(UTC).isoformat(timespec="microseconds"),
                scan.state.value,
                scan.outcome.verdict if scan.outcome else None,
                scan.item_type,
                scan.partner_item_id,
                json.dumps(to_jsonable(scan)),
            ),
        )
    db.execute(f"PRAGMA user_version = {user_version}")
    db.commit()
    db.close()


def _user_version(path: Path) -> int:
    db = sqlite3.connect(path / "scans.sqlite3")
    try:
        return int(db.execute("PRAGMA user_version").fetchone()[0])
    finally:
        db.close()


def test_new_database_is_durable_wal_at_the_latest_version(tmp_path: Path) -> None:
    store = ScanStore(tmp_path)
    assert store.schema_version == len(MIGRATIONS) == MIGRATIONS[-1].version
    assert store._db.execute("PRAGMA journal_mode").fetchone()[0] == "wal"
    assert store._db.execute("PRAGMA synchronous").fetchone()[0] == 2  # FULL: the WAL is fsynced at every commit
    store.close()
    assert ScanStore(tmp_path).schema_version == len(MIGRATIONS), "reopening runs no step again"


def test_unversioned_database_is_migrated_with_its_data_intact(tmp_path: Path) -> None:
    images_dir = tmp_path / "images"
    images_dir.mkdir()
    old = [_scan(1).evolve(images=(_image("a" * 64),)), _scan(2, state=ScanState.IN_PROGRESS, verdict=None)]
    _old_database(tmp_path, old)
    store = ScanStore(tmp_path)
    assert store.schema_version == len(MIGRATIONS)
    assert [store.get(s.scan_id) for s in old] == old
    assert [s.scan_id for s in store.list(ScanFilter(), page_size=10, page_token="")[0]] == ["s0002", "s0001"]
    assert store._db.execute("SELECT scan_id, sha256, format FROM scan_images").fetchall() == [
        ("s0001", "a" * 64, "png")
    ]
    indexes = {row[1] for row in store._db.execute("PRAGMA index_list(scans)")}
    assert {"scans_by_time", "scans_by_label"} <= indexes
    assert store.mark_interrupted() == 1


def test_database_of_a_newer_daemon_is_refused_untouched(tmp_path: Path) -> None:
    future = len(MIGRATIONS) + 1
    _old_database(tmp_path, [_scan(1)], user_version=future)
    with pytest.raises(FailedPrecondition) as info:
        ScanStore(tmp_path)
    message = str(info.value)
    assert f"schema version {future}" in message and f"up to {len(MIGRATIONS)}" in message
    assert "newer daemon" in message
    assert _user_version(tmp_path) == future


def _failing_step(version: int) -> Migration:
    def apply(db: sqlite3.Connection) -> None:
        db.execute("CREATE TABLE half_done (x)")
        db.execute("DELETE FROM scans")
        raise RuntimeError("the step broke halfway")

    return Migration(version, "a step that breaks", apply)


def test_a_failed_migration_leaves_the_database_at_the_version_before(tmp_path: Path) -> None:
    _old_database(tmp_path, [_scan(1)])
    with pytest.raises(FailedPrecondition, match=r"from schema version 1 to 2 .*the step broke halfway"):
        ScanStore(tmp_path, migrations=(MIGRATIONS[0], _failing_step(2)))
    assert _user_version(tmp_path) == 1, "step 1 committed, step 2 rolled back"
    db = sqlite3.connect(tmp_path / "scans.sqlite3")
    assert db.execute("SELECT name FROM sqlite_master WHERE name = 'half_done'").fetchall() == []
    assert db.execute("SELECT count(*) FROM scans").fetchone()[0] == 1
    db.close()

    latest = len(MIGRATIONS)
    ScanStore(tmp_path).close()
    with pytest.raises(FailedPrecondition, match=f"version {latest} to {latest + 1}"):
        ScanStore(tmp_path, migrations=(*MIGRATIONS, _failing_step(latest + 1)))
    store = ScanStore(tmp_path)
    assert store.schema_version == latest
    assert store.get("s0001") == _scan(1)


# Durability

_SAVE_THEN_HANG = """
import json, sys, time
from pathlib import Path
from veriscope.device._serde import from_jsonable
from veriscope.device.codec import ImageFormat
from veriscope.device.scans.records import ScanRecord
from veriscope.device.scans.store import ScanStore

store = ScanStore(Path(sys.argv[1]))
store.put_image(b"image bytes", ImageFormat.PNG)
store.save(from_jsonable(ScanRecord, json.loads(sys.stdin.read())))
print("saved", flush=True)
time.sleep(60)
"""


def test_a_completed_scan_survives_sigkill_right_after_save(tmp_path: Path) -> None:
    digest = hashlib.sha256(b"image bytes").hexdigest()
    scan = _scan(1).evolve(images=(_image(digest),))
    assert scan.state is ScanState.COMPLETED
    child = subprocess.Popen(
        [sys.executable, "-c", _SAVE_THEN_HANG, str(tmp_path)],
        stdin=subprocess.PIPE,
        stdout=subprocess.PIPE,
        text=True,
    )
    assert child.stdin is not None and child.stdout is not None
    child.stdin.write(json.dumps(to_jsonable(scan)))
    child.stdin.close()
    assert child.stdout.readline().strip() == "saved"
    child.send_signal(signal.SIGKILL)
    child.wait(30)
    assert child.returncode == -signal.SIGKILL
    assert (tmp_path / "scans.sqlite3-wal").stat().st_size > 0, "the commit sits in the WAL, never checkpointed"
    store = ScanStore(tmp_path)
    assert store.get("s0001") == scan
    assert store.read_image(digest, ImageFormat.PNG) == b"image bytes"
    assert store._db.execute("PRAGMA integrity_check").fetchone()[0] == "ok"


def test_an_image_is_fsynced_with_its_directory_before_put_returns(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    store = ScanStore(tmp_path)
    synced: list[int] = []
    real_fsync = os.fsync

    def fsync(fd: int) -> None:
        synced.append(os.fstat(fd).st_ino)
        real_fsync(fd)

    monkeypatch.setattr(os, "fsync", fsync)
    digest = store.put_image(b"new image", ImageFormat.PNG)
    path = store.image_path(digest, ImageFormat.PNG)
    # The file, the new fan-out directory's entry in images/, and the file's entry in the fan-out directory.
    assert {path.stat().st_ino, path.parent.stat().st_ino, (tmp_path / "images").stat().st_ino} <= set(synced)
    synced.clear()
    assert store.put_image(b"new image", ImageFormat.PNG) == digest
    assert synced == [], "an image already stored is not written again"


def test_opening_removes_temporary_files_and_old_unreferenced_images(tmp_path: Path) -> None:
    store = ScanStore(tmp_path)
    kept = store.put_image(b"referenced", ImageFormat.PNG)
    store.save(_scan(1).evolve(images=(_image(kept),)))
    orphan = store.put_image(b"never saved", ImageFormat.PNG)
    recent = store.put_image(b"written a moment ago", ImageFormat.JPEG)
    store.close()
    old = time.time() - 2 * ORPHAN_GRACE_S
    for digest, fmt in ((kept, ImageFormat.PNG), (orphan, ImageFormat.PNG)):
        os.utime(store.image_path(digest, fmt), (old, old))
    tmp = store.image_path(kept, ImageFormat.PNG).with_name(f"{kept}.png.tmp123.456")
    tmp.write_bytes(b"half an ima")

    reopened = ScanStore(tmp_path)
    assert not tmp.exists()
    assert reopened.read_image(kept, ImageFormat.PNG) == b"referenced"
    assert reopened.read_image(recent, ImageFormat.JPEG) == b"written a moment ago", "within the grace period"
    with pytest.raises(NotFound):
        reopened.read_image(orphan, ImageFormat.PNG)
