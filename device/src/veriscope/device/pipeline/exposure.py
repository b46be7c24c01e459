"""Auto-exposure: bring a chosen percentile of the linear image to a target level in a bounded number of frames.

The metered value is a high percentile (the 99th by default) of the frame's
linear luminance: it follows the brightest real detail of the surface and
ignores a few specular glints, so a well-exposed frame keeps its highlights
just below clipping. Exposure time changes first; analogue gain rises above
1.0 only once the exposure time is at its limit, because gain amplifies the
noise as well.

An exposure whose level already lies within ``tolerance`` of the target is
kept as it is: captures of ordinary surfaces then stay at the exposure the
model was trained at, and only surfaces that are much too dark or too bright
are corrected.

Like autofocus, the search sees only a callable, so it works with any camera.
The scan manager runs it once per scan and lighting channel and locks the result
for every later capture of the scan.
"""

from __future__ import annotations

import math
from collections.abc import Callable
from dataclasses import dataclass

import numpy as np

from veriscope.device.errors import InvalidArgument
from veriscope.device.pipeline import tone
from veriscope.device.types import RGBImage

SATURATED_LEVEL = 0.98
"""A metered level at or above this is clipped: it says the frame is too bright, not by how much."""
_SATURATED_STEP = 0.25
"""Factor applied to a clipped frame's exposure (the ratio to the target cannot be measured)."""
_MAX_STEP = 16.0
"""Largest factor by which one step changes exposure time times gain, either way."""
_DARK_LEVEL = 1e-4


@dataclass(frozen=True)
class ExposureParams:
    """What auto-exposure aims for and the limits it keeps to.

    Raises :class:`InvalidArgument` on construction for values outside their ranges.
    """

    percentile: float = 99.0
    """Percentile of the linear luminance that is metered, 50..100."""
    target_level: float = 0.33
    """Level, as a fraction of full scale (0.05..0.95), that the metered percentile is brought to."""
    tolerance: float = 0.3
    """Relative distance from the target (0.02..0.6) within which an exposure is accepted as it is."""
    start_exposure_us: int = 8000
    """Exposure time the search starts from, in microseconds."""
    min_exposure_us: int = 20
    """Shortest exposure time the search uses, in microseconds."""
    max_exposure_us: int = 100_000
    """Longest exposure time the search uses before it raises the gain, in microseconds."""
    max_analogue_gain: float = 8.0
    """Highest analogue gain the search uses, 1..16."""
    max_frames: int = 8
    """Most frames one search may take, 1..50."""

    def __post_init__(self) -> None:
        if not 50.0 <= self.percentile <= 100.0:
            raise InvalidArgument(f"exposure percentile must be 50..100, got {self.percentile}")
        if not 0.05 <= self.target_level <= 0.95:
            raise InvalidArgument(f"exposure target_level must be 0.05..0.95, got {self.target_level}")
        if not 0.02 <= self.tolerance <= 0.6:
            raise InvalidArgument(f"exposure tolerance must be 0.02..0.6, got {self.tolerance}")
        if not 1 <= self.min_exposure_us <= self.start_exposure_us <= self.max_exposure_us <= 1_000_000:
            raise InvalidArgument(
                "exposure times must satisfy 1 <= min_exposure_us <= start_exposure_us <= max_exposure_us "
                f"<= 1000000, got {self.min_exposure_us}, {self.start_exposure_us}, {self.max_exposure_us}"
            )
        if not 1.0 <= self.max_analogue_gain <= 16.0:
            raise InvalidArgument(f"exposure max_analogue_gain must be 1..16, got {self.max_analogue_gain}")
        if not 1 <= self.max_frames <= 50:
            raise InvalidArgument(f"exposure max_frames must be 1..50, got {self.max_frames}")

    def accepts(self, level: float) -> bool:
        """True when a metered ``level`` lies within the tolerance of the target."""
        return abs(level - self.target_level) <= self.tolerance * self.target_level


@dataclass(frozen=True)
class Metering:
    """One metered frame: the level of its percentile and the exposure the camera reports it used."""

    level: float
    """The metered percentile of the linear luminance, 0..1 of full scale."""
    exposure_us: int
    analogue_gain: float


@dataclass(frozen=True)
class ExposureResult:
    """Outcome of an auto-exposure search."""

    converged: bool
    """True when the metered level reached the target within the tolerance."""
    exposure_us: int
    """The chosen exposure time: the converged one, else the frame closest to the target."""
    analogue_gain: float
    level: float
    """The metered level at the chosen exposure, 0..1 of full scale."""
    target_level: float
    frames: int
    """Number of frames metered."""
    history: tuple[Metering, ...]
    """Every metered frame, in order."""
    reason: str = ""
    """Why the search did not converge; empty when it did."""


def percentile_level(pixels: RGBImage, percentile: float) -> float:
    """The ``percentile`` (0..100) of the linear luminance of 8-bit sRGB ``pixels``, 0..1 of full scale."""
    return float(np.percentile(tone.luminance(tone.to_linear(pixels)), percentile))


def auto_expose(
    meter: Callable[[int, float], Metering],
    params: ExposureParams,
    *,
    start_exposure_us: int | None = None,
    start_gain: float = 1.0,
) -> ExposureResult:
    """Search exposure time and gain until ``meter`` reads the target level, in at most ``params.max_frames`` frames.

    ``meter(exposure_us, analogue_gain)`` exposes one frame with those settings
    and returns its :class:`Metering`. Each step scales exposure time times gain
    by target / level (at most 16 times either way, and by 1/4 for a clipped
    frame), spending exposure time first and gain only beyond
    ``params.max_exposure_us``. The search stops early when the limits allow no
    further change (a surface too dark at the longest exposure and highest
    gain, or too bright at the shortest exposure). Errors of ``meter`` propagate.
    """
    exposure = _clamp_int(start_exposure_us or params.start_exposure_us, params.min_exposure_us, params.max_exposure_us)
    gain = min(max(start_gain, 1.0), params.max_analogue_gain)
    history: list[Metering] = []
    reason = ""
    while len(history) < params.max_frames:
        metering = meter(exposure, gain)
        history.append(metering)
        if params.accepts(metering.level):
            return _result(True, metering, params, history)
        want = _next_total(metering, params.target_level)
        next_exposure = _clamp_int(want, params.min_exposure_us, params.max_exposure_us)
        next_gain = round(min(max(want / next_exposure, 1.0), params.max_analogue_gain), 3)
        if (next_exposure, next_gain) == (exposure, gain):
            too_dark = metering.level < params.target_level
            reason = (
                f"too dark at the longest exposure ({exposure} us) and highest gain ({gain:g})"
                if too_dark
                else f"too bright at the shortest exposure ({exposure} us)"
            )
            break
        exposure, gain = next_exposure, next_gain
    else:
        reason = f"did not reach the target within {params.max_frames} frames"
    # Closest to the target; of equals (all black, say) the latest, which went furthest.
    best = min(reversed(history), key=lambda m: abs(math.log(max(m.level, 1e-12) / params.target_level)))
    return _result(False, best, params, history, reason)


def _next_total(metering: Metering, target: float) -> float:
    """Exposure time times gain (us) that should bring the metered level to ``target``."""
    total = max(metering.exposure_us, 1) * max(metering.analogue_gain, 1.0)
    if metering.level >= SATURATED_LEVEL:
        factor = _SATURATED_STEP
    elif metering.level <= _DARK_LEVEL:
        factor = _MAX_STEP
    else:
        factor = min(max(target / metering.level, 1.0 / _MAX_STEP), _MAX_STEP)
    return total * factor


def _clamp_int(value: float, lo: int, hi: int) -> int:
    return int(min(max(round(value), lo), hi))


def _result(
    converged: bool, chosen: Metering, params: ExposureParams, history: list[Metering], reason: str = ""
) -> ExposureResult:
    return ExposureResult(
        converged=converged,
        exposure_us=chosen.exposure_us,
        analogue_gain=chosen.analogue_gain,
        level=chosen.level,
        target_level=params.target_level,
        frames=len(history),
        history=tuple(history),
        reason=reason,
    )
