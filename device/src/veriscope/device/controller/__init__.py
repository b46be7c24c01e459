"""The controller-board interface: LEDs, focus stepper, temperature and trigger button.

Implementations sit beside it: ``simulated`` (pure Python) and, later, the
serial driver for the ATmega328P board. Higher layers see only :class:`Controller`.
"""

from __future__ import annotations

import abc
from collections.abc import Mapping
from dataclasses import dataclass

from veriscope.device.types import Lighting


@dataclass(frozen=True)
class ControllerInfo:
    """Identity of the controller board, read in its handshake."""

    kind: str
    """Board kind, for example "atmega328p" or "simulated"."""
    firmware_version: str
    """Firmware semantic version."""
    protocol_version: int
    """Serial protocol version the firmware speaks."""
    build_id: str
    """Firmware build identifier."""


@dataclass(frozen=True)
class FocusRange:
    """Soft limits of the focus motor, in steps from home."""

    min_steps: int
    max_steps: int


class Controller(abc.ABC):
    """The board that drives the lights and the focus motor.

    Implementations are thread-safe. Failures raise
    :class:`veriscope.device.errors.ControllerError`.
    """

    @property
    @abc.abstractmethod
    def info(self) -> ControllerInfo:
        """Identity of the board."""

    @abc.abstractmethod
    def set_leds(self, duty_pct: Mapping[Lighting, int]) -> None:
        """Set the PWM duty (0..100 %) of each listed channel; unlisted channels keep their duty."""

    def light_only(self, channel: Lighting, duty_pct: int) -> None:
        """Light one channel at ``duty_pct`` and switch every other channel off."""
        duties: dict[Lighting, int] = {c: 0 for c in Lighting if c is not Lighting.OFF}
        if channel is not Lighting.OFF:
            duties[channel] = duty_pct
        self.set_leds(duties)

    @abc.abstractmethod
    def leds(self) -> dict[Lighting, int]:
        """Current duty of every channel, in percent."""

    @property
    @abc.abstractmethod
    def focus_range(self) -> FocusRange:
        """Soft limits of the focus motor."""

    @abc.abstractmethod
    def move_focus(self, target_steps: int) -> int:
        """Move the focus motor to an absolute position and wait until it stops.

        Returns the position reached. Targets outside :attr:`focus_range` raise
        :class:`veriscope.device.errors.InvalidArgument`.
        """

    @abc.abstractmethod
    def focus_position(self) -> int:
        """Current focus motor position, in steps from home."""

    @abc.abstractmethod
    def home_focus(self) -> None:
        """Drive the focus motor to its homing switch and zero the position."""

    @abc.abstractmethod
    def temperature_c(self) -> float:
        """Board temperature in degrees Celsius."""

    def close(self) -> None:  # noqa: B027 - optional hook
        """Release the board. The default does nothing."""
