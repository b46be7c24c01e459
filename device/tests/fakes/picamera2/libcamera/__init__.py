"""Test double of the libcamera Python bindings: the control enums that picamera2 users pass.

This folder (``device/tests/fakes/picamera2``) is put on ``sys.path`` by the
camera tests only; it is never installed, so the daemon can never import it.
"""

from __future__ import annotations

from libcamera import controls

__all__ = ["ColorSpace", "Transform", "controls"]


class Transform:
    """An image transform (flips) applied by the ISP."""

    def __init__(self, hflip: bool = False, vflip: bool = False) -> None:
        self.hflip = hflip
        self.vflip = vflip


class ColorSpace:
    """A colour space of a stream."""

    def __init__(self, name: str) -> None:
        self.name = name

    @staticmethod
    def Sycc() -> ColorSpace:
        return ColorSpace("sYCC")

    @staticmethod
    def Smpte170m() -> ColorSpace:
        return ColorSpace("SMPTE170M")

    @staticmethod
    def Rec709() -> ColorSpace:
        return ColorSpace("Rec709")

    @staticmethod
    def Raw() -> ColorSpace:
        return ColorSpace("RAW")
