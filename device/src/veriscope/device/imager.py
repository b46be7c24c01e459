"""The imager: drives lights, focus and camera together to take one judged frame.

It is the only code that touches the camera and the controller during a
capture, and it serialises them with one lock, so an autofocus sweep and a
preview frame never interleave. Methods block; call them from a worker thread.

Captures and previews are corrected by the unit's flat-field and white-balance
calibration (:meth:`Imager.set_calibration`) before the quality gate sees
them, and say so in :attr:`Frame.calibration_id`; without a calibration they
pass through unchanged.
"""

from __future__ import annotations

import contextlib
import threading
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass, replace

from veriscope.device.camera import Camera
from veriscope.device.controller import Controller
from veriscope.device.errors import CameraError, InvalidArgument, VeriscopeError
from veriscope.device.pipeline import exposure, quality
from veriscope.device.pipeline.autofocus import AutofocusResult, autofocus
from veriscope.device.pipeline.calibration import Calibration
from veriscope.device.types import AppliedSettings, CaptureSettings, Frame, Lighting, RGBImage

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
METER_WIDTH_PX = 320
"""Width of the frames auto-exposure meters."""


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
        exposure_params: exposure.ExposureParams | None = None,
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
        self._thresholds = quality.check_overrides(quality_thresholds or {})
        self._lock = threading.RLock()
        self.exposure_params = exposure_params or exposure.ExposureParams(start_exposure_us=DEFAULT_EXPOSURE_US)
        """Targets and limits of auto-exposure."""
        self.exposure_us = self.exposure_params.start_exposure_us
        self.analogue_gain = DEFAULT_GAIN
        self._calibration: Calibration | None = None

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
        try:
            frame = self.camera.capture(resolved, width=width)
        except VeriscopeError:
            raise
        except Exception as exc:
            # A driver that lets its own error escape still fails as the camera, never as a bug of the daemon.
            raise CameraError(
                f"camera {self.camera.info.model} failed to capture: {type(exc).__name__}: {exc}"
            ) from exc
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

    def capture(self, settings: CaptureSettings, *, thresholds: Mapping[str, float] | None = None) -> JudgedFrame:
        """Light, expose at full resolution, switch the lights off, correct with the calibration, and run the gate.

        Unset exposure time and gain take the device defaults; scans find them with :meth:`auto_expose`.
        ``thresholds`` replace the gate overrides given at construction (a
        scan passes the bundle's overrides for the region's material).
        """
        with self._lock:
            try:
                frame = self._expose(settings, None)
            finally:
                self.controller.light_only(Lighting.OFF, 0)
        return self._judge(frame, thresholds)

    def capture_sequence(
        self,
        settings: CaptureSettings,
        channels: Sequence[Lighting],
        *,
        thresholds: Mapping[Lighting, Mapping[str, float]] | None = None,
    ) -> list[JudgedFrame]:
        """One full-resolution frame per lighting channel, in order, at the same focus; then every LED off.

        ``settings`` apply to every frame except its ``lighting``; an unset
        LED duty takes each channel's default. Each frame is corrected with the
        calibration and gated with its channel's defaults and, when given, the
        gate overrides in ``thresholds`` for its channel (else those given at
        construction).
        """
        if not channels:
            raise InvalidArgument("a lighting sequence needs at least one channel")
        with self._lock:
            try:
                frames = [self._expose(replace(settings, lighting=channel), None) for channel in channels]
            finally:
                self.controller.light_only(Lighting.OFF, 0)
        return [
            self._judge(frame, None if thresholds is None else thresholds.get(frame.settings.lighting))
            for frame in frames
        ]

    def _judge(self, frame: Frame, thresholds: Mapping[str, float] | None) -> JudgedFrame:
        frame = self.correct(frame)
        overrides = self._thresholds if thresholds is None else thresholds
        return JudgedFrame(frame, quality.assess(frame.pixels, overrides, lighting=frame.settings.lighting.value))

    def preview(self, width: int, lighting: Lighting = Lighting.WHITE_RING) -> Frame:
        """A low-resolution frame for the live preview, corrected with the calibration."""
        with self._lock:
            frame = self._expose(CaptureSettings(lighting=lighting), width)
        return self.correct(frame)

    # Exposure and calibration

    @property
    def calibration(self) -> Calibration | None:
        """The flat-field and white-balance calibration applied to captures, or None."""
        return self._calibration

    def set_calibration(self, calibration: Calibration | None) -> None:
        """Apply ``calibration`` to every later capture and preview (None: apply none)."""
        self._calibration = calibration

    def correct(self, frame: Frame) -> Frame:
        """``frame`` corrected by the calibration of its lighting channel and stamped with it; as it is without one."""
        calibration = self._calibration
        if calibration is None:
            return frame
        pixels = calibration.apply(frame.pixels, frame.settings.lighting)
        if pixels is None:
            return frame
        return replace(
            frame,
            pixels=pixels,
            calibration_id=calibration.calibration_id,
            calibration_time=calibration.create_time,
        )

    def auto_expose(
        self,
        lighting: Lighting = Lighting.WHITE_RING,
        params: exposure.ExposureParams | None = None,
        *,
        led_duty_pct: int | None = None,
        corrected: bool = True,
    ) -> exposure.ExposureResult:
        """Find the exposure time and gain that bring the metered percentile to its target, then switch the lights off.

        Meters ``METER_WIDTH_PX``-wide frames under ``lighting``; ``corrected``
        meters them after the calibration (as captures will be), otherwise as
        the camera gives them. ``params`` default to :attr:`exposure_params`.
        """
        with self._lock:
            try:
                return self._auto_expose(lighting, params or self.exposure_params, led_duty_pct, corrected)
            finally:
                self.controller.light_only(Lighting.OFF, 0)

    def _auto_expose(
        self, lighting: Lighting, params: exposure.ExposureParams, led_duty_pct: int | None, corrected: bool
    ) -> exposure.ExposureResult:
        width = min(METER_WIDTH_PX, self.camera.info.sensor_width)

        def meter(exposure_us: int, analogue_gain: float) -> exposure.Metering:
            settings = CaptureSettings(
                exposure_us=exposure_us, analogue_gain=analogue_gain, lighting=lighting, led_duty_pct=led_duty_pct
            )
            frame = self._expose(settings, width)
            if corrected:
                frame = self.correct(frame)
            level = exposure.percentile_level(frame.pixels, params.percentile)
            return exposure.Metering(level, frame.settings.exposure_us, frame.settings.analogue_gain)

        return exposure.auto_expose(meter, params)

    def uncorrected_frames(
        self, lighting: Lighting, found: exposure.ExposureResult, count: int, on_frame: Callable[[RGBImage], None]
    ) -> None:
        """Take ``count`` full-resolution frames at ``found``'s exposure, uncorrected, and hand each to ``on_frame``.

        For calibration. The lights go off afterwards.
        """
        settings = CaptureSettings(exposure_us=found.exposure_us, analogue_gain=found.analogue_gain, lighting=lighting)
        with self._lock:
            try:
                for _ in range(count):
                    on_frame(self._expose(settings, None).pixels)
            finally:
                self.controller.light_only(Lighting.OFF, 0)

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

            try:
                return autofocus(
                    self.controller.move_focus,
                    measure,
                    min_position=lo,
                    max_position=hi,
                    max_steps=max_steps,
                    coarse_samples=5 if refine else 21,
                )
            except BaseException:
                # A sweep that fails leaves no LED lit (they heat the board and the item); the error stands.
                with contextlib.suppress(Exception):
                    self.controller.light_only(Lighting.OFF, 0)
                raise
