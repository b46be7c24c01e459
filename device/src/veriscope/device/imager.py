"""The imager: drives lights, focus and camera together to take one judged frame.

It is the only code that touches the camera and the controller during a
capture, and it serialises them with one lock, so an autofocus sweep and a
preview frame never interleave. Methods block; call them from a worker thread.
"""

from __future__ import annotations

import threading
from collections.abc import Mapping
from dataclasses import dataclass

from veriscope.device.camera import Camera
from veriscope.device.controller import Controller
from veriscope.device.errors import InvalidArgument
from veriscope.device.pipeline import quality
from veriscope.device.pipeline.autofocus import AutofocusResult, autofocus
from veriscope.device.types import AppliedSettings, CaptureSettings, Frame, Lighting

DEFAULT_EXPOSURE_US = 8000
DEFAULT_GAIN = 1.0
DEFAULT_DUTY_PCT: dict[Lighting, int] = {
    Lighting.WHITE_RING: 60,
    Lighting.RAKING: 80,
    Lighting.UV: 100,
    Lighting.OFF: 0,
}
AUTOFOCUS_WIDTH_PX = 320
REFINE_SPAN_STEPS = 12
"""Half-width of the local search that re-centres focus between captures of one region."""


@dataclass(frozen=True)
class JudgedFrame:
    """A frame with the quality gate's report on it."""

    frame: Frame
    quality: quality.QualityReport


class Imager:
    """Captures frames through a camera and a controller board.

    ``quality_thresholds`` come from the model bundle (missing keys take the
    gate's defaults).
    """

    def __init__(
        self,
        camera: Camera,
        controller: Controller,
        *,
        quality_thresholds: Mapping[str, float] | None = None,
        focus_window: tuple[int, int] | None = None,
    ) -> None:
        self.camera = camera
        self.controller = controller
        rng = controller.focus_range
        lo, hi = focus_window or (rng.min_steps, rng.max_steps)
        if not rng.min_steps <= lo < hi <= rng.max_steps:
            raise InvalidArgument(
                f"autofocus window {lo}..{hi} must lie inside the board's soft limits {rng.min_steps}..{rng.max_steps}"
            )
        self._focus_window = (lo, hi)
        self._thresholds = quality.thresholds_from(quality_thresholds)
        self._lock = threading.RLock()
        self.exposure_us = DEFAULT_EXPOSURE_US
        self.analogue_gain = DEFAULT_GAIN

    def _validate(self, settings: CaptureSettings) -> None:
        if settings.exposure_us is not None and not 1 <= settings.exposure_us <= 1_000_000:
            raise InvalidArgument(f"settings.exposure_us must be 1..1000000, got {settings.exposure_us}")
        if settings.analogue_gain is not None and not 1.0 <= settings.analogue_gain <= 16.0:
            raise InvalidArgument(f"settings.analogue_gain must be 1.0..16.0, got {settings.analogue_gain}")
        if settings.led_duty_pct is not None and not 1 <= settings.led_duty_pct <= 100:
            raise InvalidArgument(f"settings.led_duty_pct must be 1..100, got {settings.led_duty_pct}")
        if settings.focus_steps is not None:
            rng = self.controller.focus_range
            if not rng.min_steps <= settings.focus_steps <= rng.max_steps:
                raise InvalidArgument(
                    f"settings.focus_steps must be {rng.min_steps}..{rng.max_steps}, got {settings.focus_steps}"
                )

    def _expose(self, settings: CaptureSettings, width: int | None) -> Frame:
        self._validate(settings)
        duty = settings.led_duty_pct or DEFAULT_DUTY_PCT[settings.lighting]
        self.controller.light_only(settings.lighting, duty)
        if settings.focus_steps is not None:
            self.controller.move_focus(settings.focus_steps)
        resolved = CaptureSettings(
            exposure_us=settings.exposure_us or self.exposure_us,
            analogue_gain=settings.analogue_gain or self.analogue_gain,
            lighting=settings.lighting,
            led_duty_pct=duty,
            focus_steps=self.controller.focus_position(),
            lens_position=settings.lens_position,
        )
        frame = self.camera.capture(resolved, width=width)
        # Exposure and gain are what the camera reports it used (a real sensor clamps and quantises);
        # lighting and focus are what the controller did.
        applied = AppliedSettings(
            exposure_us=frame.settings.exposure_us,
            analogue_gain=frame.settings.analogue_gain,
            lighting=settings.lighting,
            led_duty_pct=duty,
            focus_steps=self.controller.focus_position(),
            lens_position=frame.settings.lens_position,
        )
        return Frame(frame.pixels, applied, frame.camera_model, frame.capture_time)

    def lights_off(self) -> None:
        """Switch every LED off (after a capture: the LEDs heat the board and the item)."""
        with self._lock:
            self.controller.light_only(Lighting.OFF, 0)

    def capture(self, settings: CaptureSettings) -> JudgedFrame:
        """Light, expose at full resolution, switch the lights off, and run the quality gate."""
        with self._lock:
            try:
                frame = self._expose(settings, None)
            finally:
                self.controller.light_only(Lighting.OFF, 0)
        return JudgedFrame(frame, quality.assess(frame.pixels, self._thresholds))

    def preview(self, width: int, lighting: Lighting = Lighting.WHITE_RING) -> Frame:
        """A low-resolution frame for the live preview."""
        with self._lock:
            return self._expose(CaptureSettings(lighting=lighting), width)

    def autofocus(
        self, lighting: Lighting = Lighting.WHITE_RING, max_steps: int = 40, *, refine: bool = False
    ) -> AutofocusResult:
        """Search the focus motor's range for the sharpest image and stay there.

        ``refine`` searches only ``REFINE_SPAN_STEPS`` around the current
        position, in about 10 frames: enough to follow the small height changes
        between spots of one region after a full search found the surface.
        """
        lo, hi = self._focus_window
        if refine:
            here = self.controller.focus_position()
            lo, hi = max(lo, here - REFINE_SPAN_STEPS), min(hi, here + REFINE_SPAN_STEPS)
            max_steps = min(max_steps, 12)
        settings = CaptureSettings(lighting=lighting)
        with self._lock:
            self._validate(settings)
            self.controller.light_only(lighting, DEFAULT_DUTY_PCT[lighting])

            def measure() -> float:
                frame = self._expose(settings, AUTOFOCUS_WIDTH_PX)
                return quality.sharpness(frame.pixels)

            return autofocus(
                self.controller.move_focus,
                measure,
                min_position=lo,
                max_position=hi,
                max_steps=max_steps,
                coarse_samples=5 if refine else 21,
            )
