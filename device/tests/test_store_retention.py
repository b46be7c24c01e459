"""The retention policy of the scan store: age limit, free-disk floor, labelled scans and shared images."""

from __future__ import annotations

import hashlib
from collections.abc import Iterator
from datetime import UTC, datetime, timedelta
from pathlib import Path

import grpc
import pytest
from device_daemon import InProcessDaemon

from veriscope.device.codec import ImageFormat
from veriscope.device.config import load_config
from veriscope.device.errors import ConfigError, NotFound, ResourceExhausted
from veriscope.device.pipeline.quality import QualityReport
from veriscope.device.scans.records import ImageMeta, ImageOrigin, ImageRecord, ScanLabel, ScanRecord, ScanState
from veriscope.device.scans.store import RetentionPolicy, ScanStore
from veriscope.v1 import scan_service_pb2 as pb
from veriscope.v1 import scan_service_pb2_grpc

NOW = datetime(2026, 6, 1, 12, 0, tzinfo=UTC)
MIB = 1024 * 1024
IMAGE_BYTES = MIB // 4


class Volume:
    """A data volume of ``capacity_mb`` MiB on which only the image files take space."""

    def __init__(self, root: Path, capacity_mb: float) -> None:
        self.root = root
        self.capacity_bytes = int(capacity_mb * MIB)

    def free_bytes(self) -> int:
        used = sum(p.stat().st_size for p in (self.root / "images").rglob("*") if p.is_file())
        return self.capacity_bytes - used


def _image_bytes(n: int) -> bytes:
    return n.to_bytes(4, "big") * (IMAGE_BYTES // 4)


def _record(digest: str, image_id: str = "001") -> ImageRecord:
    return ImageRecord(
        image_id,
        "canvas",
        ImageOrigin.UPLOAD,
        digest,
        IMAGE_BYTES,
        ImageFormat.PNG,
        QualityReport((), {}),
        ImageMeta(10, 10, NOW),
    )


def _scan(
    store: ScanStore,
    i: int,
    *,
    age_days: float,
    images: tuple[int, ...] = (),
    state: ScanState = ScanState.COMPLETED,
    label: ScanLabel | None = None,
) -> ScanRecord:
    """Save scan ``s{i}``, created ``age_days`` before NOW, holding the images numbered ``images``."""
    when = NOW - timedelta(days=age_days)
    records = tuple(
        _record(store.put_image(_image_bytes(n), ImageFormat.PNG), f"{k + 1:03d}") for k, n in enumerate(images)
    )
    scan = ScanRecord(
        scan_id=f"s{i:04d}",
        item_type="tote-classic",
        partner_item_id="",
        state=state,
        create_time=when,
        update_time=when,
        images=records,
        label=label,
        label_time=when if label else None,
    )
    store.save(scan)
    return scan


def _ids(store: ScanStore) -> set[str]:
    return {row[0] for row in store._db.execute("SELECT scan_id FROM scans")}


def _stored(store: ScanStore, n: int) -> bool:
    try:
        return store.read_image(hashlib.sha256(_image_bytes(n)).hexdigest(), ImageFormat.PNG) == _image_bytes(n)
    except NotFound:
        return False


@pytest.fixture
def volume(tmp_path: Path) -> Volume:
    return Volume(tmp_path, capacity_mb=100)


def _store(tmp_path: Path, volume: Volume, **policy: object) -> ScanStore:
    return ScanStore(
        tmp_path,
        retention=RetentionPolicy(**policy),  # type: ignore[arg-type]
        free_bytes=volume.free_bytes,
        clock=lambda: NOW,
    )


def test_max_age_prunes_old_finished_unlabelled_scans_and_their_unshared_images(tmp_path: Path, volume: Volume) -> None:
    store = _store(tmp_path, volume, max_age_days=30, min_free_mb=0)
    _scan(store, 1, age_days=90, images=(1, 2))
    _scan(store, 2, age_days=60, images=(2, 3), state=ScanState.CANCELLED)
    _scan(store, 3, age_days=45, images=(4,), label=ScanLabel.COUNTERFEIT)
    _scan(store, 4, age_days=40, images=(5,), state=ScanState.IN_PROGRESS)
    _scan(store, 5, age_days=10, images=(3,))
    report = store.prune()
    assert (report.scans, report.images, report.freed_bytes) == (2, 2, 2 * IMAGE_BYTES)
    assert _ids(store) == {"s0003", "s0004", "s0005"}, "labelled, in progress and recent scans stay"
    assert [_stored(store, n) for n in (1, 2, 3, 4, 5)] == [False, False, True, True, True], (
        "image 3 is shared with a kept scan"
    )
    assert store.pruned == report
    assert store.prune().scans == 0


def test_keep_forever_prunes_nothing_by_age(tmp_path: Path, volume: Volume) -> None:
    store = _store(tmp_path, volume, max_age_days=0, min_free_mb=1)
    _scan(store, 1, age_days=3650, images=(1,))
    assert store.prune().scans == 0
    assert _ids(store) == {"s0001"}


def test_prune_labelled_lets_the_policy_delete_labelled_scans(tmp_path: Path, volume: Volume) -> None:
    store = _store(tmp_path, volume, max_age_days=30, min_free_mb=0, prune_labelled=True)
    _scan(store, 1, age_days=90, images=(1,), label=ScanLabel.GENUINE)
    assert store.prune().scans == 1
    assert _ids(store) == set() and not _stored(store, 1)


def test_below_the_floor_the_oldest_scans_go_only_as_far_as_needed(tmp_path: Path, volume: Volume) -> None:
    store = _store(tmp_path, volume, min_free_mb=0)
    for i in range(8):  # 4 MiB of images, 0.5 MiB a scan, oldest first
        _scan(store, i, age_days=100 - i, images=(2 * i, 2 * i + 1))
    store.close()
    volume.capacity_bytes = int(4.6 * MIB)  # 0.6 MiB free
    store = _store(tmp_path, volume, min_free_mb=1)
    report = store.prune()
    assert volume.free_bytes() >= MIB
    assert report.scans == 1 and report.images == 2, "one scan of 0.5 MiB lifts 0.6 MiB free above 1 MiB"
    assert _ids(store) == {f"s{i:04d}" for i in range(1, 8)}
    assert not _stored(store, 0) and not _stored(store, 1) and _stored(store, 2)


def test_a_new_image_below_the_floor_makes_room_first(tmp_path: Path, volume: Volume) -> None:
    store = _store(tmp_path, volume, min_free_mb=1)
    for i in range(4):
        _scan(store, i, age_days=10 - i, images=(i,))
    volume.capacity_bytes = int(2.1 * MIB)  # 1 MiB used, 1.1 MiB free
    store.put_image(_image_bytes(99), ImageFormat.PNG)  # would leave 0.85 MiB: the oldest scan goes
    assert _ids(store) == {"s0001", "s0002", "s0003"}
    assert _stored(store, 99) and volume.free_bytes() >= MIB


def test_the_floor_refuses_new_writes_when_nothing_may_be_pruned(tmp_path: Path, volume: Volume) -> None:
    store = _store(tmp_path, volume, min_free_mb=2)
    _scan(store, 1, age_days=300, images=(1,), label=ScanLabel.GENUINE)
    _scan(store, 2, age_days=200, images=(2,), state=ScanState.IN_PROGRESS)
    volume.capacity_bytes = int(2.5 * MIB)  # 2 MiB free: at the floor
    store.ensure_room(0, "the scan was not created")
    with pytest.raises(ResourceExhausted) as info:
        store.put_image(_image_bytes(3), ImageFormat.PNG)
    message = str(info.value)
    assert message.startswith("the image was not stored")
    assert "2 MiB free" in message and "floor of 2 MiB" in message and "[retention] min_free_mb" in message
    assert "prune_labelled = true" in message and "Free space" in message
    assert not _stored(store, 3)
    assert list((tmp_path / "images").rglob("*.tmp*")) == []
    assert _ids(store) == {"s0001", "s0002"} and _stored(store, 1) and _stored(store, 2), "nothing was deleted"

    volume.capacity_bytes += MIB  # space freed
    store.put_image(_image_bytes(3), ImageFormat.PNG)
    assert _stored(store, 3)


def test_an_image_written_for_a_scan_not_yet_saved_is_never_pruned(tmp_path: Path, volume: Volume) -> None:
    store = _store(tmp_path, volume, max_age_days=30, min_free_mb=0)
    old = _scan(store, 1, age_days=90, images=(1,))
    # A new scan uploads the same image: it is stored already, and the new scan's row is not saved yet.
    digest = store.put_image(_image_bytes(1), ImageFormat.PNG)
    assert digest == old.images[0].sha256
    assert store.prune().scans == 1
    assert _stored(store, 1), "written for a scan still being saved"
    _scan(store, 2, age_days=0, images=(1,))
    assert _stored(store, 1)


def test_age_is_applied_again_before_new_writes_at_most_hourly(
    tmp_path: Path, volume: Volume, monkeypatch: pytest.MonkeyPatch
) -> None:
    clock = [100_000.0]
    monkeypatch.setattr("veriscope.device.scans.store.time.monotonic", lambda: clock[0])
    store = _store(tmp_path, volume, max_age_days=30, min_free_mb=0)
    store.prune()
    _scan(store, 1, age_days=31, images=(1,))
    store.ensure_room(0, "refused")
    assert _ids(store) == {"s0001"}, "applied less than an hour ago"
    clock[0] += 3601
    store.ensure_room(0, "refused")
    assert _ids(store) == set()


# Configuration


def test_retention_settings_load_from_file_and_environment(tmp_path: Path) -> None:
    assert load_config(environ={}).retention.min_free_mb == 256
    assert load_config(environ={}).retention.max_age_days == 0
    path = tmp_path / "device.toml"
    path.write_text("[retention]\nmax_age_days = 365\nmin_free_mb = 512\n")
    config = load_config(path, environ={"VERISCOPE_RETENTION__PRUNE_LABELLED": "true"})
    assert (config.retention.max_age_days, config.retention.min_free_mb) == (365, 512)
    assert config.retention.prune_labelled is True


@pytest.mark.parametrize(
    ("text", "key"),
    [
        ("[retention]\nmax_age_days = -1\n", "retention.max_age_days"),
        ("[retention]\nmin_free_mb = -5\n", "retention.min_free_mb"),
        ("[retention]\nmin_free_mb = '1G'\n", "retention.min_free_mb"),
        ("[retention]\nprune_labelled = 1\n", "retention.prune_labelled"),
        ("[retention]\nmax_free_mb = 1\n", "retention.max_free_mb"),
    ],
)
def test_bad_retention_settings_name_the_key(tmp_path: Path, text: str, key: str) -> None:
    path = tmp_path / "device.toml"
    path.write_text(text)
    with pytest.raises(ConfigError) as info:
        load_config(path, environ={})
    assert info.value.key == key


# The daemon


@pytest.fixture
def old_data(tmp_path: Path) -> Iterator[Path]:
    """A data directory holding one scan from two years ago and one from yesterday."""
    data_dir = tmp_path / "data"
    data_dir.mkdir()
    store = ScanStore(data_dir, retention=RetentionPolicy(min_free_mb=0))
    real_now = datetime.now(UTC)
    for i, age_days in ((1, 730), (2, 1)):
        when = real_now - timedelta(days=age_days)
        store.save(ScanRecord(f"s{i:04d}", "tote-classic", "", ScanState.COMPLETED, when, when))
    store.close()
    yield data_dir


def test_the_daemon_prunes_at_start(old_data: Path) -> None:
    srv = InProcessDaemon(old_data, retention={"max_age_days": 365})
    try:
        stub = scan_service_pb2_grpc.ScanServiceStub(srv.channel)
        with pytest.raises(grpc.RpcError) as info:
            stub.GetScan(pb.GetScanRequest(name="scans/s0001"))
        assert info.value.code() == grpc.StatusCode.NOT_FOUND
        assert stub.GetScan(pb.GetScanRequest(name="scans/s0002")).scan.name == "scans/s0002"
        assert srv.daemon.store.pruned.scans == 1
    finally:
        srv.close()


def test_a_change_to_a_pruned_scan_does_not_bring_it_back(tmp_path: Path, volume: Volume) -> None:
    store = _store(tmp_path, volume, max_age_days=30, min_free_mb=0)
    old = _scan(store, 1, age_days=90, images=(1,))
    assert store.prune().scans == 1
    with pytest.raises(NotFound, match="pruned"):
        store.save(old.evolve(label=ScanLabel.GENUINE), existing=True)
    assert _ids(store) == set()
    _scan(store, 2, age_days=1)
    store.save(store.get("s0002").evolve(label=ScanLabel.GENUINE), existing=True)
    assert store.get("s0002").label is ScanLabel.GENUINE


def test_a_scan_labelled_after_it_was_chosen_for_pruning_is_kept(tmp_path: Path, volume: Volume) -> None:
    store = _store(tmp_path, volume, max_age_days=30, min_free_mb=0)
    scan = _scan(store, 1, age_days=90, images=(1,))
    chosen = [scan_id for scan_id, _ in store._candidates(None, None, 10)]
    assert chosen == ["s0001"]
    store.save(scan.evolve(label=ScanLabel.COUNTERFEIT), existing=True)
    assert store._delete(chosen).scans == 0
    assert _ids(store) == {"s0001"} and _stored(store, 1)
