"""Whole-frame texture measurements, and how far a region's lie from genuine ones.

The tile network sees 128 px patches; some counterfeits differ from genuine
only in quantities a patch cannot measure well: a weave 2 % less dense, a
1.5 degree skew between warp and weft, a halftone screen a few degrees off.
Those show in the power spectrum of the whole working-scale frame, so
:func:`texture_features` summarises it in a form that does not change when
the item is turned under the lens:

- the radial power profile in log-spaced frequency bands (how much structure
  there is at each spacing), and the power-weighted mean frequency within
  each band (exactly where a repeating structure's peak sits, to a fraction
  of a band);
- per frequency octave, the circular autocorrelation of the angular power
  profile (the angles between repeating structures, not their absolute
  direction) and its peak-to-mean ratio (how strongly oriented they are);
- mean colour, colour contrast and edge density.

:func:`texture_distance` measures a region's mean feature vector against a
material's genuine references (:class:`~veriscope.device.inference.bundle.TextureStats`,
fitted in training from genuine images only) as a Mahalanobis distance with a
shrunk covariance, so a counterfeiter the model never saw still lands far out.
Pure numpy; the device and training share it.
"""

from __future__ import annotations

import itertools
from collections.abc import Sequence
from dataclasses import dataclass
from functools import lru_cache
from typing import NamedTuple

import numpy as np
import numpy.typing as npt

from veriscope.device.errors import InvalidArgument
from veriscope.device.types import RGBImage

FloatArray = npt.NDArray[np.float32]

FEATURE_SET = "spectrum-v1"
"""Name of the feature layout below; a bundle's texture statistics must name the same one."""

_RADIAL_BANDS = 40
_RADIAL_LOW, _RADIAL_HIGH = 0.008, 0.5
"""Frequency range of the radial profile, cycles per working-scale pixel."""
_ANGLE_OCTAVES = np.geomspace(0.015, 0.5, 6)
"""Edges of the frequency bands whose angular structure is measured."""
_ANGLE_BINS = 360
"""Half-degree bins over 0..180 degrees (the spectrum of a real image is symmetric)."""
_LAGS = np.arange(1, 91, 3)
"""Autocorrelation lags kept, in angle bins: 0.5 to 44.5 degrees in 1.5 degree steps."""
_LUMA = np.array([0.299, 0.587, 0.114], dtype=np.float32)

FEATURE_SIZE = 2 * _RADIAL_BANDS + (len(_ANGLE_OCTAVES) - 1) * (len(_LAGS) + 1) + 7
"""Length of a feature vector."""

GROUPS: tuple[tuple[str, slice], ...] = (
    ("the spacing of its repeating structures", slice(0, 2 * _RADIAL_BANDS)),
    ("the angles between its repeating structures", slice(2 * _RADIAL_BANDS, FEATURE_SIZE - 7)),
    ("its colour and contrast", slice(FEATURE_SIZE - 7, FEATURE_SIZE)),
)
"""What each part of the feature vector measures, for explanations."""

MIN_SIDE_PX = 32
"""Smallest frame side the spectrum is measured on."""


@dataclass(frozen=True, eq=False)
class TextureStats:
    """One material's genuine texture references (a bundle's ``open_set.<material>.texture``)."""

    features: str
    """The feature layout they were fitted on; must be :data:`FEATURE_SET`."""
    mean: FloatArray
    """Per-feature mean of genuine images."""
    std: FloatArray
    """Per-feature standard deviation, > 0."""
    components: FloatArray
    """K x D leading principal axes of the standardised features, unit rows."""
    variances: FloatArray
    """Variance along each axis, >= 0."""
    shrinkage: float
    """Weight (0..1] of the identity in the shrunk covariance."""
    distance_ref: float
    """The genuine limit: the raw distance genuine regions stay within (a high quantile)."""


class _Grid(NamedTuple):
    window: FloatArray
    band: npt.NDArray[np.intp]
    """Radial band of each kept frequency."""
    keep: npt.NDArray[np.bool_]
    """Frequencies inside the radial range."""
    log_radius: FloatArray
    """log frequency of the kept frequencies, relative to their band's centre."""
    octaves: tuple[tuple[npt.NDArray[np.bool_], npt.NDArray[np.intp]], ...]
    """Per angular octave: which frequencies, and their angle bin."""


@lru_cache(maxsize=4)
def _grid(height: int, width: int) -> _Grid:
    fy = np.fft.fftfreq(height)[:, None]
    fx = np.fft.rfftfreq(width)[None, :]
    radius = np.hypot(fx, fy)
    angle = np.mod(np.degrees(np.arctan2(fy, fx)), 180.0)
    edges = np.geomspace(_RADIAL_LOW, _RADIAL_HIGH, _RADIAL_BANDS + 1)
    band_all = np.digitize(radius, edges) - 1
    keep = (band_all >= 0) & (band_all < _RADIAL_BANDS)
    band = band_all[keep]
    centres = np.log(np.sqrt(edges[:-1] * edges[1:]))
    log_radius = (np.log(radius[keep]) - centres[band]).astype(np.float32)
    bins = np.minimum((angle * (_ANGLE_BINS / 180.0)).astype(np.intp), _ANGLE_BINS - 1)
    octaves = tuple(
        (mask, bins[mask]) for lo, hi in itertools.pairwise(_ANGLE_OCTAVES) for mask in [(radius >= lo) & (radius < hi)]
    )
    window = np.outer(np.hanning(height), np.hanning(width)).astype(np.float32)
    return _Grid(window, band, keep, log_radius, octaves)


def texture_features(frame: RGBImage) -> FloatArray:
    """The texture feature vector (:data:`FEATURE_SIZE` values) of a working-scale RGB frame.

    Raises :class:`InvalidArgument` for anything but an HxWx3 uint8 array at
    least :data:`MIN_SIDE_PX` on each side.
    """
    if not isinstance(frame, np.ndarray) or frame.ndim != 3 or frame.shape[2] != 3 or frame.dtype != np.uint8:
        raise InvalidArgument(
            f"texture needs an HxWx3 uint8 frame, got shape {getattr(frame, 'shape', None)} "
            f"dtype {getattr(frame, 'dtype', type(frame).__name__)}"
        )
    height, width = int(frame.shape[0]), int(frame.shape[1])
    if min(height, width) < MIN_SIDE_PX:
        raise InvalidArgument(f"texture needs a frame at least {MIN_SIDE_PX} px on each side, got {width}x{height}")
    grid = _grid(height, width)
    pixels = frame.astype(np.float32)
    luma = pixels @ _LUMA
    centred = (luma - luma.mean()) * grid.window
    power = np.abs(np.fft.rfft2(centred)).astype(np.float64) ** 2
    power[:, 1:] *= 2.0  # each column but the first stands for itself and its mirror
    kept = power[grid.keep]
    total = kept.sum() + 1e-12
    band_power = np.bincount(grid.band, kept, _RADIAL_BANDS)
    counts = np.maximum(np.bincount(grid.band, None, _RADIAL_BANDS), 1)
    radial = np.log(band_power / counts / total + 1e-14)
    centroid = np.bincount(grid.band, kept * grid.log_radius, _RADIAL_BANDS) / (band_power + 1e-12)
    angular: list[npt.NDArray[np.float64]] = []
    for mask, bins in grid.octaves:
        profile = np.bincount(bins, power[mask], _ANGLE_BINS)
        profile = profile / (profile.sum() + 1e-12)
        spectrum = np.fft.rfft(profile - profile.mean())
        auto = np.fft.irfft(np.abs(spectrum) ** 2, _ANGLE_BINS)
        angular.append(auto[_LAGS] / (auto[0] + 1e-18))
        angular.append(np.array([np.log(profile.max() * _ANGLE_BINS + 1e-12)]))
    # Edge density: mean absolute step between neighbours along both axes, so turning the item changes nothing.
    steps = float(np.mean(np.abs(np.diff(luma, axis=0)))) + float(np.mean(np.abs(np.diff(luma, axis=1))))
    contrast = [0.5 * steps / (float(np.std(luma)) + 1e-6)]
    tone = [pixels.mean(axis=(0, 1)) / 255.0, pixels.std(axis=(0, 1)) / 255.0, np.asarray(contrast)]
    return np.concatenate([radial, centroid, *angular, *tone]).astype(np.float32)


def fit_texture_stats(
    features: npt.ArrayLike, *, components: int = 32, shrinkage: float = 0.1, distance_ref: float = 1.0
) -> TextureStats:
    """Genuine references from an N x :data:`FEATURE_SIZE` array of genuine images' features.

    Keeps the ``components`` leading principal axes of the standardised
    features; the covariance is shrunk toward the identity by ``shrinkage``
    (0..1), which keeps the distance stable when there are fewer images than
    features. Raises :class:`ValueError` for fewer than 2 images or a wrong width.
    """
    x = np.asarray(features, dtype=np.float64)
    if x.ndim != 2 or x.shape[1] != FEATURE_SIZE or len(x) < 2:
        raise ValueError(f"need at least 2 feature vectors of {FEATURE_SIZE} values, got shape {x.shape}")
    if not 0.0 < shrinkage <= 1.0:
        raise ValueError(f"shrinkage must be in (0, 1], got {shrinkage}")
    mean = x.mean(axis=0)
    std = np.maximum(x.std(axis=0), 1e-6)
    z = (x - mean) / std
    values, vectors = np.linalg.eigh(np.cov(z, rowvar=False))
    order = np.argsort(values)[::-1][: max(1, min(components, FEATURE_SIZE))]
    return TextureStats(
        features=FEATURE_SET,
        mean=mean.astype(np.float32),
        std=std.astype(np.float32),
        components=vectors[:, order].T.astype(np.float32),
        variances=np.maximum(values[order], 0.0).astype(np.float32),
        shrinkage=float(shrinkage),
        distance_ref=float(distance_ref),
    )


def raw_distance(features: Sequence[FloatArray] | npt.ArrayLike, stats: TextureStats) -> float:
    """RMS Mahalanobis distance of the mean of one or more feature vectors from the genuine references."""
    z = _standardised(features, stats)
    lam = stats.shrinkage
    projected = stats.components.astype(np.float64) @ z
    inside = float(np.sum(projected**2 / ((1.0 - lam) * stats.variances + lam)))
    outside = max(float(z @ z - projected @ projected), 0.0) / lam
    return float(np.sqrt((inside + outside) / z.size))


def texture_distance(features: Sequence[FloatArray] | npt.ArrayLike, stats: TextureStats) -> float:
    """A region's distance from genuine texture in units of ``stats.distance_ref``: above 1 is unlike genuine."""
    return raw_distance(features, stats) / stats.distance_ref


def furthest_group(features: Sequence[FloatArray] | npt.ArrayLike, stats: TextureStats) -> str:
    """Which measurement (a phrase from :data:`GROUPS`) lies furthest from the genuine references."""
    z = _standardised(features, stats)
    return max(GROUPS, key=lambda g: float(np.mean(z[g[1]] ** 2)))[0]


def _standardised(features: Sequence[FloatArray] | npt.ArrayLike, stats: TextureStats) -> npt.NDArray[np.float64]:
    x = np.asarray(features, dtype=np.float64).reshape(-1, FEATURE_SIZE)
    if stats.features != FEATURE_SET or stats.mean.size != FEATURE_SIZE:
        raise InvalidArgument(f"texture statistics are for {stats.features!r}, this device measures {FEATURE_SET!r}")
    result: npt.NDArray[np.float64] = (x.mean(axis=0) - stats.mean) / stats.std
    return result
