"""DeviceService.RunSelfTest and ReadLogs on the simulated unit: a healthy unit passes, each broken part fails by
name, the camera is taken as a scan takes it, and the log reads back filtered and followed."""

from __future__ import annotations

import logging
import shutil
import threading
import time
from collections.abc import Iterator, Mapping
from datetime import UTC, datetime, timedelta
from pathlib import Path

import grpc
import pytest
from device_daemon import InProcessDaemon
from google.protobuf.message import Message

from veriscope.device.controller import Controller, ControllerInfo, FocusRange
from veriscope.device.errors import ControllerError
from veriscope.device.imager import Imager
from veriscope.device.server import default_bundle_dir
from veriscope.device.types import Lighting
from veriscope.v1 import device_service_pb2 as pb
from veriscope.v1 import scan_service_pb2, simulation_service_pb2

PASS, FAIL = pb.SELF_TEST_STATUS_PASS, pb.SELF_TEST_STATUS_FAIL


class BrokenController(Controller):
    """Passes every call through to a real controller, except that some LED channels stay dark, or the board is
    gone altogether (every call raises ControllerError)."""

    def __init__(self, inner: Controller, *, dead: frozenset[Lighting] = frozenset(), gone: bool = False) -> None:
        self.inner = inner
        self.dead = dead
        self.gone = gone

    def _check(self) -> None:
        if self.gone:
            raise ControllerError("controller board on /dev/ttyUSB0 did not answer")

    @property
    def info(self) -> ControllerInfo:
        self._check()
        return self.inner.info

    def set_leds(self, duty_pct: Mapping[Lighting, int]) -> None:
        self._check()
        self.inner.set_leds({ch: 0 if ch in self.dead else duty for ch, duty in duty_pct.items()})

    def leds(self) -> dict[Lighting, int]:
        self._check()
        return self.inner.leds()

    @property
    def focus_range(self) -> FocusRange:
        return self.inner.focus_range

    def move_focus(self, target_steps: int) -> int:
        self._check()
        return self.inner.move_focus(target_steps)

    def focus_position(self) -> int:
        self._check()
        return self.inner.focus_position()

    def home_focus(self) -> None:
        self._check()
        self.inner.home_focus()

    def temperature_c(self) -> float:
        self._check()
        return self.inner.temperature_c()


def _ser(m: Message) -> bytes:
    return m.SerializeToString()


def _self_test(daemon: InProcessDaemon) -> tuple[dict[str, pb.SelfTestCheck], dict[str, list[pb.SelfTestImage]]]:
    call = daemon.channel.unary_stream(
        "/veriscope.v1.DeviceService/RunSelfTest",
        request_serializer=_ser,
        response_deserializer=pb.RunSelfTestResponse.FromString,
    )
    checks: dict[str, pb.SelfTestCheck] = {}
    images: dict[str, list[pb.SelfTestImage]] = {}
    for response in call(pb.RunSelfTestRequest(), timeout=120):
        assert response.total_checks == 7
        if response.HasField("image"):
            images.setdefault(response.image.check, []).append(response.image)
        else:
            checks[response.check.name] = response.check
    return checks, images


def _place_item(daemon: InProcessDaemon) -> None:
    daemon.channel.unary_unary(
        "/veriscope.v1.SimulationService/PlaceItem",
        request_serializer=_ser,
        response_deserializer=simulation_service_pb2.PlaceItemResponse.FromString,
    )(
        simulation_service_pb2.PlaceItemRequest(
            item=simulation_service_pb2.PlacedItem(item_type="tote-classic", source="genuine", seed=3)
        ),
        timeout=10,
    )


@pytest.fixture
def imager(daemon: InProcessDaemon) -> Iterator[Imager]:
    """The daemon's imager, given its own controller back after the test."""
    imager = daemon.daemon.context.imager
    assert imager is not None
    controller = imager.controller
    yield imager
    imager.controller = controller


def test_a_healthy_unit_passes_every_check_with_images(daemon: InProcessDaemon) -> None:
    _place_item(daemon)
    checks, images = _self_test(daemon)
    assert list(checks) == ["camera", "controller", "leds", "focus", "temperature", "model_checksums", "storage"]
    assert {name: pb.SelfTestStatus.Name(c.status) for name, c in checks.items()} == dict.fromkeys(
        checks, "SELF_TEST_STATUS_PASS"
    )
    assert {i.name for i in images["leds"]} == {"white_ring", "raking", "uv", "dark"}
    for image in images["camera"] + images["leds"]:
        assert image.png_data.startswith(b"\x89PNG\r\n\x1a\n")
        assert len(image.png_data) < 1024 * 1024
    leds = checks["leds"].measurements
    assert leds["uv_change"] > 0.02 and leds["white_ring_dark_level"] < leds["white_ring_level"]
    assert checks["focus"].measurements["position_errors"] == 0
    assert checks["focus"].measurements["sharpness_ratio"] > 1.5
    assert checks["temperature"].measurements["board_temperature_c"] == pytest.approx(31.0, abs=5)
    assert checks["storage"].measurements["free_bytes"] > checks["storage"].measurements["floor_bytes"]
    # Lights are left off and focus where it was.
    controller = daemon.daemon.context.controller
    assert controller is not None
    assert not any(controller.leds().values())


def test_an_empty_stage_warns_that_focus_cannot_be_judged(daemon: InProcessDaemon) -> None:
    daemon.channel.unary_unary(
        "/veriscope.v1.SimulationService/ClearItem",
        request_serializer=_ser,
        response_deserializer=simulation_service_pb2.ClearItemResponse.FromString,
    )(simulation_service_pb2.ClearItemRequest(), timeout=10)
    checks, _ = _self_test(daemon)
    assert checks["focus"].status == pb.SELF_TEST_STATUS_WARN
    assert "textured item" in checks["focus"].message
    assert checks["camera"].status == PASS


def test_a_dead_led_channel_fails_naming_it(daemon: InProcessDaemon, imager: Imager) -> None:
    _place_item(daemon)
    imager.controller = BrokenController(imager.controller, dead=frozenset({Lighting.UV}))
    checks, _ = _self_test(daemon)
    assert checks["leds"].status == FAIL
    assert "LED channel uv " in checks["leds"].message
    assert "white_ring" not in checks["leds"].message.split("changes:")[0]
    assert checks["controller"].status == PASS and checks["camera"].status == PASS


def test_a_disconnected_controller_fails_and_skips_what_needs_it(daemon: InProcessDaemon, imager: Imager) -> None:
    imager.controller = BrokenController(imager.controller, gone=True)
    checks, _ = _self_test(daemon)
    assert checks["controller"].status == FAIL
    assert "controller board on /dev/ttyUSB0 did not answer" in checks["controller"].message
    assert checks["leds"].status == pb.SELF_TEST_STATUS_SKIPPED
    assert checks["focus"].status == pb.SELF_TEST_STATUS_SKIPPED
    assert checks["model_checksums"].status == PASS and checks["storage"].status == PASS


def test_a_corrupted_model_file_fails_the_checksums(tmp_path: Path) -> None:
    bundle = tmp_path / "bundle"
    shutil.copytree(default_bundle_dir(), bundle)
    unit = InProcessDaemon(tmp_path / "data", camera=(320, 240), model={"bundle": str(bundle)})
    try:
        model = bundle / "model.tflite"
        data = bytearray(model.read_bytes())
        data[len(data) // 2] ^= 0xFF
        model.write_bytes(bytes(data))
        checks, _ = _self_test(unit)
    finally:
        unit.close()
    assert checks["model_checksums"].status == FAIL
    assert "model.tflite has SHA-256" in checks["model_checksums"].message
    assert "reinstall" in checks["model_checksums"].message


def test_the_self_test_is_refused_while_a_scan_owns_the_camera(daemon: InProcessDaemon) -> None:
    _place_item(daemon)
    create = daemon.channel.unary_unary(
        "/veriscope.v1.ScanService/CreateScan",
        request_serializer=_ser,
        response_deserializer=scan_service_pb2.CreateScanResponse.FromString,
    )
    scan = create(
        scan_service_pb2.CreateScanRequest(scan=scan_service_pb2.Scan(item_type="tote-classic")), timeout=10
    ).scan
    capture = daemon.channel.unary_unary(
        "/veriscope.v1.ScanService/CaptureRegion",
        request_serializer=_ser,
        response_deserializer=scan_service_pb2.CaptureRegionResponse.FromString,
    )
    capture(scan_service_pb2.CaptureRegionRequest(name=scan.name, region="canvas"), timeout=60)
    try:
        with pytest.raises(grpc.RpcError) as info:
            _self_test(daemon)
        assert info.value.code() == grpc.StatusCode.FAILED_PRECONDITION
        assert scan.name in (info.value.details() or "")
    finally:
        daemon.channel.unary_unary(
            "/veriscope.v1.ScanService/CancelScan",
            request_serializer=_ser,
            response_deserializer=scan_service_pb2.CancelScanResponse.FromString,
        )(scan_service_pb2.CancelScanRequest(name=scan.name), timeout=10)


# --- ReadLogs ----------------------------------------------------------------------------------------------------


def _read_logs(daemon: InProcessDaemon, request: pb.ReadLogsRequest) -> list[pb.LogEntry]:
    call = daemon.channel.unary_stream(
        "/veriscope.v1.DeviceService/ReadLogs",
        request_serializer=_ser,
        response_deserializer=pb.ReadLogsResponse.FromString,
    )
    return [entry for response in call(request, timeout=10) for entry in response.entries]


def test_logs_read_back_filtered_by_level_and_time(daemon: InProcessDaemon) -> None:
    log = logging.getLogger("veriscope.device.test")
    log.warning("a warning for the technician %d", 1)
    log.error("an error for the technician")
    entries = _read_logs(daemon, pb.ReadLogsRequest())
    assert [e.message for e in entries if e.logger == "veriscope.device.test"][-2:] == [
        "a warning for the technician 1",
        "an error for the technician",
    ]
    sequences = [e.sequence for e in entries]
    assert sequences == sorted(sequences)

    errors = _read_logs(daemon, pb.ReadLogsRequest(min_level=pb.LOG_LEVEL_ERROR))
    assert "an error for the technician" in [e.message for e in errors]
    assert all(e.level >= pb.LOG_LEVEL_ERROR for e in errors)
    assert "a warning for the technician 1" not in [e.message for e in errors]

    later = pb.ReadLogsRequest()
    later.since_time.FromDatetime(datetime.now(UTC) + timedelta(seconds=1))
    assert _read_logs(daemon, later) == []
    with pytest.raises(grpc.RpcError) as info:
        _read_logs(daemon, pb.ReadLogsRequest(min_level=99))  # type: ignore[arg-type]
    assert info.value.code() == grpc.StatusCode.INVALID_ARGUMENT


def test_following_the_log_streams_new_lines_until_cancelled(daemon: InProcessDaemon) -> None:
    call = daemon.channel.unary_stream(
        "/veriscope.v1.DeviceService/ReadLogs",
        request_serializer=_ser,
        response_deserializer=pb.ReadLogsResponse.FromString,
    )
    request = pb.ReadLogsRequest(follow=True, min_level=pb.LOG_LEVEL_WARNING)
    request.since_time.FromDatetime(datetime.now(UTC))
    responses = call(request, timeout=60)
    seen: list[str] = []

    def log_later() -> None:
        time.sleep(0.3)
        for i in range(3):
            logging.getLogger("veriscope.device.test").warning("followed line %d", i)
        logging.getLogger("veriscope.device.test").info("below the level")

    threading.Thread(target=log_later).start()
    for response in responses:
        seen += [e.message for e in response.entries if e.logger == "veriscope.device.test"]
        if len(seen) >= 3:
            break
    responses.cancel()
    assert seen[:3] == ["followed line 0", "followed line 1", "followed line 2"]
    # The daemon dropped the follower: nothing holds on to the cancelled stream.
    logs = daemon.daemon.context.logs
    assert logs is not None
    deadline = time.monotonic() + 10
    while logs._followers and time.monotonic() < deadline:
        time.sleep(0.05)
    assert not logs._followers
