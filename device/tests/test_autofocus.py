import math

import pytest

from veriscope.device.errors import InvalidArgument
from veriscope.device.pipeline.autofocus import autofocus


class FakeDrive:
    """A focus drive with backlash: reversing direction loses ``backlash`` steps of real travel."""

    def __init__(self, peak: int, width: float, backlash: int = 0) -> None:
        self.peak, self.width, self.backlash = peak, width, backlash
        self.commanded = 0
        self.real = 0.0
        self.moving_up = True
        self.moves: list[int] = []

    def move(self, target: int) -> int:
        up = target >= self.commanded
        if up != self.moving_up:
            self.real += self.backlash if up else -self.backlash
            self.moving_up = up
        self.real += target - self.commanded
        self.commanded = target
        self.moves.append(target)
        return target

    def measure(self) -> float:
        # Reported sharpness depends on where the lens really is, which backlash shifts.
        lens = self.real - (0 if self.moving_up else self.backlash)
        d = (lens - self.peak) / self.width
        return 1.0 + 100.0 * math.exp(-d * d) + 5.0 / (1.0 + abs(lens - self.peak) / 80.0)


@pytest.mark.parametrize("peak", [37, 250, 437, 761])
def test_converges_within_bounded_steps(peak: int) -> None:
    drive = FakeDrive(peak, 15.0)
    result = autofocus(drive.move, drive.measure, min_position=0, max_position=800, max_steps=40)
    assert result.converged
    assert abs(result.best_position - peak) <= 1
    assert result.steps_taken <= 40
    assert len(result.curve) == result.steps_taken
    assert drive.commanded == result.best_position


def test_approaches_from_below_so_backlash_does_not_matter() -> None:
    drive = FakeDrive(400, 15.0, backlash=6)
    result = autofocus(drive.move, drive.measure, min_position=0, max_position=800, backlash_steps=8)
    assert abs(result.best_position - 400) <= 1
    # The drive ends on an upward move, the direction every sample was measured in.
    assert drive.moving_up


def test_flat_curve_does_not_converge() -> None:
    result = autofocus(lambda t: t, lambda: 1.0, min_position=0, max_position=800)
    assert not result.converged


def test_bad_ranges_are_refused() -> None:
    with pytest.raises(InvalidArgument):
        autofocus(lambda t: t, lambda: 1.0, min_position=10, max_position=10)
    with pytest.raises(InvalidArgument):
        autofocus(lambda t: t, lambda: 1.0, min_position=0, max_position=10, max_steps=2)
