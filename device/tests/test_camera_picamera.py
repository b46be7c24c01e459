"""Picamera2Camera against the fake picamera2 in tests/fakes/picamera2 (no camera needed).

The first group checks that the fake behaves like picamera2 where it matters,
so that the adapter tests below mean something.
"""

from __future__ import annotations

import importlib
import sys
from collections.abc import Iterator
from datetime import UTC, datetime, timedelta
from pathlib import Path
from types import ModuleType
from typing import Any

import numpy as np
import pytest

from veriscope.device.camera.picamera import INSTALL_HINT, Picamera2Camera
from veriscope.device.controller.simulated import SimulatedController
from veriscope.device.errors import CameraError, InvalidArgument
from veriscope.device.imager import Imager
from veriscope.device.types import CaptureSettings, Lighting

FAKES = Path(__file__).parent / "fakes" / "picamera2"
SMALL = (1014, 760)
"""A still size small enough to keep full-resolution test captures quick."""


def _fake_modules() -> list[str]:
    return [name for name in sys.modules if name.split(".")[0] in ("picamera2", "libcamera")]


@pytest.fixture
def hw(monkeypatch: pytest.MonkeyPatch) -> Iterator[ModuleType]:
    """The fake camera hardware, with nothing attached; the fake modules vanish after the test."""
    for name in _fake_modules():
        monkeypatch.delitem(sys.modules, name)
    monkeypatch.syspath_prepend(str(FAKES))
    module = importlib.import_module("picamera2._fake_hardware")
    module.detach_all()
    yield module
    module.detach_all()
    for name in _fake_modules():
        del sys.modules[name]


def _open(hw: ModuleType, spec: Any = None, **kwargs: Any) -> tuple[Any, Picamera2Camera]:
    fake = hw.attach(spec or hw.IMX477)
    kwargs.setdefault("still_size", SMALL)
    return fake, Picamera2Camera(fake.number, clock_ns=fake.clock_ns, **kwargs)


# ---- the fake is faithful -----------------------------------------------------------


def test_fake_is_not_importable_without_the_test_path() -> None:
    assert "picamera2" not in sys.modules
    with pytest.raises(ImportError):
        importlib.import_module("picamera2")


def test_fake_lists_no_camera_and_refuses_to_open_one(hw: ModuleType) -> None:
    from picamera2 import Picamera2

    assert Picamera2.global_camera_info() == []
    with pytest.raises(IndexError):
        Picamera2(0)


def test_fake_rgb888_is_bgr_in_memory(hw: ModuleType) -> None:
    from picamera2 import Picamera2

    hw.attach(hw.IMX477)
    with Picamera2(0) as picam:
        picam.configure(picam.create_still_configuration(main={"size": (64, 48), "format": "RGB888"}))
        picam.start()
        bgr = picam.capture_array("main")
        picam.switch_mode(picam.create_still_configuration(main={"size": (64, 48), "format": "BGR888"}))
        rgb = picam.capture_array("main")
    assert bgr.shape == rgb.shape == (48, 64, 3)
    # The scene's top-left patch is red: last channel of RGB888, first of BGR888.
    assert bgr[2, 2, 2] > 3 * bgr[2, 2, 0]
    assert rgb[2, 2, 0] > 3 * rgb[2, 2, 2]


def test_fake_refuses_unknown_controls_and_wrong_types(hw: ModuleType) -> None:
    from picamera2 import Picamera2

    hw.attach(hw.IMX477)
    with Picamera2(0) as picam:
        with pytest.raises(RuntimeError, match="not advertised"):
            picam.set_controls({"LensPosition": 2.0})  # the HQ camera has no lens
        with pytest.raises(RuntimeError, match="not advertised"):
            picam.set_controls({"Exposure": 8000})
        with pytest.raises(TypeError):
            picam.set_controls({"ExposureTime": 8000.0})


def test_fake_controls_arrive_late_and_report_actual_values(hw: ModuleType) -> None:
    from picamera2 import Picamera2

    hw.attach(hw.IMX477)
    with Picamera2(0) as picam:
        picam.start(picam.create_preview_configuration(main={"size": (64, 48)}))
        picam.capture_metadata()
        picam.set_controls({"AeEnable": False, "ExposureTime": 8000, "AnalogueGain": 1.5})
        exposures = [picam.capture_metadata()["ExposureTime"] for _ in range(5)]
        metadata = picam.capture_metadata()
    assert abs(exposures[0] - 8000) > 50  # the next frame was already on its way
    assert abs(exposures[-1] - 8000) <= 50
    assert exposures[-1] != 8000  # a whole number of sensor lines
    assert isinstance(metadata["ExposureTime"], int)
    assert isinstance(metadata["AnalogueGain"], float)
    assert metadata["AnalogueGain"] == pytest.approx(1.5, rel=0.01)
    assert isinstance(metadata["SensorTimestamp"], int)
    assert isinstance(metadata["ColourGains"], tuple)


def test_fake_hangs_where_picamera2_would(hw: ModuleType) -> None:
    from picamera2 import Picamera2

    hw.attach(hw.IMX477)
    with Picamera2(0) as picam:
        with pytest.raises(TimeoutError):
            picam.capture_request(wait=1.0)
        picam.start()
        with pytest.raises(RuntimeError, match="stopped before configuring"):
            picam.configure(picam.create_still_configuration())
        request = picam.capture_request()
        request.release()
        with pytest.raises(RuntimeError):
            request.make_array("main")
        with pytest.raises(RuntimeError):
            request.release()


def test_fake_closed_camera_refuses_work_and_can_be_reopened(hw: ModuleType) -> None:
    from picamera2 import Picamera2

    hw.attach(hw.IMX477)
    picam = Picamera2(0)
    with pytest.raises(RuntimeError, match="did not complete"):
        Picamera2(0)  # the camera is held
    picam.close()
    picam.close()
    assert picam.camera_properties == {}
    with pytest.raises(RuntimeError, match="not opened"):
        picam.create_still_configuration()
    with pytest.raises(RuntimeError, match="not opened"):
        picam.capture_request()
    Picamera2(0).close()


# ---- opening and closing -------------------------------------------------------------


def test_missing_picamera2_says_how_to_install(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setitem(sys.modules, "picamera2", None)  # makes the import fail
    with pytest.raises(CameraError) as caught:
        Picamera2Camera()
    assert INSTALL_HINT in str(caught.value)
    assert "sudo apt install python3-picamera2" in str(caught.value)
    assert "--system-site-packages" in str(caught.value)


def test_no_camera_is_a_camera_error(hw: ModuleType) -> None:
    with pytest.raises(CameraError, match="no camera found"):
        Picamera2Camera()


def test_unknown_camera_number_lists_the_cameras(hw: ModuleType) -> None:
    hw.attach(hw.IMX477)
    with pytest.raises(CameraError, match=r"no camera number 1; found 0: imx477"):
        Picamera2Camera(1)


def test_camera_held_by_another_user_is_a_camera_error(hw: ModuleType) -> None:
    _, first = _open(hw)
    with pytest.raises(CameraError, match="opening camera 0"):
        Picamera2Camera(0)
    first.close()
    Picamera2Camera(0).close()  # free again


def test_info_of_the_hq_camera_and_camera_module_3(hw: ModuleType) -> None:
    _, hq = _open(hw, hw.IMX477, still_size=None)
    _, cm3 = _open(hw, hw.IMX708, still_size=None)
    assert (hq.info.model, hq.info.sensor_width, hq.info.sensor_height) == ("imx477", 4056, 3040)
    assert not hq.info.has_lens_focus
    assert (cm3.info.model, cm3.info.sensor_width, cm3.info.sensor_height) == ("imx708", 4608, 2592)
    assert cm3.info.has_lens_focus


def test_bad_sizes_are_refused(hw: ModuleType) -> None:
    hw.attach(hw.IMX477)
    with pytest.raises(InvalidArgument, match="exceeds"):
        Picamera2Camera(0, still_size=(8000, 6000))
    with pytest.raises(InvalidArgument, match="preview_size"):
        Picamera2Camera(0, still_size=(1014, 760), preview_size=(2028, 1520))
    Picamera2Camera(0).close()  # the failed attempts released the camera


def test_close_is_idempotent_and_capture_after_close_fails(hw: ModuleType) -> None:
    fake, camera = _open(hw)
    camera.capture(CaptureSettings(exposure_us=8000, analogue_gain=1.0))
    camera.close()
    camera.close()
    assert not fake.acquired
    with pytest.raises(CameraError, match="closed"):
        camera.capture(CaptureSettings())


# ---- frames ------------------------------------------------------------------


def test_frames_are_rgb(hw: ModuleType) -> None:
    _, camera = _open(hw)
    frame = camera.capture(CaptureSettings(exposure_us=6000, analogue_gain=1.0))
    assert frame.pixels.shape == (760, 1014, 3)
    assert frame.pixels.dtype == np.uint8
    assert frame.pixels.flags.c_contiguous
    red_patch = frame.pixels[:100, :100].reshape(-1, 3).mean(axis=0)
    assert red_patch[0] > 4 * red_patch[2]
    assert frame.camera_model == "imx477"


def test_manual_exposure_waits_for_a_frame_that_shows_it(hw: ModuleType) -> None:
    fake, camera = _open(hw)
    first = camera.capture(CaptureSettings(exposure_us=4000, analogue_gain=1.0))
    second = camera.capture(CaptureSettings(exposure_us=12000, analogue_gain=2.0))
    assert abs(first.settings.exposure_us - 4000) <= 80
    # The applied values are the frame's own, not the request echoed back.
    assert abs(second.settings.exposure_us - 12000) <= 240
    assert second.settings.exposure_us != 12000
    assert second.settings.analogue_gain == pytest.approx(2.0, rel=0.03)
    assert camera.last_metadata["ExposureTime"] == second.settings.exposure_us
    # Six times the light reaches the sensor (the red channel saturates, so compare blue).
    assert second.pixels[..., 2].mean() > 4 * first.pixels[..., 2].mean()
    assert fake.outstanding_requests == 0
    assert fake.controls_log[-1]["AeEnable"] is False


def test_libcamera_05_exposure_modes(hw: ModuleType) -> None:
    fake = hw.attach(hw.IMX477, libcamera_05=True)
    camera = Picamera2Camera(0, still_size=SMALL, clock_ns=fake.clock_ns)
    frame = camera.capture(CaptureSettings(exposure_us=9000, analogue_gain=3.0))
    assert abs(frame.settings.exposure_us - 9000) <= 180
    assert frame.settings.analogue_gain == pytest.approx(3.0, rel=0.03)
    assert fake.controls_log[-1]["ExposureTimeMode"] == 1
    assert fake.controls_log[-1]["AnalogueGainMode"] == 1
    auto = camera.capture(CaptureSettings())
    assert fake.controls_log[-1]["ExposureTimeMode"] == 0
    assert "AeState" in camera.last_metadata
    assert auto.settings.exposure_us != frame.settings.exposure_us


def test_unchanged_settings_cost_one_frame(hw: ModuleType) -> None:
    fake, camera = _open(hw)
    settings = CaptureSettings(exposure_us=8000, analogue_gain=1.0)
    camera.capture(settings, width=320)
    sent = len(fake.controls_log)
    before = fake.frames_delivered
    camera.capture(settings, width=320)
    assert fake.frames_delivered - before == 1
    assert len(fake.controls_log) == sent


def test_frame_exposed_before_the_call_is_skipped(hw: ModuleType) -> None:
    # The controller switches the LEDs just before the capture; a frame already
    # exposed (the preview stream keeps the latest one) shows the old lighting.
    fake, camera = _open(hw)
    settings = CaptureSettings(exposure_us=8000, analogue_gain=1.0)
    bright = camera.capture(settings, width=320)
    fake.elapse(0.5)
    fake.set_illumination(0.25)
    dim = camera.capture(settings, width=320)
    assert dim.pixels[..., 2].mean() < 0.4 * bright.pixels[..., 2].mean()


def test_auto_exposure_settles(hw: ModuleType) -> None:
    fake, camera = _open(hw)
    camera.capture(CaptureSettings(exposure_us=2000, analogue_gain=1.0))
    frame = camera.capture(CaptureSettings())
    assert fake.controls_log[-1]["AeEnable"] is True
    assert "ExposureTime" not in fake.controls_log[-1]
    assert camera.last_metadata["AeLocked"] is True
    assert frame.settings.exposure_us * frame.settings.analogue_gain == pytest.approx(10_000, rel=0.05)


def test_exposure_beyond_the_sensor_limits_is_clamped_and_reported(hw: ModuleType) -> None:
    _, camera = _open(hw)
    frame = camera.capture(CaptureSettings(exposure_us=1, analogue_gain=1.0))
    assert 100 <= frame.settings.exposure_us <= 130  # the imx477's shortest is 114 us


def test_long_exposure_in_preview(hw: ModuleType) -> None:
    # picamera2's preview configuration caps frames at 83 ms unless told otherwise.
    _, camera = _open(hw)
    frame = camera.capture(CaptureSettings(exposure_us=300_000, analogue_gain=1.0), width=320)
    assert abs(frame.settings.exposure_us - 300_000) <= 6000


def test_preview_widths_share_one_configuration(hw: ModuleType) -> None:
    fake, camera = _open(hw)
    settings = CaptureSettings(exposure_us=8000, analogue_gain=1.0)
    sizes = [camera.capture(settings, width=w).pixels.shape for w in (320, 500, 16)]
    assert sizes == [(240, 320, 3), (375, 500, 3), (12, 16, 3)]
    assert fake.configure_count == 1
    full = camera.capture(settings)
    assert full.pixels.shape == (760, 1014, 3)
    wide = camera.capture(settings, width=800)  # wider than the preview stream: from the still one
    assert wide.pixels.shape == (600, 800, 3)
    assert fake.configure_count == 2
    camera.capture(settings, width=320)
    assert fake.configure_count == 3


def test_bad_width_is_invalid_argument(hw: ModuleType) -> None:
    _, camera = _open(hw)
    for width in (8, 1015):
        with pytest.raises(InvalidArgument, match="width"):
            camera.capture(CaptureSettings(), width=width)


def test_fixed_colour_gains(hw: ModuleType) -> None:
    fake, camera = _open(hw, colour_gains=(1.0, 1.6))
    frame = camera.capture(CaptureSettings(exposure_us=4000, analogue_gain=1.0))
    assert camera.last_metadata["ColourGains"] == (1.0, 1.6)
    assert fake.controls_log[-1]["AwbEnable"] is False
    _, auto_wb = _open(hw)
    reference = auto_wb.capture(CaptureSettings(exposure_us=4000, analogue_gain=1.0))
    assert frame.pixels[..., 0].mean() < 0.7 * reference.pixels[..., 0].mean()


def test_lens_position_on_camera_module_3(hw: ModuleType) -> None:
    # A camera left in continuous AF must be put in manual mode for LensPosition to count.
    fake = hw.attach(hw.IMX708, af_mode=2)
    camera = Picamera2Camera(0, still_size=(1152, 648), clock_ns=fake.clock_ns)
    frame = camera.capture(CaptureSettings(exposure_us=8000, analogue_gain=2.0, lens_position=9.5), width=320)
    assert frame.settings.lens_position == pytest.approx(9.5, abs=0.05)
    assert fake.controls_log[-1]["AfMode"] == 0
    with pytest.raises(InvalidArgument, match=r"0\.\.15 dioptres"):
        camera.capture(CaptureSettings(lens_position=20.0))


def test_lens_position_on_the_hq_camera_is_invalid(hw: ModuleType) -> None:
    _, camera = _open(hw)
    with pytest.raises(InvalidArgument, match="no focus lens"):
        camera.capture(CaptureSettings(lens_position=2.0))


def test_settings_not_applied_in_time_is_a_camera_error_and_recovers(hw: ModuleType) -> None:
    fake, camera = _open(hw, settle_frames=1)
    camera.capture(CaptureSettings(exposure_us=4000, analogue_gain=1.0))  # first frame after start
    with pytest.raises(CameraError, match=r"did not deliver a frame with ExposureTime 20000.*within 1 frames"):
        camera.capture(CaptureSettings(exposure_us=20000, analogue_gain=1.0))
    assert fake.outstanding_requests == 0
    fake.elapse(1.0)  # enough frames for the controls to land
    frame = camera.capture(CaptureSettings(exposure_us=20000, analogue_gain=1.0))
    assert abs(frame.settings.exposure_us - 20000) <= 400


def test_camera_failures_become_camera_errors(hw: ModuleType) -> None:
    fake, camera = _open(hw)
    fake.fail_next(TimeoutError())
    with pytest.raises(CameraError, match="sent no frame"):
        camera.capture(CaptureSettings(exposure_us=8000, analogue_gain=1.0))
    fake.fail_next(RuntimeError("Device timeout detected, attempting a restart!!!"))
    with pytest.raises(CameraError, match="Device timeout"):
        camera.capture(CaptureSettings(exposure_us=8000, analogue_gain=1.0))
    frame = camera.capture(CaptureSettings(exposure_us=8000, analogue_gain=1.0))
    assert frame.width == 1014


def test_capture_time_is_the_start_of_the_exposure(hw: ModuleType) -> None:
    _, camera = _open(hw)
    before = datetime.now(UTC)
    frame = camera.capture(CaptureSettings(exposure_us=500_000, analogue_gain=1.0))
    after = datetime.now(UTC)
    exposure = timedelta(microseconds=frame.settings.exposure_us)
    assert after - frame.capture_time >= exposure
    assert frame.capture_time >= before - exposure - timedelta(milliseconds=1)


def test_imager_drives_the_picamera(hw: ModuleType) -> None:
    from veriscope.device.bench import SimBench

    fake = hw.attach(hw.IMX477)
    camera = Picamera2Camera(0, still_size=SMALL, clock_ns=fake.clock_ns)
    imager = Imager(camera, SimulatedController(SimBench(sensor_width_px=1014, sensor_height_px=760)))
    judged = imager.capture(CaptureSettings(exposure_us=5000, analogue_gain=1.5, lighting=Lighting.RAKING))
    assert judged.frame.pixels.shape == (760, 1014, 3)
    assert judged.frame.settings.lighting is Lighting.RAKING
    assert imager.preview(320).width == 320
