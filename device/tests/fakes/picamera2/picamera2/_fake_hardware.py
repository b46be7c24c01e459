"""The simulated sensors behind the fake picamera2, and the hooks tests use to drive them.

A :class:`FakeCamera` is one physical camera on a CSI port: a sensor and the
image pipeline (AE, AWB, lens) running on a *virtual* clock, so tests are
fast and deterministic. Each frame's ``SensorTimestamp`` is on that clock;
code under test reads it through :meth:`FakeCamera.clock_ns` (on a Pi the
same clock is ``time.monotonic_ns``).

Tests use :func:`attach` to plug a camera in, :func:`detach_all` to unplug
everything, and the ``FakeCamera`` hooks: :meth:`~FakeCamera.elapse` (let
time pass while nobody asks for frames), :meth:`~FakeCamera.set_illumination`
(the scene gets brighter or darker from now on), :meth:`~FakeCamera.fail_next`
(the next frame request raises), and the counters ``configure_count``,
``controls_log``, ``frames_delivered`` and ``outstanding_requests``.
"""

from __future__ import annotations

import math
from collections.abc import Iterator
from dataclasses import dataclass, field
from typing import Any

import numpy as np
from libcamera import controls as lc

CONTROL_LATENCY_FRAMES = 2
"""Frames between the request that carries a control and the first frame exposed with it."""
_AE_TARGET_TOTAL_US = 10_000.0
"""Exposure time x gain that AE aims for under illumination 1.0."""
_AE_MAX_EXPOSURE_US = 33_333
_AE_STEP = 0.5
"""Fraction of the remaining error AE corrects per frame."""
_AWB_GAINS = (2.0, 1.6)
"""Red and blue gains that AWB settles on for the simulated white LEDs."""
_LENS_SPEED_DIOPTRES = 1.5
"""How far the lens moves per frame."""
_FOCUSED_DIOPTRES = 4.2
"""Lens position that focuses the simulated scene (continuous AF settles there)."""
_READOUT_OVERHEAD_US = 1_000
_EXPOSURE_MARGIN_US = 100
"""Exposure must end this long before the frame does."""


@dataclass(frozen=True)
class SensorSpec:
    """What one camera module is: libcamera's properties and advertised controls."""

    model: str
    pixel_array_size: tuple[int, int]
    unit_cell_size: tuple[int, int]
    line_time_us: float
    """Exposure time is a whole number of lines of this duration."""
    full_res_fps: float
    binned_fps: float
    controls: dict[str, tuple[Any, Any, Any]]
    """Control name -> (min, max, default), as ``Picamera2.camera_controls`` gives them."""

    @property
    def has_lens(self) -> bool:
        """True when the module has a focus lens (a VCM)."""
        return "LensPosition" in self.controls


_COMMON_CONTROLS: dict[str, tuple[Any, Any, Any]] = {
    "AeEnable": (False, True, None),
    "AeMeteringMode": (0, 3, 0),
    "AeConstraintMode": (0, 3, 0),
    "AeExposureMode": (0, 3, 0),
    "AwbEnable": (False, True, None),
    "AwbMode": (0, 7, 0),
    "Brightness": (-1.0, 1.0, 0.0),
    "Contrast": (0.0, 32.0, 1.0),
    "Saturation": (0.0, 32.0, 1.0),
    "Sharpness": (0.0, 16.0, 1.0),
    "ColourGains": (0.0, 32.0, None),
    "ExposureValue": (-8.0, 8.0, 0.0),
    "NoiseReductionMode": (0, 4, 0),
}

_LENS_CONTROLS: dict[str, tuple[Any, Any, Any]] = {
    "AfMode": (0, 2, 0),
    "AfRange": (0, 2, 0),
    "AfSpeed": (0, 1, 0),
    "AfMetering": (0, 1, 0),
    "AfTrigger": (0, 1, 0),
    "AfPause": (0, 2, 0),
    "LensPosition": (0.0, 15.0, 1.0),
}

IMX477 = SensorSpec(
    model="imx477",
    pixel_array_size=(4056, 3040),
    unit_cell_size=(1550, 1550),
    line_time_us=18.6,
    full_res_fps=10.0,
    binned_fps=40.0,
    controls={
        **_COMMON_CONTROLS,
        "AnalogueGain": (1.0, 22.2608699798584, None),
        "ExposureTime": (114, 694422939, None),
        "FrameDurationLimits": (25000, 694434742, None),
        "ScalerCrop": ((0, 0, 128, 128), (0, 0, 4056, 3040), (0, 0, 4056, 3040)),
    },
)
"""The HQ camera: fixed focus, focused by moving the optics."""

IMX708 = SensorSpec(
    model="imx708",
    pixel_array_size=(4608, 2592),
    unit_cell_size=(1400, 1400),
    line_time_us=9.7,
    full_res_fps=14.0,
    binned_fps=56.0,
    controls={
        **_COMMON_CONTROLS,
        **_LENS_CONTROLS,
        "AnalogueGain": (1.1228070259094238, 16.0, None),
        "ExposureTime": (26, 112015443, None),
        "FrameDurationLimits": (17849, 112154115, None),
        "ScalerCrop": ((0, 0, 64, 64), (0, 0, 4608, 2592), (0, 0, 4608, 2592)),
    },
)
"""Camera Module 3: a focus lens set in dioptres."""

_LIBCAMERA_05_CONTROLS: dict[str, tuple[Any, Any, Any]] = {
    "ExposureTimeMode": (0, 1, 0),
    "AnalogueGainMode": (0, 1, 0),
}


@dataclass
class _FrameParams:
    """Everything needed to render one frame and report its metadata."""

    sequence: int
    timestamp_ns: int
    exposure_us: int
    analogue_gain: float
    colour_gains: tuple[float, float]
    illumination: float
    frame_duration_us: int
    ae_converged: bool
    lens_position: float | None
    af_state: int | None


@dataclass
class _ExposureState:
    manual: bool = False
    value: float = 0.0
    """The fixed value when manual; also the last manual request."""


@dataclass
class FakeCamera:
    """One attached camera: sensor, AE/AWB/AF and a virtual clock."""

    spec: SensorSpec
    number: int
    libcamera_05: bool = False
    """Emulate libcamera 0.5+: ExposureTimeMode/AnalogueGainMode controls and AeState metadata."""
    af_mode: int = lc.AfModeEnum.Manual
    """The lens's AF mode when the camera is opened (libcamera's default is manual)."""

    acquired: bool = False
    configure_count: int = 0
    controls_log: list[dict[str, Any]] = field(default_factory=list)
    """Every set of controls sent, by ``set_controls`` or in a configuration, in order."""
    outstanding_requests: int = 0
    """Completed requests handed out and not yet released."""
    frames_delivered: int = 0
    """Frames handed to the application (each ``capture_request``)."""

    _now_ns: int = 1_000_000_000_000
    _illumination: list[tuple[int, float]] = field(default_factory=lambda: [(0, 1.0)])
    _fault: BaseException | None = None
    _pending: list[tuple[int, dict[str, Any]]] = field(default_factory=list)
    _exposure: _ExposureState = field(default_factory=_ExposureState)
    _gain: _ExposureState = field(default_factory=_ExposureState)
    _ae_total_us: float = 20_000.0
    _ae_exposure_us: float = 20_000.0
    _ae_gain: float = 1.0
    _awb: bool = True
    _colour_gains: tuple[float, float] = _AWB_GAINS
    _lens_target: float = 1.0
    _lens_position: float = 1.0
    _frame_duration_limits: tuple[int, int] = (100, 1_000_000_000)
    _binned: bool = False
    _last_ts: int = 0
    _sequence: int = 0
    _last_delivered_ts: int = 0

    # ---- hooks for tests -------------------------------------------------

    def clock_ns(self) -> int:
        """The camera's clock, in ns: the domain of ``SensorTimestamp``."""
        return self._now_ns

    def elapse(self, seconds: float) -> None:
        """Let time pass while the camera keeps streaming and nobody collects frames."""
        self._now_ns += int(seconds * 1e9)

    def set_illumination(self, level: float) -> None:
        """From now on the scene is lit at ``level`` (1.0 is the nominal LED ring)."""
        self._illumination.append((self._now_ns, level))

    def fail_next(self, exc: BaseException) -> None:
        """Make the next frame request raise ``exc`` (a camera that stopped streaming, a dead cable)."""
        self._fault = exc

    @property
    def controls(self) -> dict[str, tuple[Any, Any, Any]]:
        """The controls this camera advertises: name -> (min, max, default)."""
        if self.libcamera_05:
            return {**self.spec.controls, **_LIBCAMERA_05_CONTROLS}
        return dict(self.spec.controls)

    @property
    def camera_id(self) -> str:
        """libcamera's id string for the camera."""
        return f"/base/soc/i2c0mux/i2c@{9 - self.number}/{self.spec.model}@1a"

    # ---- used by the fake Picamera2 ------------------------------------------

    def take_fault(self) -> BaseException | None:
        fault, self._fault = self._fault, None
        return fault

    def configure_sensor(self, raw_size: tuple[int, int], controls: dict[str, Any]) -> None:
        """Pick the sensor mode for a configuration and replace any undelivered controls with ``controls``."""
        full_w, full_h = self.spec.pixel_array_size
        self._binned = raw_size[0] <= full_w // 2 and raw_size[1] <= full_h // 2
        self._pending = [(0, dict(controls))] if controls else []
        self.controls_log.append(dict(controls))
        self.configure_count += 1

    def start(self) -> None:
        """Start streaming: controls sent before the start apply from the first frame."""
        self._last_ts = self._now_ns
        self._last_delivered_ts = self._now_ns
        self._pending = [(0, c) for _, c in self._pending]

    def queue_controls(self, controls: dict[str, Any], *, started: bool) -> None:
        """Controls ride on the next request, so they reach the sensor a couple of frames from now."""
        self.controls_log.append(dict(controls))
        at = self._now_ns + CONTROL_LATENCY_FRAMES * self._min_frame_duration_us() * 1000 if started else 0
        self._pending.append((at, dict(controls)))

    def next_frame(self, *, queue: bool, flush_ns: int | None) -> _FrameParams:
        """The frame a ``capture_request`` made now gets.

        With ``queue`` picamera2 keeps the last completed frame, so a caller
        that has been idle gets that one at once, although it was exposed
        before the call. Otherwise (or when it was already handed out) the
        caller gets the next frame to complete, which may have started its
        exposure before the call too.
        """
        for chosen in self._candidates(queue=queue):
            if flush_ns is None or chosen.timestamp_ns - chosen.exposure_us * 1000 >= flush_ns:
                break
        self._now_ns = max(self._now_ns, chosen.timestamp_ns)
        self._last_delivered_ts = chosen.timestamp_ns
        self.frames_delivered += 1
        return chosen

    def _candidates(self, *, queue: bool) -> Iterator[_FrameParams]:
        latest: _FrameParams | None = None
        frame = self._produce()
        while frame.timestamp_ns <= self._now_ns:
            latest = frame
            frame = self._produce()
        if queue and latest is not None and latest.timestamp_ns > self._last_delivered_ts:
            yield latest
        while True:
            yield frame
            frame = self._produce()

    def render(self, frame: _FrameParams, size: tuple[int, int]) -> np.ndarray:
        """The frame as H x W x 3 uint8 **RGB** (the fake Picamera2 reorders for the stream format)."""
        scale = frame.illumination * frame.exposure_us * frame.analogue_gain / _AE_TARGET_TOTAL_US * 0.8
        gains = np.array(
            [frame.colour_gains[0] / _AWB_GAINS[0], 1.0, frame.colour_gains[1] / _AWB_GAINS[1]], dtype=np.float32
        )
        image = _scene(size) * np.float32(scale) * gains
        return np.clip(image * 255.0 + 0.5, 0, 255).astype(np.uint8)

    # ---- the sensor and its algorithms -----------------------------------------

    def _min_frame_duration_us(self) -> int:
        fps = self.spec.binned_fps if self._binned else self.spec.full_res_fps
        return int(1e6 / fps)

    def _illumination_at(self, t_ns: int) -> float:
        level = 1.0
        for at, value in self._illumination:
            if at <= t_ns:
                level = value
        return level

    def _apply(self, controls: dict[str, Any]) -> None:
        lo_exp, hi_exp, _ = self.spec.controls["ExposureTime"]
        lo_gain, hi_gain, _ = self.spec.controls["AnalogueGain"]
        # Mode controls first, then values, as the pipeline handles them.
        if "AeEnable" in controls:
            manual = not controls["AeEnable"]
            for state, current in ((self._exposure, self._ae_exposure_us), (self._gain, self._ae_gain)):
                if manual and not state.manual:
                    state.value = current
                state.manual = manual
        for name, state, current in (
            ("ExposureTimeMode", self._exposure, self._ae_exposure_us),
            ("AnalogueGainMode", self._gain, self._ae_gain),
        ):
            if name in controls:
                manual = int(controls[name]) == 1
                if manual and not state.manual:
                    state.value = current
                state.manual = manual
        if "ExposureTime" in controls:
            value = int(controls["ExposureTime"])
            if self.libcamera_05:
                self._exposure.value = float(min(max(value, lo_exp), hi_exp))
            else:
                # Before libcamera 0.5 a non-zero exposure time fixes it and 0 hands it back to AE.
                self._exposure.manual = value != 0
                if value:
                    self._exposure.value = float(min(max(value, lo_exp), hi_exp))
        if "AnalogueGain" in controls:
            gain = float(controls["AnalogueGain"])
            if self.libcamera_05:
                self._gain.value = min(max(gain, lo_gain), hi_gain)
            else:
                self._gain.manual = gain != 0.0
                if gain:
                    self._gain.value = min(max(gain, lo_gain), hi_gain)
        if "AwbEnable" in controls:
            self._awb = bool(controls["AwbEnable"])
        if "ColourGains" in controls:
            red, blue = controls["ColourGains"]
            self._colour_gains = (float(red), float(blue))
            self._awb = False
        if "FrameDurationLimits" in controls:
            lo, hi = controls["FrameDurationLimits"]
            self._frame_duration_limits = (int(lo), int(hi))
        if self.spec.has_lens:
            if "AfMode" in controls:
                self.af_mode = int(controls["AfMode"])
            if "LensPosition" in controls and self.af_mode == lc.AfModeEnum.Manual:
                lo, hi, _ = self.spec.controls["LensPosition"]
                self._lens_target = min(max(float(controls["LensPosition"]), lo), hi)

    def _produce(self) -> _FrameParams:
        """Expose the next frame on the sensor's timeline and advance the algorithms by one frame."""
        min_fd = self._min_frame_duration_us()
        provisional_ts = self._last_ts + max(min_fd, self._frame_duration_limits[0]) * 1000
        ready = [c for at, c in self._pending if at <= provisional_ts]
        self._pending = [(at, c) for at, c in self._pending if at > provisional_ts]
        for controls in ready:
            self._apply(controls)
        limit_lo, limit_hi = self._frame_duration_limits

        start_guess_ns = self._last_ts
        illumination = self._illumination_at(start_guess_ns)
        target_total = _AE_TARGET_TOTAL_US / max(illumination, 1e-3)
        self._ae_total_us += _AE_STEP * (target_total - self._ae_total_us)
        ae_converged = abs(self._ae_total_us - target_total) <= 0.02 * target_total

        max_exposure = max(limit_hi - _EXPOSURE_MARGIN_US, 1)
        if self._exposure.manual:
            exposure = min(self._exposure.value, max_exposure)
        elif self._gain.manual:
            exposure = min(self._ae_total_us / self._gain.value, max_exposure)
        else:
            exposure = min(self._ae_total_us, _AE_MAX_EXPOSURE_US, max_exposure)
        lines = max(1, round(exposure / self.spec.line_time_us))
        exposure_us = int(lines * self.spec.line_time_us)
        gain = self._gain.value if self._gain.manual else self._ae_total_us / max(exposure_us, 1)
        gain = _quantise_gain(gain, *self.spec.controls["AnalogueGain"][:2])
        self._ae_exposure_us, self._ae_gain = float(exposure_us), gain

        frame_duration_us = min(max(min_fd, limit_lo, exposure_us + _READOUT_OVERHEAD_US), max(limit_hi, min_fd))
        timestamp_ns = self._last_ts + frame_duration_us * 1000
        self._last_ts = timestamp_ns
        self._sequence += 1

        lens: float | None = None
        af_state: int | None = None
        if self.spec.has_lens:
            if self.af_mode == lc.AfModeEnum.Continuous:
                self._lens_target = _FOCUSED_DIOPTRES
            step = max(-_LENS_SPEED_DIOPTRES, min(_LENS_SPEED_DIOPTRES, self._lens_target - self._lens_position))
            self._lens_position = round(self._lens_position + step, 6)
            lens = self._lens_position
            af_state = lc.AfStateEnum.Idle if self.af_mode == lc.AfModeEnum.Manual else lc.AfStateEnum.Scanning
        if self._awb:
            self._colour_gains = _AWB_GAINS
        return _FrameParams(
            sequence=self._sequence,
            timestamp_ns=timestamp_ns,
            exposure_us=exposure_us,
            analogue_gain=gain,
            colour_gains=self._colour_gains,
            illumination=self._illumination_at(timestamp_ns - exposure_us * 1000),
            frame_duration_us=frame_duration_us,
            ae_converged=ae_converged and not (self._exposure.manual and self._gain.manual),
            lens_position=lens,
            af_state=af_state,
        )

    def metadata(self, frame: _FrameParams, size: tuple[int, int]) -> dict[str, Any]:
        """The frame's metadata, with picamera2's keys and Python types."""
        lux = 400.0 * frame.illumination
        md: dict[str, Any] = {
            "SensorTimestamp": frame.timestamp_ns,
            "ScalerCrop": (0, 0, *self.spec.pixel_array_size),
            "ExposureTime": frame.exposure_us,
            "AnalogueGain": frame.analogue_gain,
            "DigitalGain": 1.0,
            "ColourGains": frame.colour_gains,
            "ColourTemperature": 4500,
            "ColourCorrectionMatrix": (1.7, -0.5, -0.2, -0.3, 1.6, -0.3, 0.0, -0.6, 1.6),
            "SensorBlackLevels": (4096, 4096, 4096, 4096),
            "FrameDuration": frame.frame_duration_us,
            "Lux": lux,
            "FocusFoM": _focus_fom(frame.lens_position, size),
        }
        if self.libcamera_05:
            converged = lc.AeStateEnum.Converged if frame.ae_converged else lc.AeStateEnum.Searching
            md["AeState"] = int(converged)
        else:
            md["AeLocked"] = frame.ae_converged
        if frame.lens_position is not None:
            md["LensPosition"] = frame.lens_position
            md["AfState"] = int(frame.af_state or 0)
        return md


def _quantise_gain(gain: float, lo: float, hi: float) -> float:
    """Sony sensors set gain as a code: gain = 1024 / (1024 - code)."""
    gain = min(max(gain, lo), hi)
    code = round(1024 - 1024 / gain)
    quantised = 1024 / (1024 - code)
    return min(max(quantised, lo), hi)


def _focus_fom(lens_position: float | None, size: tuple[int, int]) -> int:
    base = size[0] * size[1] / 1000
    if lens_position is None:
        return int(base)
    return int(base * math.exp(-((lens_position - _FOCUSED_DIOPTRES) ** 2)))


_SCENES: dict[tuple[int, int], np.ndarray] = {}


def _scene(size: tuple[int, int]) -> np.ndarray:
    """The scene in RGB at reflectance scale: a red patch at top left, colour ramps elsewhere."""
    if size not in _SCENES:
        w, h = size
        x = np.linspace(0.0, 1.0, w, dtype=np.float32)[None, :]
        y = np.linspace(0.0, 1.0, h, dtype=np.float32)[:, None]
        scene = np.empty((h, w, 3), dtype=np.float32)
        scene[..., 0] = 0.35 + 0.25 * x
        scene[..., 1] = 0.35 + 0.25 * y
        scene[..., 2] = 0.45
        scene[: h // 4, : w // 4] = (0.8, 0.1, 0.05)
        _SCENES.clear()
        _SCENES[size] = scene
    return _SCENES[size]


_CAMERAS: list[FakeCamera] = []


def attach(spec: SensorSpec = IMX477, **options: Any) -> FakeCamera:
    """Plug a camera into the next free port and return it. ``options`` set :class:`FakeCamera` fields."""
    camera = FakeCamera(spec=spec, number=len(_CAMERAS), **options)
    _CAMERAS.append(camera)
    return camera


def detach_all() -> None:
    """Unplug every camera."""
    _CAMERAS.clear()


def cameras() -> list[FakeCamera]:
    """The attached cameras, by libcamera number."""
    return list(_CAMERAS)
