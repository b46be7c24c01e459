"""A camera that fails mid-capture, seen through ScanService and CaptureService on the in-process daemon.

The client gets UNAVAILABLE with a message naming the camera; the scan stays
IN_PROGRESS with the images it had, keeps the camera, leaves no LED lit, and
carries on once the camera works again. The same holds for the simulated
camera wrapped in a fault switch and for the Raspberry Pi camera adapter over
the fake picamera2 whose frame requests raise.
"""

from __future__ import annotations

import errno
import importlib
import sys
import threading
from collections.abc import Iterator
from pathlib import Path
from types import ModuleType

import grpc
import pytest
from device_daemon import InProcessDaemon

from veriscope.device.camera import Camera, CameraInfo
from veriscope.device.errors import CameraError
from veriscope.device.imager import Imager
from veriscope.device.types import CaptureSettings, Frame
from veriscope.v1 import (
    capture_service_pb2,
    capture_service_pb2_grpc,
    device_service_pb2,
    device_service_pb2_grpc,
    scan_service_pb2_grpc,
    simulation_service_pb2,
    simulation_service_pb2_grpc,
)
from veriscope.v1 import scan_service_pb2 as pb

ITEM = "tote-classic"
FAKES = Path(__file__).parent / "fakes" / "picamera2"


class FaultyCamera(Camera):
    """Passes frames through from another camera until armed, then raises on the frames it was told to.

    ``fail(error, after=n)`` lets ``n`` more frames through and raises ``error``
    on every frame after them (``stills_only`` limits that to full-resolution
    frames, sparing the small frames of metering and focus sweeps) until
    :meth:`heal`.
    """

    def __init__(self, inner: Camera) -> None:
        self.inner = inner
        self._lock = threading.Lock()
        self._error: BaseException | None = None
        self._spare = 0
        self._stills_only = False
        self.failures = 0

    @property
    def info(self) -> CameraInfo:
        """The wrapped camera's description."""
        return self.inner.info

    def fail(self, error: BaseException, *, after: int = 0, stills_only: bool = False) -> None:
        """Raise ``error`` from the frame after the next ``after`` frames on."""
        with self._lock:
            self._error, self._spare, self._stills_only = error, after, stills_only

    def heal(self) -> None:
        """Pass every frame through again."""
        with self._lock:
            self._error = None

    def capture(self, settings: CaptureSettings, *, width: int | None = None) -> Frame:
        """A frame of the wrapped camera, or the armed error."""
        with self._lock:
            if self._error is not None and (width is None or not self._stills_only):
                if self._spare <= 0:
                    self.failures += 1
                    raise self._error
                self._spare -= 1
        return self.inner.capture(settings, width=width)


@pytest.fixture
def imager(daemon: InProcessDaemon) -> Iterator[Imager]:
    """The daemon's imager, given its own camera back after the test."""
    imager = daemon.daemon.context.imager
    assert imager is not None
    camera = imager.camera
    yield imager
    imager.camera = camera


@pytest.fixture
def faulty(imager: Imager) -> FaultyCamera:
    """The daemon's simulated camera behind a fault switch."""
    wrapper = FaultyCamera(imager.camera)
    imager.camera = wrapper
    return wrapper


@pytest.fixture
def stubs(daemon: InProcessDaemon) -> Iterator[tuple[scan_service_pb2_grpc.ScanServiceStub, Stubs]]:
    sim = simulation_service_pb2_grpc.SimulationServiceStub(daemon.channel)
    sim.PlaceItem(
        simulation_service_pb2.PlaceItemRequest(
            item=simulation_service_pb2.PlacedItem(item_type=ITEM, source="genuine", seed=3)
        )
    )
    yield scan_service_pb2_grpc.ScanServiceStub(daemon.channel), Stubs(daemon.channel)


class Stubs:
    """The other services the checks below look through."""

    def __init__(self, channel: grpc.Channel) -> None:
        self.device = device_service_pb2_grpc.DeviceServiceStub(channel)
        self.capture = capture_service_pb2_grpc.CaptureServiceStub(channel)


def _capture(scans: scan_service_pb2_grpc.ScanServiceStub, scan: pb.Scan, region: str = "canvas") -> pb.ScanImage:
    return scans.CaptureRegion(pb.CaptureRegionRequest(name=scan.name, region=region), timeout=120).image


def _fails(scans: scan_service_pb2_grpc.ScanServiceStub, scan: pb.Scan) -> grpc.RpcError:
    with pytest.raises(grpc.RpcError) as info:
        _capture(scans, scan)
    return info.value


def _check_survives(
    scans: scan_service_pb2_grpc.ScanServiceStub, other: Stubs, scan: pb.Scan, before: list[pb.ScanImage]
) -> None:
    """The scan is still in progress with exactly ``before``, owns the camera, and no LED is left on."""
    kept = scans.GetScan(pb.GetScanRequest(name=scan.name)).scan
    assert kept.state == pb.SCAN_STATE_IN_PROGRESS
    assert [(i.image_id, i.sha256) for i in kept.images] == [(i.image_id, i.sha256) for i in before]
    status = other.device.GetStatus(device_service_pb2.GetStatusRequest()).status
    assert status.active_scan == scan.name
    assert list(status.lit_channels) == []


@pytest.mark.parametrize(
    ("error", "after", "stills_only"),
    [
        pytest.param(CameraError("camera simulated stopped streaming"), 0, False, id="first-metering-frame"),
        pytest.param(CameraError("camera simulated stopped streaming"), 6, False, id="mid-focus-sweep"),
        pytest.param(CameraError("camera simulated stopped streaming"), 0, True, id="full-resolution-frame"),
        # A driver that lets an OS error escape is still reported as the camera failing, not as a bug.
        pytest.param(OSError(errno.EIO, "Input/output error"), 3, False, id="raw-os-error"),
    ],
)
def test_a_camera_failure_mid_capture_leaves_the_scan_to_continue(
    stubs: tuple[scan_service_pb2_grpc.ScanServiceStub, Stubs],
    faulty: FaultyCamera,
    error: BaseException,
    after: int,
    stills_only: bool,
) -> None:
    scans, other = stubs
    scan = scans.CreateScan(pb.CreateScanRequest(scan=pb.Scan(item_type=ITEM))).scan
    try:
        first = _capture(scans, scan)
        assert first.image_id == "001"
        # A new region: auto-exposure is locked, but focus searches its whole range again.
        faulty.fail(error, after=after, stills_only=stills_only)
        with pytest.raises(grpc.RpcError) as info:
            _capture(scans, scan, "trim")
        assert faulty.failures == 1
        assert info.value.code() == grpc.StatusCode.UNAVAILABLE, info.value.details()
        assert "camera simulated" in (info.value.details() or "")
        _check_survives(scans, other, scan, [first])
        # Another scan cannot take the camera meanwhile: the failed scan keeps it to retry.
        rival = scans.CreateScan(pb.CreateScanRequest(scan=pb.Scan(item_type=ITEM))).scan
        with pytest.raises(grpc.RpcError) as busy:
            _capture(scans, rival)
        assert busy.value.code() == grpc.StatusCode.FAILED_PRECONDITION
        scans.CancelScan(pb.CancelScanRequest(name=rival.name))

        faulty.heal()
        again = _capture(scans, scan, "trim")
        assert (again.image_id, again.region) == ("002", "trim")
        done = scans.CompleteScan(pb.CompleteScanRequest(name=scan.name), timeout=120).scan
        assert done.state == pb.SCAN_STATE_COMPLETED
        assert [i.image_id for i in done.images] == ["001", "002"]
    finally:
        faulty.heal()
        scans.CancelScan.future(pb.CancelScanRequest(name=scan.name)).exception()


def test_a_failure_that_persists_fails_every_retry_alike(
    stubs: tuple[scan_service_pb2_grpc.ScanServiceStub, Stubs], faulty: FaultyCamera
) -> None:
    scans, other = stubs
    scan = scans.CreateScan(pb.CreateScanRequest(scan=pb.Scan(item_type=ITEM))).scan
    try:
        first = _capture(scans, scan)
        faulty.fail(CameraError("camera simulated is not connected"))
        for attempt in range(3):
            failed = _fails(scans, scan)
            assert failed.code() == grpc.StatusCode.UNAVAILABLE, (attempt, failed.details())
            assert "camera simulated is not connected" in (failed.details() or "")
            _check_survives(scans, other, scan, [first])
        faulty.heal()
        assert _capture(scans, scan).image_id == "002"
    finally:
        faulty.heal()
        scans.CancelScan.future(pb.CancelScanRequest(name=scan.name)).exception()


def test_a_standalone_capture_reports_the_camera_failure(
    stubs: tuple[scan_service_pb2_grpc.ScanServiceStub, Stubs], faulty: FaultyCamera
) -> None:
    _, other = stubs
    faulty.fail(CameraError("camera simulated is not connected"), stills_only=True)
    with pytest.raises(grpc.RpcError) as info:
        other.capture.Capture(capture_service_pb2.CaptureRequest(), timeout=60)
    assert info.value.code() == grpc.StatusCode.UNAVAILABLE, info.value.details()
    assert "camera simulated is not connected" in (info.value.details() or "")
    assert list(other.device.GetStatus(device_service_pb2.GetStatusRequest()).status.lit_channels) == []
    faulty.heal()
    assert other.capture.Capture(capture_service_pb2.CaptureRequest(), timeout=60).image.data


# ---- the Raspberry Pi camera adapter over the fake picamera2 -----------------------------------


def _fake_modules() -> list[str]:
    return [name for name in sys.modules if name.split(".")[0] in ("picamera2", "libcamera")]


@pytest.fixture
def hw(monkeypatch: pytest.MonkeyPatch) -> Iterator[ModuleType]:
    """The fake camera hardware with nothing attached; the fake modules vanish after the test."""
    for name in _fake_modules():
        monkeypatch.delitem(sys.modules, name)
    monkeypatch.syspath_prepend(str(FAKES))
    module = importlib.import_module("picamera2._fake_hardware")
    module.detach_all()
    yield module
    module.detach_all()
    for name in _fake_modules():
        del sys.modules[name]


@pytest.mark.parametrize(
    ("fault", "words"),
    [
        (RuntimeError("Device timeout detected, attempting a restart!!!"), "Device timeout"),
        (TimeoutError(), "sent no frame"),
    ],
)
def test_a_picamera2_failure_maps_the_same_way(
    stubs: tuple[scan_service_pb2_grpc.ScanServiceStub, Stubs],
    imager: Imager,
    hw: ModuleType,
    fault: BaseException,
    words: str,
) -> None:
    from veriscope.device.camera.picamera import Picamera2Camera

    fake = hw.attach(hw.IMX477)
    camera = Picamera2Camera(fake.number, still_size=(640, 480), clock_ns=fake.clock_ns)
    imager.camera = camera
    scans, other = stubs
    scan = scans.CreateScan(pb.CreateScanRequest(scan=pb.Scan(item_type=ITEM))).scan
    try:
        first = _capture(scans, scan)
        fake.fail_next(fault)
        failed = _fails(scans, scan)
        assert failed.code() == grpc.StatusCode.UNAVAILABLE, failed.details()
        details = failed.details() or ""
        assert "camera imx477" in details and words in details
        _check_survives(scans, other, scan, [first])
        assert fake.outstanding_requests == 0
        assert _capture(scans, scan).image_id == "002"
    finally:
        scans.CancelScan.future(pb.CancelScanRequest(name=scan.name)).exception()
        camera.close()
