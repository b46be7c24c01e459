"""The camera interface. Implementations sit beside it: ``simulated``, ``picamera`` (Raspberry Pi cameras) and ``replay``.

Higher layers (autofocus, scans, preview) see only :class:`Camera`; configuration
picks the implementation.
"""

from __future__ import annotations

import abc
from dataclasses import dataclass

from veriscope.device.types import CaptureSettings, Frame


@dataclass(frozen=True)
class CameraInfo:
    """What a camera is and can do."""

    model: str
    """Sensor model, for example "imx477" or "simulated"."""
    sensor_width: int
    """Full-resolution width in pixels."""
    sensor_height: int
    """Full-resolution height in pixels."""
    has_lens_focus: bool
    """True when the camera focuses with its own lens (Camera Module 3), not the controller's motor."""


class Camera(abc.ABC):
    """A camera that exposes frames.

    Methods block; the daemon calls them from a worker thread and serialises
    access with its own lock, so implementations need not be thread-safe.
    Failures raise :class:`veriscope.device.errors.CameraError`.
    """

    @property
    @abc.abstractmethod
    def info(self) -> CameraInfo:
        """Describe the camera."""

    @abc.abstractmethod
    def capture(self, settings: CaptureSettings, *, width: int | None = None) -> Frame:
        """Expose one frame with the given settings.

        ``width`` asks for a frame scaled to that width (for previews); ``None``
        is full resolution. Lighting and focus are the controller's business:
        the caller sets them before calling.
        """

    def close(self) -> None:  # noqa: B027 - optional hook
        """Release the camera. The default does nothing."""
