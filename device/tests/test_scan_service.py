"""ScanService rules, over real gRPC against the in-process daemon."""

from __future__ import annotations

import hashlib
import threading
import time

import grpc
import numpy as np
import pytest
from device_daemon import InProcessDaemon

from veriscope.device import codec
from veriscope.v1 import scan_service_pb2 as pb
from veriscope.v1 import scan_service_pb2_grpc, simulation_service_pb2, simulation_service_pb2_grpc

ITEM = "tote-classic"


@pytest.fixture
def scans(daemon: InProcessDaemon) -> scan_service_pb2_grpc.ScanServiceStub:
    sim = simulation_service_pb2_grpc.SimulationServiceStub(daemon.channel)
    sim.PlaceItem(
        simulation_service_pb2.PlaceItemRequest(
            item=simulation_service_pb2.PlacedItem(item_type=ITEM, source="genuine", seed=1)
        )
    )
    return scan_service_pb2_grpc.ScanServiceStub(daemon.channel)


def _create(stub: scan_service_pb2_grpc.ScanServiceStub, partner: str = "") -> pb.Scan:
    return stub.CreateScan(pb.CreateScanRequest(scan=pb.Scan(item_type=ITEM, partner_item_id=partner))).scan


def _code(call, *args) -> grpc.StatusCode:  # type: ignore[no-untyped-def]
    with pytest.raises(grpc.RpcError) as info:
        call(*args)
    return info.value.code()


def test_create_reports_regions_in_guided_order(scans: scan_service_pb2_grpc.ScanServiceStub) -> None:
    scan = _create(scans, "listing-1")
    assert scan.state == pb.SCAN_STATE_IN_PROGRESS
    assert [r.region for r in scan.regions] == ["canvas", "trim", "lining"]
    assert scan.next_region == "canvas"
    assert scan.partner_item_id == "listing-1"
    scans.CancelScan(pb.CancelScanRequest(name=scan.name))


def test_bad_requests_name_the_field(scans: scan_service_pb2_grpc.ScanServiceStub) -> None:
    with pytest.raises(grpc.RpcError) as info:
        scans.CreateScan(pb.CreateScanRequest(scan=pb.Scan(item_type="")))
    assert info.value.code() == grpc.StatusCode.INVALID_ARGUMENT and "item_type" in info.value.details()
    with pytest.raises(grpc.RpcError) as info:
        scans.GetScan(pb.GetScanRequest(name="scan/abc"))
    assert info.value.code() == grpc.StatusCode.INVALID_ARGUMENT and "scans/{scan_id}" in info.value.details()
    assert _code(scans.GetScan, pb.GetScanRequest(name="scans/0123abc")) == grpc.StatusCode.NOT_FOUND
    scan = _create(scans)
    with pytest.raises(grpc.RpcError) as info:
        scans.CaptureRegion(pb.CaptureRegionRequest(name=scan.name, region="strap"))
    assert info.value.code() == grpc.StatusCode.INVALID_ARGUMENT and "canvas, trim, lining" in info.value.details()
    scans.CancelScan(pb.CancelScanRequest(name=scan.name))


def test_calls_out_of_order_are_failed_precondition(scans: scan_service_pb2_grpc.ScanServiceStub) -> None:
    scan = _create(scans)
    cancelled = scans.CancelScan(pb.CancelScanRequest(name=scan.name)).scan
    assert cancelled.state == pb.SCAN_STATE_CANCELLED
    for call, request in [
        (scans.CancelScan, pb.CancelScanRequest(name=scan.name)),
        (scans.CompleteScan, pb.CompleteScanRequest(name=scan.name)),
        (scans.CaptureRegion, pb.CaptureRegionRequest(name=scan.name, region="canvas")),
    ]:
        assert _code(call, request) == grpc.StatusCode.FAILED_PRECONDITION


def test_one_scan_owns_the_camera_until_it_ends(scans: scan_service_pb2_grpc.ScanServiceStub) -> None:
    first, second = _create(scans), _create(scans)
    captured = scans.CaptureRegion(pb.CaptureRegionRequest(name=first.name, region="canvas"))
    assert captured.image.region == "canvas"
    with pytest.raises(grpc.RpcError) as info:
        scans.CaptureRegion(pb.CaptureRegionRequest(name=second.name, region="canvas"))
    assert info.value.code() == grpc.StatusCode.FAILED_PRECONDITION
    assert first.name in info.value.details()
    scans.CancelScan(pb.CancelScanRequest(name=first.name))
    assert scans.CaptureRegion(pb.CaptureRegionRequest(name=second.name, region="canvas")).image.image_id
    scans.CancelScan(pb.CancelScanRequest(name=second.name))


def test_incomplete_scan_is_unverified_for_coverage(scans: scan_service_pb2_grpc.ScanServiceStub) -> None:
    scan = _create(scans)
    done = scans.CompleteScan(pb.CompleteScanRequest(name=scan.name)).scan
    assert done.state == pb.SCAN_STATE_COMPLETED
    assert done.result.verdict == pb.VERDICT_UNVERIFIED
    assert done.result.reason == pb.VERDICT_REASON_INSUFFICIENT_COVERAGE
    assert done.result.model.name == "veriscope-demo"


def _upload(stub, name: str, region: str, data: bytes, *, size: int | None = None, sha: str = "", chunk: int = 1 << 20):  # type: ignore[no-untyped-def]
    header = pb.UploadImageHeader(name=name, region=region, size_bytes=len(data) if size is None else size, sha256=sha)
    messages = [pb.UploadImageRequest(header=header)]
    messages += [pb.UploadImageRequest(chunk=data[i : i + chunk]) for i in range(0, len(data), chunk)]
    return stub.UploadImage(iter(messages))


def test_uploads_are_checked(scans: scan_service_pb2_grpc.ScanServiceStub) -> None:
    scan = _create(scans)
    image = np.random.default_rng(0).integers(0, 255, (480, 640, 3), dtype=np.uint8)
    data = codec.encode(image, codec.ImageFormat.PNG)
    ok = _upload(scans, scan.name, "canvas", data, sha=hashlib.sha256(data).hexdigest(), chunk=100_000)
    assert ok.image.sha256 == hashlib.sha256(data).hexdigest()
    assert ok.image.size_bytes == len(data)
    cases = [
        (dict(data=data[:1000]), grpc.StatusCode.INVALID_ARGUMENT, "is corrupt or truncated"),
        (dict(data=data, size=len(data) + 10), grpc.StatusCode.INVALID_ARGUMENT, "truncated"),
        (dict(data=data, size=10), grpc.StatusCode.INVALID_ARGUMENT, "more bytes"),
        (dict(data=data, sha="0" * 64), grpc.StatusCode.INVALID_ARGUMENT, "sha256 mismatch"),
        (dict(data=b"", size=0), grpc.StatusCode.INVALID_ARGUMENT, "size_bytes"),
        (dict(data=b"GIF89a" + bytes(100)), grpc.StatusCode.INVALID_ARGUMENT, "neither PNG nor JPEG"),
        (dict(data=b"x", size=100 * 1024 * 1024), grpc.StatusCode.RESOURCE_EXHAUSTED, "limit"),
    ]
    for kwargs, code, words in cases:
        with pytest.raises(grpc.RpcError) as info:
            _upload(scans, scan.name, "canvas", **kwargs)
        assert info.value.code() == code, kwargs
        assert words in info.value.details()
    # Nothing that failed was added to the scan.
    after = scans.GetScan(pb.GetScanRequest(name=scan.name)).scan
    assert len(after.images) == 1
    scans.CancelScan(pb.CancelScanRequest(name=scan.name))


def test_watch_streams_progress_until_the_end(scans: scan_service_pb2_grpc.ScanServiceStub) -> None:
    scan = _create(scans)
    events: list[pb.WatchScanResponse] = []
    watching = threading.Event()

    def watch() -> None:
        for event in scans.WatchScan(pb.WatchScanRequest(name=scan.name), timeout=120):
            events.append(event)
            watching.set()

    thread = threading.Thread(target=watch)
    thread.start()
    assert watching.wait(10)
    scans.CaptureRegion(pb.CaptureRegionRequest(name=scan.name, region="canvas"))
    scans.CancelScan(pb.CancelScanRequest(name=scan.name))
    thread.join(30)
    types = [e.type for e in events]
    assert types[0] == pb.SCAN_EVENT_TYPE_SNAPSHOT
    assert types[-1] == pb.SCAN_EVENT_TYPE_FINISHED
    assert pb.SCAN_EVENT_TYPE_IMAGE_ACCEPTED in types or pb.SCAN_EVENT_TYPE_RETAKE_REQUESTED in types
    assert events[-1].scan.state == pb.SCAN_STATE_CANCELLED


def test_list_pages_and_filters(scans: scan_service_pb2_grpc.ScanServiceStub) -> None:
    made = [_create(scans, f"page-{i}") for i in range(5)]
    for scan in made:
        scans.CancelScan(pb.CancelScanRequest(name=scan.name))
    seen: list[str] = []
    token = ""
    while True:
        page = scans.ListScans(pb.ListScansRequest(page_size=2, page_token=token, filter="state = CANCELLED"))
        seen += [s.name for s in page.scans]
        token = page.next_page_token
        if not token:
            break
    assert [s.name for s in reversed(made)] == [n for n in seen if n in {s.name for s in made}]
    only = scans.ListScans(pb.ListScansRequest(filter='partner_item_id = "page-3"')).scans
    assert [s.name for s in only] == [made[3].name]
    assert _code(scans.ListScans, pb.ListScansRequest(filter="colour = red")) == grpc.StatusCode.INVALID_ARGUMENT


def test_an_idle_owner_loses_the_camera(tmp_path) -> None:  # type: ignore[no-untyped-def]
    srv = InProcessDaemon(tmp_path / "data", camera=(320, 240), scan={"camera_idle_timeout_s": 1.0})
    try:
        sim = simulation_service_pb2_grpc.SimulationServiceStub(srv.channel)
        sim.PlaceItem(
            simulation_service_pb2.PlaceItemRequest(
                item=simulation_service_pb2.PlacedItem(item_type=ITEM, source="genuine", seed=2)
            )
        )
        stub = scan_service_pb2_grpc.ScanServiceStub(srv.channel)
        abandoned, waiting = _create(stub), _create(stub)
        stub.CaptureRegion(pb.CaptureRegionRequest(name=abandoned.name, region="canvas"))
        time.sleep(1.5)
        taken = stub.CaptureRegion(pb.CaptureRegionRequest(name=waiting.name, region="canvas"))
        assert taken.image.region == "canvas"
        # The idle scan is still in progress; it just has to wait its turn now.
        assert _code(stub.CaptureRegion, pb.CaptureRegionRequest(name=abandoned.name, region="trim")) == (
            grpc.StatusCode.FAILED_PRECONDITION
        )
    finally:
        srv.close()
