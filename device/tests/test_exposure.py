"""Auto-exposure: the search itself, its convergence on the simulated camera, and the exposure lock of a scan."""

from __future__ import annotations

from collections.abc import Iterator

import numpy as np
import pytest
from device_daemon import InProcessDaemon

from veriscope.device.bench import SimBench
from veriscope.device.camera.simulated import SimulatedCamera
from veriscope.device.config import load_config
from veriscope.device.controller.simulated import SimulatedController
from veriscope.device.errors import ConfigError, InvalidArgument
from veriscope.device.imager import Imager
from veriscope.device.pipeline import tone
from veriscope.device.pipeline.exposure import ExposureParams, Metering, auto_expose, percentile_level
from veriscope.device.types import CaptureSettings, Lighting
from veriscope.v1 import (
    common_pb2,
    scan_service_pb2,
    scan_service_pb2_grpc,
    simulation_service_pb2,
    simulation_service_pb2_grpc,
)

ITEM = "tote-classic"


class LinearSensor:
    """A camera whose metered level is proportional to exposure times gain, clipped at full scale."""

    def __init__(self, level_per_us: float) -> None:
        self.level_per_us = level_per_us
        self.calls: list[tuple[int, float]] = []

    def meter(self, exposure_us: int, gain: float) -> Metering:
        self.calls.append((exposure_us, gain))
        return Metering(min(1.0, self.level_per_us * exposure_us * gain), exposure_us, gain)


def test_tone_curve_round_trips_every_8_bit_value() -> None:
    values = np.arange(256, dtype=np.uint8).reshape(16, 16)
    rgb = np.stack([values] * 3, axis=-1)
    assert np.array_equal(tone.to_srgb(tone.to_linear(rgb)), rgb)
    assert tone.to_linear(np.array([[[255, 255, 255]]], dtype=np.uint8)).max() == pytest.approx(1.0)


def test_an_exposure_within_the_tolerance_is_kept_after_one_frame() -> None:
    sensor = LinearSensor(0.3 / 8000)
    result = auto_expose(sensor.meter, ExposureParams(target_level=0.33, tolerance=0.3))
    assert result.converged and result.frames == 1
    assert (result.exposure_us, result.analogue_gain) == (8000, 1.0)


@pytest.mark.parametrize("start_us", [20, 500, 200_000, 1_000_000])
def test_converges_from_far_starts_with_exposure_time_only(start_us: int) -> None:
    sensor = LinearSensor(0.33 / 12_000)
    params = ExposureParams(target_level=0.33, tolerance=0.05, max_exposure_us=1_000_000, max_frames=8)
    result = auto_expose(sensor.meter, params, start_exposure_us=start_us)
    assert result.converged, result
    assert result.frames <= 8
    assert result.level == pytest.approx(0.33, rel=0.05)
    assert result.analogue_gain == 1.0
    assert len(sensor.calls) == result.frames


def test_gain_rises_only_once_the_exposure_time_is_at_its_limit() -> None:
    sensor = LinearSensor(0.33 / 80_000)  # needs 80 ms at gain 1.0
    params = ExposureParams(target_level=0.33, tolerance=0.05, max_exposure_us=20_000)
    result = auto_expose(sensor.meter, params)
    assert result.converged
    assert result.exposure_us == 20_000
    assert result.analogue_gain == pytest.approx(4.0, rel=0.05)
    assert all(gain == 1.0 for exposure_us, gain in sensor.calls if exposure_us < 20_000)


def test_a_surface_too_dark_for_the_limits_stops_early_and_says_why() -> None:
    sensor = LinearSensor(1e-9)
    params = ExposureParams(max_exposure_us=50_000, max_analogue_gain=2.0, max_frames=20)
    result = auto_expose(sensor.meter, params)
    assert not result.converged
    assert "too dark" in result.reason and "50000 us" in result.reason
    assert result.frames < 20
    assert (result.exposure_us, result.analogue_gain) == (50_000, 2.0)


def test_the_frame_budget_bounds_the_search() -> None:
    sensor = LinearSensor(0.33 / 900_000)
    params = ExposureParams(tolerance=0.02, max_exposure_us=1_000_000, max_frames=2)
    result = auto_expose(sensor.meter, params, start_exposure_us=20)
    assert not result.converged and result.frames == 2
    assert "2 frames" in result.reason


def test_params_are_checked() -> None:
    with pytest.raises(InvalidArgument, match="target_level"):
        ExposureParams(target_level=1.5)
    with pytest.raises(InvalidArgument, match="max_exposure_us"):
        ExposureParams(start_exposure_us=500_000, max_exposure_us=100_000)


# --- On the simulated camera -------------------------------------------------------------------------------------


@pytest.fixture
def imager() -> Iterator[Imager]:
    bench = SimBench(sensor_width_px=640, sensor_height_px=480)
    bench.place(ITEM, "genuine", 5)
    bench.present("trim")
    bench.set_focus_steps(round(bench.in_focus_steps()))
    yield Imager(SimulatedCamera(bench), SimulatedController(bench))


@pytest.mark.parametrize("start_us", [300, 400_000])
def test_converges_on_the_simulated_camera_from_too_dark_and_too_bright(imager: Imager, start_us: int) -> None:
    params = ExposureParams(target_level=0.5, tolerance=0.05, start_exposure_us=start_us, max_exposure_us=500_000)
    start = imager.capture(CaptureSettings(exposure_us=start_us, analogue_gain=1.0))
    start_level = percentile_level(start.frame.pixels, 99.0)
    assert abs(start_level - 0.5) > 0.2  # the start really is far off

    result = imager.auto_expose(Lighting.WHITE_RING, params)
    assert result.converged, result
    assert result.frames <= params.max_frames
    assert result.analogue_gain == 1.0
    # A full-resolution capture at the chosen exposure meters what the search saw.
    frame = imager.capture(CaptureSettings(exposure_us=result.exposure_us, analogue_gain=result.analogue_gain)).frame
    assert percentile_level(frame.pixels, 99.0) == pytest.approx(0.5, rel=0.08)


# --- The exposure lock of a scan ---------------------------------------------------------------------------------


@pytest.fixture(scope="module")
def strict_daemon(tmp_path_factory: pytest.TempPathFactory) -> Iterator[InProcessDaemon]:
    """A daemon whose auto-exposure starts far too dark and aims tightly, so it always has to search."""
    srv = InProcessDaemon(
        tmp_path_factory.mktemp("lock") / "data",
        exposure={"start_exposure_us": 1000, "tolerance": 0.04, "target_level": 0.4},
    )
    yield srv
    srv.close()


def test_a_scan_locks_the_exposure_of_its_first_capture(strict_daemon: InProcessDaemon) -> None:
    sim = simulation_service_pb2_grpc.SimulationServiceStub(strict_daemon.channel)
    sim.PlaceItem(
        simulation_service_pb2.PlaceItemRequest(
            item=simulation_service_pb2.PlacedItem(item_type=ITEM, source="genuine", seed=3)
        )
    )
    scans = scan_service_pb2_grpc.ScanServiceStub(strict_daemon.channel)
    scan = scans.CreateScan(scan_service_pb2.CreateScanRequest(scan=scan_service_pb2.Scan(item_type=ITEM))).scan
    for region in ("canvas", "trim", "trim"):
        scans.CaptureRegion(scan_service_pb2.CaptureRegionRequest(name=scan.name, region=region))
    stored = scans.GetScan(scan_service_pb2.GetScanRequest(name=scan.name)).scan
    exposures = {(i.metadata.exposure_us, round(i.metadata.analogue_gain, 3)) for i in stored.images}
    manager = strict_daemon.daemon.context.manager
    locked = manager.locked_exposure(scan.name.split("/")[1], Lighting.WHITE_RING)
    assert locked is not None and locked[0] != 1000  # auto-exposure moved away from its start
    assert exposures == {(locked[0], round(locked[1], 3))}
    scans.CancelScan(scan_service_pb2.CancelScanRequest(name=scan.name))
    assert manager.locked_exposure(scan.name.split("/")[1], Lighting.WHITE_RING) is None

    # A scan that starts on the lining (a woven fabric brighter than the canvas) locks another exposure.
    other = scans.CreateScan(scan_service_pb2.CreateScanRequest(scan=scan_service_pb2.Scan(item_type=ITEM))).scan
    image = scans.CaptureRegion(scan_service_pb2.CaptureRegionRequest(name=other.name, region="lining")).image
    scans.CancelScan(scan_service_pb2.CancelScanRequest(name=other.name))
    assert abs(image.metadata.exposure_us - locked[0]) > 0.08 * locked[0]


def test_settings_that_give_the_exposure_override_the_lock(strict_daemon: InProcessDaemon) -> None:
    sim = simulation_service_pb2_grpc.SimulationServiceStub(strict_daemon.channel)
    sim.PlaceItem(
        simulation_service_pb2.PlaceItemRequest(
            item=simulation_service_pb2.PlacedItem(item_type=ITEM, source="genuine", seed=3)
        )
    )
    scans = scan_service_pb2_grpc.ScanServiceStub(strict_daemon.channel)
    scan = scans.CreateScan(scan_service_pb2.CreateScanRequest(scan=scan_service_pb2.Scan(item_type=ITEM))).scan
    given = common_pb2.CaptureSettings(exposure_us=5000, analogue_gain=1.5)
    image = scans.CaptureRegion(
        scan_service_pb2.CaptureRegionRequest(name=scan.name, region="canvas", settings=given)
    ).image
    assert (image.metadata.exposure_us, image.metadata.analogue_gain) == (5000, pytest.approx(1.5))
    scans.CancelScan(scan_service_pb2.CancelScanRequest(name=scan.name))


def test_the_exposure_section_of_the_config_is_validated() -> None:
    config = load_config(environ={"VERISCOPE_EXPOSURE__TARGET_LEVEL": "0.5", "VERISCOPE_EXPOSURE__MAX_FRAMES": "4"})
    assert (config.exposure.target_level, config.exposure.max_frames) == (0.5, 4)
    with pytest.raises(ConfigError, match=r"exposure\.target_level"):
        load_config(environ={"VERISCOPE_EXPOSURE__TARGET_LEVEL": "1.5"})
    with pytest.raises(ConfigError, match=r"exposure\.start_exposure_us"):
        load_config(environ={"VERISCOPE_EXPOSURE__START_EXPOSURE_US": "500000"})
