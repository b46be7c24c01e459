from datetime import UTC, datetime, timedelta
from pathlib import Path

import pytest

from veriscope.device.codec import ImageFormat
from veriscope.device.errors import InvalidArgument, NotFound
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
from veriscope.device.scans.store import ScanFilter, ScanStore

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
