"""The libcamera control enums, with libcamera's names and values."""

from __future__ import annotations

import enum


class AfModeEnum(enum.IntEnum):
    """Autofocus mode of a camera with a focus lens."""

    Manual = 0
    Auto = 1
    Continuous = 2


class AfStateEnum(enum.IntEnum):
    """Autofocus state, reported in metadata."""

    Idle = 0
    Scanning = 1
    Focused = 2
    Failed = 3


class AeStateEnum(enum.IntEnum):
    """Auto-exposure state, reported in metadata by libcamera 0.5 and later."""

    Idle = 0
    Searching = 1
    Converged = 2


class ExposureTimeModeEnum(enum.IntEnum):
    """Whether the exposure time is chosen by the AE algorithm or fixed (libcamera 0.5 and later)."""

    Auto = 0
    Manual = 1


class AnalogueGainModeEnum(enum.IntEnum):
    """Whether the analogue gain is chosen by the AE algorithm or fixed (libcamera 0.5 and later)."""

    Auto = 0
    Manual = 1


class _Draft:
    class NoiseReductionModeEnum(enum.IntEnum):
        Off = 0
        Fast = 1
        HighQuality = 2
        Minimal = 3
        ZSL = 4


draft = _Draft()
