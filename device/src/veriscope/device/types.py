"""Value types shared by the daemon's layers: lighting channels, capture settings and frames."""

from __future__ import annotations

import enum
from dataclasses import dataclass, field
from datetime import UTC, datetime

import numpy as np
import numpy.typing as npt

RGBImage = npt.NDArray[np.uint8]
"""An H x W x 3 uint8 RGB image."""


class Lighting(enum.StrEnum):
    """A lighting channel of the controller board."""

    WHITE_RING = "white_ring"
    """The diffuse white LED ring around the lens."""
    RAKING = "raking"
    """The low-angle raking LED that reveals surface relief."""
    UV = "uv"
    """The 365 nm ultraviolet LED."""
    OFF = "off"
    """All LEDs off."""


@dataclass(frozen=True)
class CaptureSettings:
    """What a capture asks of the camera and the lights.

    ``None`` means "let the device decide" (auto-exposure, current focus, default duty).
    """

    exposure_us: int | None = None
    """Exposure time in microseconds, 1..1_000_000."""
    analogue_gain: float | None = None
    """Sensor analogue gain, 1.0..16.0."""
    lighting: Lighting = Lighting.WHITE_RING
    """The channel lit during the exposure."""
    led_duty_pct: int | None = None
    """LED duty cycle in percent, 1..100."""
    focus_steps: int | None = None
    """Focus motor position to move to before the exposure, in steps from home."""
    lens_position: float | None = None
    """Lens position in dioptres, for cameras with a focus lens."""


@dataclass(frozen=True)
class AppliedSettings:
    """The settings actually in force when a frame was exposed."""

    exposure_us: int
    analogue_gain: float
    lighting: Lighting
    led_duty_pct: int
    focus_steps: int
    lens_position: float = 0.0


@dataclass(frozen=True)
class Frame:
    """One exposed frame, as 8-bit sRGB pixels, with what produced it."""

    pixels: RGBImage
    settings: AppliedSettings
    camera_model: str
    capture_time: datetime = field(default_factory=lambda: datetime.now(UTC))
    calibration_id: str = ""
    """The flat-field and white-balance calibration applied to the pixels; empty when none was."""
    calibration_time: datetime | None = None
    """When that calibration was made; None when none was applied."""

    @property
    def height(self) -> int:
        """Frame height in pixels."""
        return int(self.pixels.shape[0])

    @property
    def width(self) -> int:
        """Frame width in pixels."""
        return int(self.pixels.shape[1])
