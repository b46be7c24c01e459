"""The simulated microscope camera: renders the simulated bench through the specimen imaging model.

What it shows depends on the bench's item, spot, LED duties and focus
position, and on the exposure and gain asked for, so autofocus, exposure
control and the quality gate all work on it as on the real camera.
"""

from __future__ import annotations

from veriscope.device.bench import SimBench
from veriscope.device.camera import Camera, CameraInfo
from veriscope.device.errors import InvalidArgument
from veriscope.device.types import AppliedSettings, CaptureSettings, Frame

DEFAULT_EXPOSURE_US = 8000


class SimulatedCamera(Camera):
    """A camera that renders the bench."""

    def __init__(self, bench: SimBench) -> None:
        self._bench = bench

    @property
    def info(self) -> CameraInfo:
        """The simulated sensor."""
        o = self._bench.optics
        return CameraInfo("simulated", o.sensor_width_px, o.sensor_height_px, has_lens_focus=False)

    def capture(self, settings: CaptureSettings, *, width: int | None = None) -> Frame:
        """Render one frame; lighting and focus are whatever the controller set on the bench."""
        exposure_us = settings.exposure_us or DEFAULT_EXPOSURE_US
        gain = settings.analogue_gain or 1.0
        if width is not None and not 16 <= width <= self._bench.optics.sensor_width_px:
            raise InvalidArgument(f"width must be 16..{self._bench.optics.sensor_width_px} px, got {width}")
        pixels = self._bench.render(exposure_us=exposure_us, analogue_gain=gain, width=width)
        applied = AppliedSettings(
            exposure_us=exposure_us,
            analogue_gain=gain,
            lighting=settings.lighting,
            led_duty_pct=settings.led_duty_pct or 0,
            focus_steps=self._bench.focus_steps(),
        )
        return Frame(pixels, applied, "simulated")
