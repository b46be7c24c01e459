"""Several clients on one unit at once: one scan owns the camera, the others are told so, and uploads run alongside.

The daemon does not queue camera scans: the first CaptureRegion takes the
camera and every other scan that asks meanwhile gets FAILED_PRECONDITION at
once, naming the owner and what to do. Scans that only upload images never
touch the camera, so they run side by side with each other and with the
camera's owner (device/docs/scans.md).
"""

from __future__ import annotations

import threading
from concurrent.futures import ThreadPoolExecutor

import grpc
import numpy as np
import pytest
from device_daemon import InProcessDaemon

from veriscope.device import codec
from veriscope.v1 import device_service_pb2, device_service_pb2_grpc, simulation_service_pb2
from veriscope.v1 import scan_service_pb2 as pb
from veriscope.v1 import scan_service_pb2_grpc as scan_grpc
from veriscope.v1 import simulation_service_pb2_grpc as sim_grpc

ITEM = "tote-classic"
REGIONS = ("canvas", "trim", "lining")
CAMERA_CLIENTS = 6
UPLOAD_CLIENTS = 4


@pytest.fixture
def scans(daemon: InProcessDaemon) -> scan_grpc.ScanServiceStub:
    sim_grpc.SimulationServiceStub(daemon.channel).PlaceItem(
        simulation_service_pb2.PlaceItemRequest(
            item=simulation_service_pb2.PlacedItem(item_type=ITEM, source="genuine", seed=4)
        )
    )
    return scan_grpc.ScanServiceStub(daemon.channel)


def _image(seed: int) -> bytes:
    """A 320x240 PNG of mid-grey noise, which the quality gate accepts."""
    return codec.encode(np.random.default_rng(seed).integers(60, 200, (240, 320, 3), np.uint8))


def _upload(stub: scan_grpc.ScanServiceStub, name: str, region: str, data: bytes) -> pb.UploadImageResponse:
    header = pb.UploadImageHeader(name=name, region=region, size_bytes=len(data))
    return stub.UploadImage(iter([pb.UploadImageRequest(header=header), pb.UploadImageRequest(chunk=data)]))


def test_one_of_many_simultaneous_camera_scans_wins_and_the_others_are_told_why(
    daemon: InProcessDaemon, scans: scan_grpc.ScanServiceStub
) -> None:
    start = threading.Barrier(CAMERA_CLIENTS, timeout=60)

    def camera_client(_: int) -> tuple[pb.Scan, pb.CaptureRegionResponse | grpc.RpcError]:
        # One channel per client, as separate programs would have.
        with grpc.insecure_channel(daemon.address) as channel:
            stub = scan_grpc.ScanServiceStub(channel)
            scan = stub.CreateScan(pb.CreateScanRequest(scan=pb.Scan(item_type=ITEM))).scan
            start.wait()
            try:
                return scan, stub.CaptureRegion(pb.CaptureRegionRequest(name=scan.name, region="canvas"), timeout=120)
            except grpc.RpcError as exc:
                return scan, exc

    with ThreadPoolExecutor(CAMERA_CLIENTS) as pool:
        outcomes = list(pool.map(camera_client, range(CAMERA_CLIENTS)))
    names = [scan.name for scan, _ in outcomes]
    assert len(set(names)) == CAMERA_CLIENTS  # creating scans never conflicts
    winners = [(scan, r) for scan, r in outcomes if isinstance(r, pb.CaptureRegionResponse)]
    assert len(winners) == 1, [getattr(r, "details", lambda: "ok")() for _, r in outcomes]
    owner, captured = winners[0]
    assert captured.image.image_id == "001"
    losers = [(scan, r) for scan, r in outcomes if isinstance(r, grpc.RpcError)]
    try:
        for scan, error in losers:
            assert error.code() == grpc.StatusCode.FAILED_PRECONDITION, error.details()
            details = error.details() or ""
            # Names the scan that holds the camera and how to go on.
            assert f"camera busy: {owner.name} owns the camera" in details
            assert "retry" in details and f"cancel {owner.name}" in details and "UploadImage" in details
            # A refused scan is untouched and still in progress.
            kept = scans.GetScan(pb.GetScanRequest(name=scan.name)).scan
            assert kept.state == pb.SCAN_STATE_IN_PROGRESS and not kept.images
        status = device_service_pb2_grpc.DeviceServiceStub(daemon.channel).GetStatus(
            device_service_pb2.GetStatusRequest()
        )
        assert status.status.active_scan == owner.name

        # Once the owner ends, the next scan that asks gets the camera.
        scans.CancelScan(pb.CancelScanRequest(name=owner.name))
        successor = losers[0][0]
        taken = scans.CaptureRegion(pb.CaptureRegionRequest(name=successor.name, region="canvas"), timeout=120)
        assert taken.image.image_id == "001"
    finally:
        for name in names:
            scans.CancelScan.future(pb.CancelScanRequest(name=name)).exception()


def test_upload_scans_run_side_by_side_while_a_scan_owns_the_camera(
    daemon: InProcessDaemon, scans: scan_grpc.ScanServiceStub
) -> None:
    owner = scans.CreateScan(pb.CreateScanRequest(scan=pb.Scan(item_type=ITEM))).scan
    scans.CaptureRegion(pb.CaptureRegionRequest(name=owner.name, region="canvas"), timeout=120)
    images = {region: [_image(10 * k + j) for j in range(2)] for k, region in enumerate(REGIONS)}
    # Every client uploads its first image, then waits for all the others to have done so: were upload
    # scans run one after another (or held back by the camera's owner), the barrier would break.
    all_started = threading.Barrier(UPLOAD_CLIENTS, timeout=60)

    def upload_client(k: int) -> pb.Scan:
        with grpc.insecure_channel(daemon.address) as channel:
            stub = scan_grpc.ScanServiceStub(channel)
            scan = stub.CreateScan(pb.CreateScanRequest(scan=pb.Scan(item_type=ITEM, partner_item_id=f"u{k}"))).scan
            pairs = [(region, data) for region in REGIONS for data in images[region]]
            _upload(stub, scan.name, *pairs[0])
            all_started.wait()
            for region, data in pairs[1:]:
                _upload(stub, scan.name, region, data)
            return stub.CompleteScan(pb.CompleteScanRequest(name=scan.name), timeout=120).scan

    try:
        with ThreadPoolExecutor(UPLOAD_CLIENTS) as pool:
            done = list(pool.map(upload_client, range(UPLOAD_CLIENTS)))
        assert [s.partner_item_id for s in done] == [f"u{k}" for k in range(UPLOAD_CLIENTS)]
        for scan in done:
            assert scan.state == pb.SCAN_STATE_COMPLETED
            assert [len(r.images) for r in scan.result.regions] == [2, 2, 2]
        # The same files on every scan, so the same verdict and score on each.
        assert len({(s.result.verdict, round(s.result.score, 6)) for s in done}) == 1
        # The camera's owner was never disturbed.
        kept = scans.GetScan(pb.GetScanRequest(name=owner.name)).scan
        assert kept.state == pb.SCAN_STATE_IN_PROGRESS and len(kept.images) == 1
    finally:
        scans.CancelScan(pb.CancelScanRequest(name=owner.name))
