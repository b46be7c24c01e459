"""A simulated controller board: LEDs and a focus motor whose state the simulated camera sees.

It keeps its state on a :class:`~veriscope.device.bench.SimBench`, the shared
simulated world, so lighting a channel here lights the virtual item under the
simulated camera, and moving the focus motor moves the simulated focal plane.
"""

from __future__ import annotations

import threading
from collections.abc import Mapping

from veriscope.device.bench import SimBench
from veriscope.device.controller import Controller, ControllerInfo, FocusRange
from veriscope.device.errors import InvalidArgument
from veriscope.device.types import Lighting

FIRMWARE_VERSION = "1.0.0"
PROTOCOL_VERSION = 1
SIM_FOCUS_RANGE = FocusRange(0, 800)
"""Soft limits of the simulated focus motor: 800 steps of 2.5 um, 2 mm of travel."""


class SimulatedController(Controller):
    """A controller that acts on the simulated bench instead of real pins."""

    def __init__(self, bench: SimBench, *, focus_range: FocusRange = SIM_FOCUS_RANGE) -> None:
        self._bench = bench
        self._range = focus_range
        self._lock = threading.Lock()

    @property
    def info(self) -> ControllerInfo:
        """Identity of the simulated board."""
        return ControllerInfo("simulated", FIRMWARE_VERSION, PROTOCOL_VERSION, "sim")

    def set_leds(self, duty_pct: Mapping[Lighting, int]) -> None:
        """Set channel duties (0..100 %)."""
        for channel, duty in duty_pct.items():
            if channel is Lighting.OFF:
                raise InvalidArgument("lighting 'off' is not a channel; set the channels to 0 instead")
            if not 0 <= duty <= 100:
                raise InvalidArgument(f"LED duty for {channel} must be 0..100 %, got {duty}")
        with self._lock:
            self._bench.set_leds(dict(duty_pct))

    def leds(self) -> dict[Lighting, int]:
        """Current duty of every channel."""
        return self._bench.leds()

    @property
    def focus_range(self) -> FocusRange:
        """Soft limits of the focus motor."""
        return self._range

    def move_focus(self, target_steps: int) -> int:
        """Move the focus motor; the simulated motor arrives at once."""
        if not self._range.min_steps <= target_steps <= self._range.max_steps:
            raise InvalidArgument(
                f"focus target {target_steps} is outside the soft limits {self._range.min_steps}..{self._range.max_steps}"
            )
        with self._lock:
            self._bench.set_focus_steps(target_steps)
            return target_steps

    def focus_position(self) -> int:
        """Current focus motor position."""
        return self._bench.focus_steps()

    def home_focus(self) -> None:
        """Return the motor to the homing switch at 0."""
        with self._lock:
            self._bench.set_focus_steps(0)

    def temperature_c(self) -> float:
        """Board temperature: a plausible ambient reading that rises with LED load."""
        load = sum(self._bench.leds().values())
        return 31.0 + 0.02 * load
