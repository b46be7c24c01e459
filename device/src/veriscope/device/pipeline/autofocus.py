"""Contrast-based autofocus: a coarse sweep, then a golden-section search around the peak.

The search only ever approaches a position from below (moving up), so a focus
drive with backlash lands where it was measured: before a move downwards it
overshoots by ``backlash_steps`` and comes back up. It works on any focus drive
(the controller's stepper, or a camera lens scaled to integer positions)
because it sees only two callables: move and measure.
"""

from __future__ import annotations

import math
from collections.abc import Callable
from dataclasses import dataclass

from veriscope.device.errors import InvalidArgument

_GOLDEN = (math.sqrt(5.0) - 1.0) / 2.0


@dataclass(frozen=True)
class FocusSample:
    """Sharpness measured at one focus position."""

    position: int
    sharpness: float


@dataclass(frozen=True)
class AutofocusResult:
    """Outcome of a focus search."""

    converged: bool
    """True when the peak lies inside the range and is clearly above the background."""
    best_position: int
    best_sharpness: float
    curve: tuple[FocusSample, ...]
    """Every measurement, in the order taken."""
    steps_taken: int
    """Number of frames measured."""


class _Drive:
    """Moves with backlash compensation and records every measurement."""

    def __init__(self, move: Callable[[int], int], measure: Callable[[], float], lo: int, backlash: int) -> None:
        self._move = move
        self._measure = measure
        self._lo = lo
        self._backlash = backlash
        self._pos: int | None = None
        self.curve: list[FocusSample] = []
        self.cache: dict[int, float] = {}

    def goto(self, target: int) -> None:
        if self._pos is not None and target < self._pos and self._backlash:
            self._move(max(self._lo, target - self._backlash))
        self._pos = self._move(target)

    def sample(self, target: int) -> float:
        if target in self.cache:
            return self.cache[target]
        self.goto(target)
        value = float(self._measure())
        self.cache[target] = value
        self.curve.append(FocusSample(target, value))
        return value


def autofocus(
    move: Callable[[int], int],
    measure: Callable[[], float],
    *,
    min_position: int,
    max_position: int,
    max_steps: int = 40,
    coarse_samples: int = 21,
    backlash_steps: int = 8,
    min_peak_ratio: float = 1.5,
) -> AutofocusResult:
    """Find the sharpest focus position between ``min_position`` and ``max_position``.

    ``move(target)`` drives focus to an absolute position and returns where it
    arrived; ``measure()`` returns the sharpness of a frame taken there. The
    search takes at most ``max_steps`` measurements: ``coarse_samples`` evenly
    spaced, then a golden-section search in the bracket around the best coarse
    sample, down to one position. It ends at the best position seen.

    ``converged`` is False when the best sharpness is less than ``min_peak_ratio``
    times the median of the sweep (a flat curve: nothing to focus on), or when
    the peak sits on an end of the range.
    """
    if max_position <= min_position:
        raise InvalidArgument(f"focus range {min_position}..{max_position} is empty")
    if max_steps < 5:
        raise InvalidArgument(f"max_steps must be at least 5, got {max_steps}")
    coarse_samples = max(3, min(coarse_samples, max_steps - 2))
    drive = _Drive(move, measure, min_position, backlash_steps)
    span = max_position - min_position
    positions = sorted({min_position + round(i * span / (coarse_samples - 1)) for i in range(coarse_samples)})
    # Sweep upwards only: one direction means no backlash between coarse samples.
    for p in positions:
        drive.sample(p)
    values = [drive.cache[p] for p in positions]
    peak = max(range(len(positions)), key=lambda i: values[i])
    lo = positions[max(0, peak - 1)]
    hi = positions[min(len(positions) - 1, peak + 1)]

    # Golden-section search for the maximum in [lo, hi] on integer positions.
    a, b = lo, hi
    while b - a > 2 and len(drive.curve) < max_steps - 1:
        c = round(b - _GOLDEN * (b - a))
        d = round(a + _GOLDEN * (b - a))
        if c == d:
            d = c + 1
        if drive.sample(c) >= drive.sample(d):
            b = d
        else:
            a = c
    for p in range(a, b + 1):
        if len(drive.curve) >= max_steps:
            break
        drive.sample(p)

    best = max(drive.curve, key=lambda s: s.sharpness)
    drive.goto(best.position)
    ordered = sorted(values)
    median = ordered[len(ordered) // 2]
    at_edge = best.position in (min_position, max_position)
    converged = not at_edge and best.sharpness >= min_peak_ratio * max(median, 1e-12)
    return AutofocusResult(
        converged=converged,
        best_position=best.position,
        best_sharpness=best.sharpness,
        curve=tuple(drive.curve),
        steps_taken=len(drive.curve),
    )
