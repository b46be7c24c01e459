"""A full data volume at every write point of the scan store: the write fails, nothing earlier is lost."""

from __future__ import annotations

import collections
import errno
import hashlib
import os
import shutil
import stat
from collections.abc import Iterator
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

import grpc
import numpy as np
import pytest
from device_daemon import InProcessDaemon

from veriscope.device import codec
from veriscope.device.codec import ImageFormat
from veriscope.device.errors import ResourceExhausted
from veriscope.device.pipeline.quality import QualityReport
from veriscope.device.scans.records import ImageMeta, ImageOrigin, ImageRecord, ScanRecord, ScanState
from veriscope.device.scans.store import RetentionPolicy, ScanStore
from veriscope.v1 import device_service_pb2, device_service_pb2_grpc, scan_service_pb2_grpc
from veriscope.v1 import scan_service_pb2 as pb

T0 = datetime(2026, 6, 1, 12, 0, tzinfo=UTC)
WRITE_POINTS = ["mkdir", "open", "write", "fsync", "replace", "fsync-dir"]


def _enospc() -> OSError:
    return OSError(errno.ENOSPC, os.strerror(errno.ENOSPC))


def fill_volume(monkeypatch: pytest.MonkeyPatch, images: Path, point: str) -> None:
    """Make one step of writing an image under ``images`` fail with ENOSPC, as a full volume does.

    "write" first writes part of the file, so that a partial temporary file exists when the error comes.
    """
    real_open, real_write, real_fsync = os.open, os.write, os.fsync
    real_replace, real_mkdir = os.replace, os.mkdir
    ours: set[int] = set()

    def under_images(path: Any) -> bool:
        return str(path).startswith(str(images))

    def fake_open(path: Any, flags: int, mode: int = 0o777, *, dir_fd: int | None = None) -> int:
        if point == "open" and under_images(path) and ".tmp" in str(path):
            raise _enospc()
        fd = real_open(path, flags, mode, dir_fd=dir_fd)
        if under_images(path):
            ours.add(fd)
        return fd

    def fake_write(fd: int, data: Any) -> int:
        if point == "write" and fd in ours:
            if os.fstat(fd).st_size == 0:
                return real_write(fd, bytes(data)[: max(1, len(data) // 2)])
            raise _enospc()
        return real_write(fd, data)

    def fake_fsync(fd: Any) -> None:
        if fd in ours:
            is_dir = stat.S_ISDIR(os.fstat(fd).st_mode)
            if (point == "fsync" and not is_dir) or (point == "fsync-dir" and is_dir):
                raise _enospc()
        real_fsync(fd)

    def fake_replace(src: Any, dst: Any, **kwargs: Any) -> None:
        if point == "replace" and under_images(src):
            raise _enospc()
        real_replace(src, dst, **kwargs)

    def fake_mkdir(path: Any, mode: int = 0o777, **kwargs: Any) -> None:
        if point == "mkdir" and under_images(path):
            raise _enospc()
        real_mkdir(path, mode, **kwargs)

    monkeypatch.setattr(os, "open", fake_open)
    monkeypatch.setattr(os, "write", fake_write)
    monkeypatch.setattr(os, "fsync", fake_fsync)
    monkeypatch.setattr(os, "replace", fake_replace)
    monkeypatch.setattr(os, "mkdir", fake_mkdir)


def _record(digest: str, image_id: str = "001") -> ImageRecord:
    return ImageRecord(
        image_id, "canvas", ImageOrigin.UPLOAD, digest, 8, ImageFormat.PNG, QualityReport((), {}), ImageMeta(8, 8, T0)
    )


def _scan(scan_id: str, *images: str, state: ScanState = ScanState.COMPLETED) -> ScanRecord:
    return ScanRecord(
        scan_id,
        "tote-classic",
        "",
        state,
        T0,
        T0,
        images=tuple(_record(d, f"{k + 1:03d}") for k, d in enumerate(images)),
    )


def _assert_intact(store: ScanStore, earlier: ScanRecord, earlier_bytes: bytes) -> None:
    assert store.get(earlier.scan_id) == earlier
    assert store.read_image(earlier.images[0].sha256, ImageFormat.PNG) == earlier_bytes
    assert store._db.execute("PRAGMA integrity_check").fetchone()[0] == "ok"
    assert list((store.image_path(earlier.images[0].sha256, ImageFormat.PNG).parents[1]).rglob("*.tmp*")) == []


def _new_fan_out(store: ScanStore, taken: str) -> bytes:
    """Image bytes whose digest lands in a fan-out directory other than ``taken``'s."""
    n = 0
    while hashlib.sha256(data := f"new image {n}".encode()).hexdigest()[:2] == taken[:2]:
        n += 1
    return data


@pytest.fixture
def store(tmp_path: Path) -> Iterator[ScanStore]:
    store = ScanStore(tmp_path, retention=RetentionPolicy(min_free_mb=0))
    yield store
    store.close()


@pytest.mark.parametrize("point", WRITE_POINTS)
def test_a_full_volume_at_any_image_write_fails_that_write_only(
    store: ScanStore, tmp_path: Path, monkeypatch: pytest.MonkeyPatch, point: str
) -> None:
    earlier = _scan("s0001", store.put_image(b"earlier", ImageFormat.PNG))
    store.save(earlier)
    data = _new_fan_out(store, earlier.images[0].sha256)
    digest = hashlib.sha256(data).hexdigest()
    with monkeypatch.context() as m:
        fill_volume(m, tmp_path / "images", point)
        with pytest.raises(ResourceExhausted) as info:
            store.put_image(data, ImageFormat.PNG)
    assert str(info.value).startswith("the image was not stored: the data volume")
    assert "is full" in str(info.value) and "intact" in str(info.value)
    if point != "fsync-dir":  # there the file was complete and renamed; only its directory entry's fsync failed
        assert not store.image_path(digest, ImageFormat.PNG).exists()
    _assert_intact(store, earlier, b"earlier")

    # Space freed: the same write succeeds, and a later scan is stored.
    assert store.put_image(data, ImageFormat.PNG) == digest
    later = _scan("s0002", digest)
    store.save(later)
    store.close()
    reopened = ScanStore(tmp_path)
    assert reopened.get("s0002") == later
    assert reopened.read_image(digest, ImageFormat.PNG) == data
    _assert_intact(reopened, earlier, b"earlier")
    reopened.close()


def test_a_full_database_fails_the_save_and_keeps_the_record_before(store: ScanStore) -> None:
    earlier = _scan("s0001", store.put_image(b"earlier", ImageFormat.PNG))
    store.save(earlier)
    open_scan = _scan("s0002", state=ScanState.IN_PROGRESS)
    store.save(open_scan)
    grown = open_scan.evolve(
        images=tuple(_record(store.put_image(f"image {k}".encode(), ImageFormat.PNG), f"{k:03d}") for k in range(40)),
        extra={"notes": "x" * 50_000},
    )
    pages = store._db.execute("PRAGMA page_count").fetchone()[0]
    store._db.execute(f"PRAGMA max_page_count = {pages}")  # SQLite now finds the volume full
    with pytest.raises(ResourceExhausted, match=r"the scan was not saved: the data volume .* is full"):
        store.save(grown)
    with pytest.raises(ResourceExhausted):
        store.save(_scan("s0003", state=ScanState.IN_PROGRESS).evolve(extra={"notes": "y" * 50_000}))
    assert store.get("s0002") == open_scan
    assert store._db.execute("SELECT count(*) FROM scan_images WHERE scan_id = 's0002'").fetchone()[0] == 0
    assert store._db.execute("SELECT count(*) FROM scans").fetchone()[0] == 2
    _assert_intact(store, earlier, b"earlier")

    store._db.execute("PRAGMA max_page_count = 1073741823")  # space freed
    store.save(grown)
    assert store.get("s0002") == grown
    assert store._db.execute("SELECT count(*) FROM scan_images WHERE scan_id = 's0002'").fetchone()[0] == 40


# Through gRPC


def _upload(stub: scan_service_pb2_grpc.ScanServiceStub, name: str, data: bytes) -> pb.UploadImageResponse:
    header = pb.UploadImageHeader(name=name, region="canvas", size_bytes=len(data))
    return stub.UploadImage(iter([pb.UploadImageRequest(header=header), pb.UploadImageRequest(chunk=data)]))


def _png(seed: int) -> bytes:
    return codec.encode(np.random.default_rng(seed).integers(0, 255, (240, 320, 3), dtype=np.uint8), ImageFormat.PNG)


def test_a_full_volume_gives_the_client_resource_exhausted_and_the_daemon_keeps_serving(
    daemon: InProcessDaemon, monkeypatch: pytest.MonkeyPatch
) -> None:
    stub = scan_service_pb2_grpc.ScanServiceStub(daemon.channel)
    scan = stub.CreateScan(pb.CreateScanRequest(scan=pb.Scan(item_type="tote-classic"))).scan
    first = _upload(stub, scan.name, _png(1))
    images = Path(daemon.daemon.context.data_dir) / "images"
    with monkeypatch.context() as m:
        fill_volume(m, images, "write")
        with pytest.raises(grpc.RpcError) as info:
            _upload(stub, scan.name, _png(2))
    assert info.value.code() == grpc.StatusCode.RESOURCE_EXHAUSTED
    assert "the image was not stored" in (info.value.details() or "")
    after = stub.GetScan(pb.GetScanRequest(name=scan.name)).scan
    assert after.state == pb.SCAN_STATE_IN_PROGRESS and [i.sha256 for i in after.images] == [first.image.sha256]
    assert list(images.rglob("*.tmp*")) == []

    second = _upload(stub, scan.name, _png(2))  # space freed
    assert len(second.scan.images) == 2
    stub.CancelScan(pb.CancelScanRequest(name=scan.name))


Usage = collections.namedtuple("Usage", "total used free")


def test_below_the_floor_create_scan_is_refused_after_pruning(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    srv = InProcessDaemon(tmp_path / "data", retention={"min_free_mb": 64})
    try:
        stub = scan_service_pb2_grpc.ScanServiceStub(srv.channel)
        device = device_service_pb2_grpc.DeviceServiceStub(srv.channel)
        finished = stub.CreateScan(pb.CreateScanRequest(scan=pb.Scan(item_type="tote-classic"))).scan
        stub.CancelScan(pb.CancelScanRequest(name=finished.name))
        open_scan = stub.CreateScan(pb.CreateScanRequest(scan=pb.Scan(item_type="tote-classic"))).scan
        with monkeypatch.context() as m:
            m.setattr(shutil, "disk_usage", lambda path: Usage(1 << 30, (1 << 30) - 10 * 1024 * 1024, 10 * 1024 * 1024))
            status = device.GetStatus(device_service_pb2.GetStatusRequest()).status
            assert status.storage_free_bytes == 10 * 1024 * 1024
            with pytest.raises(grpc.RpcError) as info:
                stub.CreateScan(pb.CreateScanRequest(scan=pb.Scan(item_type="tote-classic")))
            assert info.value.code() == grpc.StatusCode.RESOURCE_EXHAUSTED
            details = info.value.details() or ""
            assert details.startswith("the scan was not created")
            assert "10 MiB free" in details and "floor of 64 MiB" in details and "min_free_mb" in details
            with pytest.raises(grpc.RpcError) as info:
                _upload(stub, open_scan.name, _png(3))
            assert info.value.code() == grpc.StatusCode.RESOURCE_EXHAUSTED
            # The finished scan was pruned to make room; the one in progress is kept and can still end.
            with pytest.raises(grpc.RpcError) as info:
                stub.GetScan(pb.GetScanRequest(name=finished.name))
            assert info.value.code() == grpc.StatusCode.NOT_FOUND
            cancelled = stub.CancelScan(pb.CancelScanRequest(name=open_scan.name)).scan
            assert cancelled.state == pb.SCAN_STATE_CANCELLED
        assert srv.daemon.store.pruned.scans == 1
        later = stub.CreateScan(pb.CreateScanRequest(scan=pb.Scan(item_type="tote-classic"))).scan
        assert later.state == pb.SCAN_STATE_IN_PROGRESS
    finally:
        srv.close()
