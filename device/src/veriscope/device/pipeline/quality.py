"""The quality gate: decides whether a frame is good enough to judge, and says what to fix.

Every capture and every upload goes through :func:`assess`. A frame that fails
is never used for a verdict. Each failure is a stable issue name with a hint
for the person holding the scanner.

The metrics are computed on a grey, downscaled copy (at most ``ANALYSIS_WIDTH_PX``
wide) so the gate costs little next to the capture itself:

- ``mean_level``: mean grey level 0..1.
- ``clipped_fraction``: fraction of pixels at or above ``clip_level``.
- ``sharpness``: variance of the Laplacian divided by the squared mean level,
  so it measures focus rather than brightness.
- ``glare_fraction``: fraction of near-white, low-saturation pixels in an image
  that is otherwise not overexposed (specular highlights).
- ``motion_anisotropy``: 1 - (weakest / strongest) directional gradient energy;
  motion smears detail along one direction only.
- ``focus_uniformity``: sharpness of the least sharp quarter of the frame divided
  by that of the sharpest; tilt or lift-off lowers it.

Thresholds come from the model bundle's ``quality`` table; missing keys take
the defaults in :data:`DEFAULT_THRESHOLDS`.
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass, field

import numpy as np
import numpy.typing as npt

from veriscope.device.errors import InvalidArgument
from veriscope.device.types import RGBImage

ANALYSIS_WIDTH_PX = 512

DEFAULT_THRESHOLDS: dict[str, float] = {
    "min_mean_level": 0.2,
    "max_clipped_fraction": 0.02,
    "clip_level": 0.98,
    "min_sharpness": 0.0012,
    "max_glare_fraction": 0.004,
    "max_motion_anisotropy": 0.75,
    "min_focus_uniformity": 0.3,
}
"""Default thresholds of the gate, overridable from the model bundle."""

HINTS: dict[str, str] = {
    "out_of_focus": "Image is not sharp: hold the scanner flat on the surface and let it refocus.",
    "underexposed": "Image is too dark: check that the lights are on and nothing blocks the lens.",
    "overexposed": "Image is too bright: too many pixels are clipped; lower the exposure or LED duty.",
    "glare": "Specular glare: tilt the item slightly or switch to raking light.",
    "motion_blur": "Movement during capture: hold the scanner still until the capture completes.",
    "uneven_focus": "Focus differs across the image: the scanner is tilted or not in contact; press it flat.",
    "unreadable": "The image could not be read.",
}
"""A hint per issue name, for the person holding the scanner."""

ISSUE_NAMES = tuple(HINTS)
"""Every issue name the gate can report, in a stable order."""


@dataclass(frozen=True)
class QualityIssue:
    """One failed check."""

    code: str
    """Stable lower_snake_case name, one of :data:`ISSUE_NAMES`."""
    hint: str
    """What to do about it."""
    value: float
    """The measured value."""
    threshold: float
    """The limit the value broke."""


@dataclass(frozen=True)
class QualityReport:
    """The gate's verdict on one frame."""

    issues: tuple[QualityIssue, ...] = ()
    metrics: Mapping[str, float] = field(default_factory=dict)

    @property
    def ok(self) -> bool:
        """True when the frame may be used for a verdict."""
        return not self.issues

    @property
    def issue_codes(self) -> list[str]:
        """The names of the failed checks."""
        return [i.code for i in self.issues]


def unreadable(reason: str) -> QualityReport:
    """A report for a file that could not be decoded."""
    return QualityReport(issues=(QualityIssue("unreadable", f"{HINTS['unreadable']} {reason}", 0.0, 0.0),))


def thresholds_from(overrides: Mapping[str, float] | None) -> dict[str, float]:
    """Merge bundle overrides into the defaults, rejecting unknown keys and non-numbers."""
    merged = dict(DEFAULT_THRESHOLDS)
    for key, value in (overrides or {}).items():
        if key not in DEFAULT_THRESHOLDS:
            raise InvalidArgument(f"quality threshold {key!r} is unknown; known: {', '.join(DEFAULT_THRESHOLDS)}")
        if isinstance(value, bool) or not isinstance(value, int | float) or not np.isfinite(value):
            raise InvalidArgument(f"quality threshold {key!r} must be a finite number, got {value!r}")
        merged[key] = float(value)
    return merged


def _grey(pixels: RGBImage) -> npt.NDArray[np.float32]:
    """Grey levels 0..1, box-downscaled to at most ANALYSIS_WIDTH_PX wide."""
    if pixels.ndim != 3 or pixels.shape[2] != 3 or pixels.dtype != np.uint8:
        raise InvalidArgument(f"frame must be an HxWx3 uint8 array, got shape {pixels.shape} dtype {pixels.dtype}")
    factor = max(1, int(np.ceil(pixels.shape[1] / ANALYSIS_WIDTH_PX)))
    h = pixels.shape[0] // factor * factor
    w = pixels.shape[1] // factor * factor
    if h < 16 or w < 16:
        raise InvalidArgument(f"frame of {pixels.shape[1]}x{pixels.shape[0]} px is too small to assess")
    grey = pixels[:h, :w].astype(np.float32) @ np.array([0.299, 0.587, 0.114], dtype=np.float32)
    if factor > 1:
        grey = grey.reshape(h // factor, factor, w // factor, factor).mean(axis=(1, 3))
    return grey / np.float32(255.0)


def _laplacian(grey: npt.NDArray[np.float32]) -> npt.NDArray[np.float32]:
    return grey[1:-1, :-2] + grey[1:-1, 2:] + grey[:-2, 1:-1] + grey[2:, 1:-1] - np.float32(4.0) * grey[1:-1, 1:-1]


def sharpness(pixels: RGBImage) -> float:
    """Focus measure of a frame: variance of the Laplacian over the squared mean level (dimensionless)."""
    grey = _grey(pixels)
    return _sharpness(grey)


def _sharpness(grey: npt.NDArray[np.float32]) -> float:
    mean = float(grey.mean())
    return float(_laplacian(grey).var()) / max(mean * mean, 1e-4)


def _motion_anisotropy(grey: npt.NDArray[np.float32]) -> float:
    """1 - min/max of the gradient energy along four directions."""
    g = grey[1:-1, 1:-1]
    energies = [
        float(np.mean((grey[1:-1, 2:] - g) ** 2)),  # horizontal
        float(np.mean((grey[2:, 1:-1] - g) ** 2)),  # vertical
        float(np.mean((grey[2:, 2:] - g) ** 2)) / 2.0,  # diagonal (distance sqrt 2)
        float(np.mean((grey[2:, :-2] - g) ** 2)) / 2.0,  # anti-diagonal
    ]
    strongest = max(energies)
    return 0.0 if strongest <= 1e-12 else 1.0 - min(energies) / strongest


def _focus_uniformity(grey: npt.NDArray[np.float32]) -> float:
    h, w = grey.shape
    quarters = [grey[: h // 2, : w // 2], grey[: h // 2, w // 2 :], grey[h // 2 :, : w // 2], grey[h // 2 :, w // 2 :]]
    values = [float(_laplacian(q).var()) for q in quarters]
    return 1.0 if max(values) <= 1e-12 else min(values) / max(values)


def assess(pixels: RGBImage, thresholds: Mapping[str, float] | None = None) -> QualityReport:
    """Run every check on an RGB frame and return the report.

    Raises :class:`InvalidArgument` when ``pixels`` is not an HxWx3 uint8 array
    of at least 16x16 pixels after downscaling.
    """
    t = thresholds_from(thresholds)
    grey = _grey(pixels)
    mean_level = float(grey.mean())
    clipped = float(np.mean(grey >= t["clip_level"]))
    sharp = _sharpness(grey)
    anisotropy = _motion_anisotropy(grey)
    uniformity = _focus_uniformity(grey)
    small = pixels[:: max(1, pixels.shape[0] // 256), :: max(1, pixels.shape[1] // 256)].astype(np.float32) / 255.0
    bright = small.min(axis=2) >= 0.92
    saturation = small.max(axis=2) - small.min(axis=2)
    glare = float(np.mean(bright & (saturation < 0.08)))
    metrics = {
        "mean_level": mean_level,
        "clipped_fraction": clipped,
        "sharpness": sharp,
        "glare_fraction": glare,
        "motion_anisotropy": anisotropy,
        "focus_uniformity": uniformity,
    }
    issues: list[QualityIssue] = []

    def fail(code: str, value: float, threshold: float) -> None:
        issues.append(QualityIssue(code, HINTS[code], value, threshold))

    if mean_level < t["min_mean_level"]:
        fail("underexposed", mean_level, t["min_mean_level"])
    if clipped > t["max_clipped_fraction"]:
        fail("overexposed", clipped, t["max_clipped_fraction"])
    elif glare > t["max_glare_fraction"]:
        fail("glare", glare, t["max_glare_fraction"])
    if mean_level >= t["min_mean_level"]:
        # Focus checks mean nothing in a frame too dark to show detail.
        if anisotropy > t["max_motion_anisotropy"]:
            fail("motion_blur", anisotropy, t["max_motion_anisotropy"])
        elif sharp < t["min_sharpness"]:
            fail("out_of_focus", sharp, t["min_sharpness"])
        elif uniformity < t["min_focus_uniformity"]:
            fail("uneven_focus", uniformity, t["min_focus_uniformity"])
    return QualityReport(issues=tuple(issues), metrics=metrics)
