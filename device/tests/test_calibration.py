"""Flat-field and white-balance calibration: the procedure on the simulated white target, storage, and the service."""

from __future__ import annotations

import hashlib
import io
import json
import logging
from collections.abc import Iterator
from datetime import UTC, datetime
from pathlib import Path

import grpc
import numpy as np
import pytest
from device_daemon import InProcessDaemon
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st
from test_service_fuzz import ALLOWED, messages

from veriscope.device import codec
from veriscope.device.bench import TINTED_RESPONSE, SimBench
from veriscope.device.camera.simulated import SimulatedCamera
from veriscope.device.controller.simulated import SimulatedController
from veriscope.device.errors import InvalidArgument
from veriscope.device.imager import Imager
from veriscope.device.pipeline import calibration, tone
from veriscope.device.pipeline.exposure import ExposureResult
from veriscope.device.types import CaptureSettings, Lighting, RGBImage
from veriscope.v1 import calibration_service_pb2 as pb
from veriscope.v1 import (
    calibration_service_pb2_grpc,
    capture_service_pb2,
    capture_service_pb2_grpc,
    common_pb2,
    scan_service_pb2,
    scan_service_pb2_grpc,
    simulation_service_pb2,
    simulation_service_pb2_grpc,
)

ITEM = "tote-classic"


def corner_ratio(pixels: RGBImage) -> float:
    """Mean luminance of the darkest corner patch (1/16 of each side) relative to the centre patch."""
    lum = tone.luminance(tone.to_linear(pixels))
    h, w = lum.shape
    ph, pw = h // 16, w // 16
    centre = lum[h // 2 - ph : h // 2 + ph, w // 2 - pw : w // 2 + pw].mean()
    corners = [lum[:ph, :pw], lum[:ph, -pw:], lum[-ph:, :pw], lum[-ph:, -pw:]]
    return float(min(c.mean() for c in corners) / centre)


def channel_means(pixels: RGBImage) -> np.ndarray:
    """Mean linear red, green and blue of the centre half of a frame, relative to green."""
    lin = tone.to_linear(pixels)
    h, w = lin.shape[:2]
    means = lin[h // 4 : 3 * h // 4, w // 4 : 3 * w // 4].reshape(-1, 3).mean(axis=0)
    return np.asarray(means / means[1])


# --- The procedure on the simulated bench ------------------------------------------------------------------------


@pytest.fixture
def bench() -> SimBench:
    bench = SimBench(sensor_width_px=640, sensor_height_px=480, channel_response=TINTED_RESPONSE)
    bench.place_white_reference()
    return bench


@pytest.fixture
def imager(bench: SimBench) -> Imager:
    return Imager(SimulatedCamera(bench), SimulatedController(bench))


def run(imager: Imager, lightings: list[Lighting], frames: int = 4) -> calibration.Calibration:
    return calibration.calibrate(
        lambda lighting, params: imager.auto_expose(lighting, params, corrected=False),
        imager.uncorrected_frames,
        lightings,
        frames=frames,
        params=imager.exposure_params,
        device_id="VS-TEST",
        camera_model="simulated",
    )


def test_flat_field_removes_the_vignetting_and_white_balance_neutralises_the_target(imager: Imager) -> None:
    made = run(imager, [Lighting.WHITE_RING])
    channel = made.channel(Lighting.WHITE_RING)
    assert channel is not None
    settings = CaptureSettings(exposure_us=channel.exposure_us, analogue_gain=channel.analogue_gain)

    before = imager.capture(settings).frame
    assert before.calibration_id == ""
    assert corner_ratio(before.pixels) < 0.8  # the simulated optics vignette by 30 % at the corners
    assert np.ptp(channel_means(before.pixels)) > 0.04  # and the sensor sees the white LEDs tinted

    imager.set_calibration(made)
    after = imager.capture(settings).frame
    assert after.calibration_id == made.calibration_id and after.calibration_time == made.create_time
    assert corner_ratio(after.pixels) == pytest.approx(1.0, abs=0.03)
    assert np.abs(channel_means(after.pixels) - 1.0).max() < 0.02
    # The centre keeps its green level, so exposure and the quality gate see about what they saw before.
    centre = (slice(200, 280), slice(280, 360), 1)
    assert tone.to_linear(after.pixels[centre]).mean() == pytest.approx(
        tone.to_linear(before.pixels[centre]).mean(), rel=0.02
    )
    assert 0.2 < channel.vignetting_depth < 0.35
    assert channel.white_balance[1] == 1.0 and channel.white_balance[2] > channel.white_balance[0] > 1.0
    assert channel.analogue_gain == 1.0 and channel.level == pytest.approx(calibration.TARGET_LEVEL, rel=0.1)
    assert channel.texture < calibration.MAX_TEXTURE


def test_each_lighting_channel_gets_its_own_flat_field(imager: Imager) -> None:
    made = run(imager, [Lighting.WHITE_RING, Lighting.RAKING, Lighting.WHITE_RING], frames=2)
    assert [c.lighting for c in made.channels] == [Lighting.WHITE_RING, Lighting.RAKING]
    raking = made.channel(Lighting.RAKING)
    assert raking is not None
    # The raking LED lights one side of the field more than the other: a deeper fall-off than the ring's.
    assert raking.vignetting_depth > made.channels[0].vignetting_depth + 0.1
    imager.set_calibration(made)
    frame = imager.capture(
        CaptureSettings(exposure_us=raking.exposure_us, analogue_gain=1.0, lighting=Lighting.RAKING)
    ).frame
    assert corner_ratio(frame.pixels) == pytest.approx(1.0, abs=0.04)
    uv = imager.capture(CaptureSettings(exposure_us=8000, analogue_gain=1.0, lighting=Lighting.UV)).frame
    assert uv.calibration_id == ""  # not calibrated under UV: passed through unchanged


def test_a_specimen_is_refused_as_not_a_white_reference(bench: SimBench, imager: Imager) -> None:
    bench.place(ITEM, "genuine", 1)
    # Out of focus the canvas is smooth, but brown.
    with pytest.raises(calibration.CalibrationError, match=r"not white under white_ring: red/green 1\.\d\d"):
        run(imager, [Lighting.WHITE_RING], frames=2)
    # In focus it shows its texture too, which is checked first.
    bench.set_focus_steps(round(bench.in_focus_steps()))
    with pytest.raises(calibration.CalibrationError, match="not a white reference under white_ring: fine texture"):
        run(imager, [Lighting.WHITE_RING], frames=2)


def test_an_empty_stage_is_refused_as_too_dark(bench: SimBench, imager: Imager) -> None:
    bench.clear()
    with pytest.raises(calibration.CalibrationError, match="too dark for a white reference"):
        run(imager, [Lighting.WHITE_RING], frames=2)


def test_channels_and_frames_are_checked(imager: Imager) -> None:
    with pytest.raises(InvalidArgument, match="uv cannot be calibrated"):
        run(imager, [Lighting.UV])
    with pytest.raises(InvalidArgument, match=r"frames must be 1\.\.64"):
        run(imager, [Lighting.WHITE_RING], frames=0)
    assert calibration.check_channels([]) == (Lighting.WHITE_RING,)


def _white(h: int = 240, w: int = 320, *, corner: float = 0.7, rgb: tuple[float, float, float] = (0.5, 0.5, 0.5)):
    """A synthetic linear white target with a radial fall-off to ``corner`` at the corners, as 8-bit sRGB."""
    y = (np.arange(h) + 0.5 - h / 2) / (h / 2)
    x = (np.arange(w) + 0.5 - w / 2) / (w / 2)
    r2 = (x[None, :] ** 2 + y[:, None] ** 2) / 2
    linear = (1 - (1 - corner) * r2)[..., None] * np.asarray(rgb, dtype=np.float32)
    return tone.to_srgb(linear.astype(np.float32))


def _finish(frame: RGBImage) -> calibration.ChannelCalibration:
    frames = calibration.WhiteFrames(Lighting.WHITE_RING)
    frames.add(frame)
    return frames.finish(ExposureResult(True, 8000, 1.0, 0.7, 0.7, 1, ()))


def test_each_check_names_the_problem() -> None:
    assert _finish(_white()).vignetting_depth == pytest.approx(0.3, abs=0.02)
    with pytest.raises(calibration.CalibrationError, match=r"not white under white_ring: red/green (1\.99|2\.00)"):
        _finish(_white(rgb=(0.6, 0.3, 0.3)))
    with pytest.raises(calibration.CalibrationError, match=r"not uniform under white_ring: corner/centre ratio 0\.2"):
        _finish(_white(corner=0.2))
    with pytest.raises(calibration.CalibrationError, match="overexposed under white_ring"):
        _finish(_white(rgb=(1.3, 1.3, 1.3)))
    # Even, but for a red channel that fades almost to black at the corners: gains beyond what may be stored.
    dim_red = _white(corner=0.15).copy()
    dim_red[..., 1:] = _white()[..., 1:]
    with pytest.raises(calibration.CalibrationError, match=r"flat-field gains of 1\.00\.\.[5-9]\.\d\d"):
        _finish(dim_red)
    frames = calibration.WhiteFrames(Lighting.WHITE_RING)
    frames.add(_white())
    with pytest.raises(InvalidArgument, match="differs from the first"):
        frames.add(_white(120, 160))


# --- Correcting frames ---------------------------------------------------------------------------------------------


def exact_correction(pixels: RGBImage, gains: np.ndarray) -> np.ndarray:
    """The correction in float64 with the sRGB formulas, before rounding to 8 bits."""
    v = pixels / 255.0
    linear = np.where(v <= 0.04045, v / 12.92, ((v + 0.055) / 1.055) ** 2.4) * gains
    x = np.clip(linear, 0.0, 1.0)
    return np.where(x <= 0.0031308, 12.92 * x, 1.055 * x ** (1 / 2.4) - 0.055) * 255.0


def test_a_full_frame_is_corrected_within_one_code_value_of_the_exact_transform(imager: Imager) -> None:
    made = run(imager, [Lighting.WHITE_RING], frames=2)
    channel = made.channel(Lighting.WHITE_RING)
    assert channel is not None
    pixels = np.random.default_rng(3).integers(0, 256, (480, 640, 3), dtype=np.uint8)
    corrected = made.apply(pixels, Lighting.WHITE_RING)
    assert corrected is not None and corrected.shape == pixels.shape and corrected.dtype == np.uint8
    grid = channel.flat_gain * np.asarray(channel.white_balance, dtype=np.float32)
    exact = exact_correction(pixels, calibration._upsample(grid, 480, 640).astype(np.float64))
    error = np.abs(corrected - exact)
    assert error.max() < 1.0
    assert np.mean(np.abs(corrected - np.round(exact)) > 0) < 0.05  # nearly always the exactly rounded value
    assert made.apply(pixels, Lighting.WHITE_RING) is not None  # the prepared gains are reused
    assert len(made._gains) == 1


@pytest.mark.parametrize("span", [1.0, 1.4, 3.0, 6.2, 20.0])
def test_gains_of_any_range_are_applied_within_one_code_value(span: float) -> None:
    # From uniform gains to a range far wider than a calibration stores, where the table gives way to float32.
    h, w = 64, 96
    ramp = np.linspace(0.0, 1.0, h * w, dtype=np.float64).reshape(h, w)
    gains = (0.6 * span**ramp)[..., None] * np.array([1.0, 0.9, 1.1])
    gain_image = tone.GainImage(gains.astype(np.float32))
    # Quantised while its half step moves no bright sample by more than 0.45 of a code value: a range up to 7.75.
    assert gain_image.quantised == (gains.max() / gains.min() < 7.75)
    pixels = np.broadcast_to(np.arange(256, dtype=np.uint8).repeat(24)[: h * w].reshape(h, w)[..., None], (h, w, 3))
    out = gain_image.apply(np.ascontiguousarray(pixels))
    assert np.abs(out - exact_correction(pixels, gains.astype(np.float32).astype(np.float64))).max() < 1.0
    with pytest.raises(ValueError, match="does not fit"):
        gain_image.apply(np.zeros((h, w + 1, 3), dtype=np.uint8))


def test_gains_must_be_positive_and_per_colour() -> None:
    with pytest.raises(ValueError, match="H x W x 3"):
        tone.GainImage(np.ones((4, 4), dtype=np.float32))
    with pytest.raises(ValueError, match="> 0"):
        tone.GainImage(np.zeros((4, 4, 3), dtype=np.float32))


# --- Storage ------------------------------------------------------------------------------------------------------


@pytest.fixture
def made() -> calibration.Calibration:
    channel = _finish(_white())
    return calibration.new_calibration(
        [channel],
        device_id="VS-TEST",
        camera_model="simulated",
        frames=1,
        now=datetime(2026, 5, 28, 10, 15, tzinfo=UTC),
    )


def test_a_stored_calibration_loads_as_it_was(tmp_path: Path, made: calibration.Calibration) -> None:
    store = calibration.CalibrationStore(tmp_path / "calibration", calibration.camera_key("imx477 (Pi HQ)"))
    assert store.load() is None
    store.save(made)
    assert store.maps_path.name == "imx477-Pi-HQ.npz"
    loaded = store.load()
    assert loaded is not None
    assert loaded.calibration_id == made.calibration_id and loaded.calibration_id.startswith("20260528T101500Z-")
    assert loaded.create_time == made.create_time and loaded.device_id == "VS-TEST" and loaded.frames == 1
    first, again = made.channels[0], loaded.channels[0]
    assert np.array_equal(first.flat_gain, again.flat_gain)
    assert again.white_balance == pytest.approx(first.white_balance)
    summary = json.loads(store.summary_path.read_text())
    assert summary["channels"]["white_ring"]["vignetting_depth"] == pytest.approx(first.vignetting_depth, abs=1e-5)


def _rewrite_maps(store: calibration.CalibrationStore, **arrays: np.ndarray) -> None:
    """Replace the maps and re-sign them in the summary, so only the arrays' content is wrong."""
    buffer = io.BytesIO()
    np.savez(buffer, **arrays)
    store.maps_path.write_bytes(buffer.getvalue())
    summary = json.loads(store.summary_path.read_text())
    summary["maps_sha256"] = hashlib.sha256(buffer.getvalue()).hexdigest()
    store.summary_path.write_text(json.dumps(summary))


@pytest.mark.parametrize(
    ("damage", "message"),
    [
        (lambda s: s.summary_path.write_text("{not json"), "is not valid JSON"),
        (lambda s: s.maps_path.unlink(), r"\.npz is missing"),
        (lambda s: s.maps_path.write_bytes(s.maps_path.read_bytes()[:-9]), "do not belong together"),
        (lambda s: _rewrite_maps(s, wb_white_ring=np.ones(3, np.float32)), "lacks the maps of channel 'white_ring'"),
        (
            lambda s: _rewrite_maps(
                s, flat_white_ring=np.full((48, 64, 3), np.nan, np.float32), wb_white_ring=np.ones(3, np.float32)
            ),
            "NaN or infinite",
        ),
        (
            lambda s: _rewrite_maps(
                s, flat_white_ring=np.ones((48, 32, 3), np.float32), wb_white_ring=np.ones(3, np.float32)
            ),
            r"has shape \(48, 32, 3\)",
        ),
        (
            lambda s: _rewrite_maps(
                s, flat_white_ring=np.full((48, 64, 3), 9.0, np.float32), wb_white_ring=np.ones(3, np.float32)
            ),
            "outside 0.25..4.0",
        ),
    ],
)
def test_a_damaged_calibration_is_refused_with_the_file_and_problem(
    tmp_path: Path, made: calibration.Calibration, damage, message: str
) -> None:  # type: ignore[no-untyped-def]
    store = calibration.CalibrationStore(tmp_path, "simulated")
    store.save(made)
    damage(store)
    with pytest.raises(calibration.CalibrationFileError, match=message) as info:
        store.load()
    assert "simulated." in str(info.value)


# --- CalibrationService over gRPC ----------------------------------------------------------------------------------


class Unit:
    """Stubs of one in-process daemon."""

    def __init__(self, daemon: InProcessDaemon) -> None:
        self.daemon = daemon
        self.calibration = calibration_service_pb2_grpc.CalibrationServiceStub(daemon.channel)
        self.capture = capture_service_pb2_grpc.CaptureServiceStub(daemon.channel)
        self.scans = scan_service_pb2_grpc.ScanServiceStub(daemon.channel)
        self.sim = simulation_service_pb2_grpc.SimulationServiceStub(daemon.channel)

    def place(self, item_type: str, source: str = "genuine", seed: int = 1) -> None:
        item = simulation_service_pb2.PlacedItem(item_type=item_type, source=source, seed=seed)
        self.sim.PlaceItem(simulation_service_pb2.PlaceItemRequest(item=item))

    def get(self) -> pb.Calibration:
        return self.calibration.GetCalibration(pb.GetCalibrationRequest(name="calibration")).calibration

    def calibrate(self, frames: int = 3, *lightings: int) -> pb.Calibration:
        request = pb.CalibrateRequest(name="calibration", frames=frames, lighting_channels=list(lightings))
        return self.calibration.Calibrate(request, timeout=120).calibration

    def white_capture(self) -> capture_service_pb2.CaptureResponse:
        settings = common_pb2.CaptureSettings(exposure_us=8000, analogue_gain=1.0)
        return self.capture.Capture(capture_service_pb2.CaptureRequest(settings=settings))


def decode(data: bytes) -> RGBImage:
    return codec.decode(data, max_pixels=10_000_000)


def _error(call, *args) -> grpc.RpcError:  # type: ignore[no-untyped-def]
    with pytest.raises(grpc.RpcError) as info:
        call(*args)
    return info.value


@pytest.fixture(scope="module")
def unit(daemon: InProcessDaemon) -> Unit:
    return Unit(daemon)


def test_calibrate_over_grpc_then_every_capture_is_corrected(unit: Unit) -> None:
    unit.place("white-reference")
    assert unit.get().state == pb.CALIBRATION_STATE_UNCALIBRATED
    before = unit.white_capture()
    assert before.image.metadata.calibration_id == "" and not before.image.metadata.HasField("calibration_time")
    assert corner_ratio(decode(before.image.data)) < 0.8

    made = unit.calibrate(3)
    assert made.state == pb.CALIBRATION_STATE_CALIBRATED and made.name == "calibration"
    assert made.frames == 3 and made.camera_model == "simulated"
    assert made.device_id == unit.daemon.daemon.context.device_id
    assert [c.lighting for c in made.channels] == [common_pb2.LIGHTING_CHANNEL_WHITE_RING]
    assert 0.2 < made.vignetting_depth < 0.35
    # The daemon's simulated sensor is factory-neutral: white balance finds (almost) nothing to correct.
    gains = made.white_balance_gains
    assert gains.green == 1.0 and abs(gains.red - 1.0) < 0.02 and abs(gains.blue - 1.0) < 0.02
    assert Path(made.storage_path).is_file()
    assert unit.get() == made

    after = unit.white_capture()
    meta = after.image.metadata
    assert meta.calibration_id == made.calibration_id
    assert meta.calibration_time == made.create_time
    pixels = decode(after.image.data)
    assert corner_ratio(pixels) == pytest.approx(1.0, abs=0.03)
    assert np.abs(channel_means(pixels) - 1.0).max() < 0.02


def test_calibration_is_refused_while_a_scan_owns_the_camera(unit: Unit) -> None:
    unit.place(ITEM)
    scan = unit.scans.CreateScan(scan_service_pb2.CreateScanRequest(scan=scan_service_pb2.Scan(item_type=ITEM))).scan
    unit.scans.CaptureRegion(scan_service_pb2.CaptureRegionRequest(name=scan.name, region="canvas"))
    unit.place("white-reference")
    try:
        error = _error(unit.calibrate)
        assert error.code() == grpc.StatusCode.FAILED_PRECONDITION
        assert "camera busy" in error.details() and scan.name in error.details()
    finally:
        unit.scans.CancelScan(scan_service_pb2.CancelScanRequest(name=scan.name))


def test_calibration_is_refused_for_a_specimen_and_keeps_the_old_one(unit: Unit) -> None:
    unit.place("white-reference")
    kept = unit.calibrate(2)
    unit.place(ITEM)
    error = _error(unit.calibrate)
    assert error.code() == grpc.StatusCode.FAILED_PRECONDITION
    assert "not a white reference" in error.details() and "place the clean white reference target" in error.details()
    assert unit.get().calibration_id == kept.calibration_id


def test_bad_calibrate_requests_name_the_field(unit: Unit) -> None:
    for request, text in [
        (pb.CalibrateRequest(name="calibrations"), "name must be 'calibration'"),
        (pb.CalibrateRequest(name="calibration", frames=65), "frames must be 1..64"),
        (
            pb.CalibrateRequest(name="calibration", lighting_channels=[common_pb2.LIGHTING_CHANNEL_UV]),
            "uv cannot be calibrated",
        ),
        (pb.CalibrateRequest(name="calibration", lighting_channels=[99]), "lighting_channels has unknown"),
    ]:
        error = _error(unit.calibration.Calibrate, request)
        assert error.code() == grpc.StatusCode.INVALID_ARGUMENT and text in error.details()
    error = _error(unit.calibration.GetCalibration, pb.GetCalibrationRequest())
    assert error.code() == grpc.StatusCode.INVALID_ARGUMENT


def test_calibration_persists_across_a_restart(tmp_path: Path) -> None:
    first = Unit(InProcessDaemon(tmp_path / "data"))
    try:
        first.place("white-reference")
        made = first.calibrate(2)
    finally:
        first.daemon.close()
    second = Unit(InProcessDaemon(tmp_path / "data"))
    try:
        assert second.get() == made
        second.place("white-reference")
        capture = second.white_capture()
        assert capture.image.metadata.calibration_id == made.calibration_id
        assert corner_ratio(decode(capture.image.data)) == pytest.approx(1.0, abs=0.03)
    finally:
        second.daemon.close()


def test_a_malformed_calibration_leaves_the_daemon_serving_uncalibrated(
    tmp_path: Path, caplog: pytest.LogCaptureFixture
) -> None:
    folder = tmp_path / "data" / "calibration"
    folder.mkdir(parents=True)
    (folder / "simulated.npz").write_bytes(b"not a zip file")
    (folder / "simulated.json").write_text('{"format": 1, "maps_sha256": "00"}')
    with caplog.at_level(logging.WARNING, logger="veriscope.device.calibration"):
        broken = Unit(InProcessDaemon(tmp_path / "data"))
    try:
        warnings = [r.getMessage() for r in caplog.records if r.levelno == logging.WARNING]
        assert any("cannot be used" in w and "simulated.json" in w for w in warnings), warnings
        state = broken.get()
        assert state.state == pb.CALIBRATION_STATE_INVALID
        assert "do not belong together" in state.problem and state.calibration_id == ""
        broken.place("white-reference")
        capture = broken.white_capture()
        assert capture.image.metadata.calibration_id == ""
        assert corner_ratio(decode(capture.image.data)) < 0.8
        # Calibrating again repairs it.
        assert broken.calibrate(2).state == pb.CALIBRATION_STATE_CALIBRATED
        assert broken.get().problem == ""
    finally:
        broken.daemon.close()


@settings(max_examples=25, deadline=None, suppress_health_check=[HealthCheck.too_slow], database=None)
@given(messages(pb.CalibrateRequest), messages(pb.GetCalibrationRequest), st.booleans())
def test_calibration_rpcs_never_fail_internally(
    fuzz_unit: Unit, calibrate: pb.CalibrateRequest, get: pb.GetCalibrationRequest, named: bool
) -> None:
    if named:  # past the name check, so the other fields are what is fuzzed
        calibrate.name = get.name = "calibration"
    for method, request in (("Calibrate", calibrate), ("GetCalibration", get)):
        stub = fuzz_unit.daemon.channel.unary_unary(
            f"/veriscope.v1.CalibrationService/{method}",
            request_serializer=lambda m: m.SerializeToString(),
            response_deserializer=lambda b: b,
        )
        try:
            stub(request, timeout=60)
        except grpc.RpcError as exc:
            assert exc.code() in ALLOWED, f"{method}({request}) -> {exc.code()}: {exc.details()}"
            assert exc.details()


@pytest.fixture(scope="module")
def fuzz_unit(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Unit]:
    """A daemon with a tiny sensor and the white target placed, so fuzzed calibrations may well succeed."""
    srv = InProcessDaemon(tmp_path_factory.mktemp("fuzz") / "data", camera=(320, 240))
    fuzzed = Unit(srv)
    fuzzed.place("white-reference")
    yield fuzzed
    srv.close()
