"""Whole-frame texture measurements, and how far a region's lie from genuine ones.

The tile network sees 128 px patches; some counterfeits differ from genuine
only in quantities a patch cannot measure well: a weave 2 % less dense, a
1.5 degree skew between warp and weft, a fifth fewer pores, pores a sixth
wider. Those show over the whole working-scale frame, so
:func:`texture_features` measures four families of statistics that do not
change when the item is turned under the lens:

- ``spectrum``, from the frame's power spectrum: the radial power profile in
  log-spaced frequency bands (how much structure there is at each spacing)
  and the power-weighted mean frequency within each band (where a repeating
  structure's peak sits, to a fraction of a band); per frequency octave, the
  circular autocorrelation of the angular power profile (the angles between
  repeating structures, not their absolute direction) and its peak-to-mean
  ratio; and mean colour, colour contrast and edge density.
- ``blobs``, from band-passed copies of the frame at four scales: how many
  dark specks (pores, fibre ends, halftone dots) stand out at three strengths,
  how unevenly they are spread over the frame, and the skew of the band.
- ``sizes``: at the strong specks of three middle scales, the median ratio of
  the other scales' responses to that scale's (a band-pass responds most at
  the scale that matches a speck's radius, so the ratios read its typical size
  to a few percent).
- ``layers``: whether the frame's two main colour layers (the first two
  principal components of its log colour; for a print, roughly the dark ground
  ink and the coloured motif ink) carry the same repeating structure. Per
  log-spaced frequency band, the correlation between the two layers' angular
  amplitude profiles, and the difference between their dominant four-fold
  orientations (a square screen's or weave's angle, modulo 90 degrees): both
  inks on one halftone screen agree; screens a few degrees apart, which no
  single layer shows, do not.

:func:`texture_distance` measures a region's mean feature vector against a
material's genuine references (:class:`TextureStats`, fitted in training from
genuine images only): per family, a Mahalanobis distance with a shrunk
covariance in units of the distance genuine regions of as many frames stay
within (the mean of three frames strays less than that of two, so its limit is
tighter); the region takes the largest. A counterfeiter the model never saw
still lands far out in whichever family it got wrong. :func:`material_distance`
measures one frame the same way against references of the material as a whole
(every source seen in training, genuine and counterfeit): far beyond them the
frame shows another surface, and the image is unfamiliar. Pure numpy; the
device and training share it.
"""

from __future__ import annotations

import itertools
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, replace
from functools import lru_cache
from typing import NamedTuple

import numpy as np
import numpy.typing as npt

from veriscope.device.errors import InvalidArgument
from veriscope.device.types import RGBImage

FloatArray = npt.NDArray[np.float32]

FEATURE_SET = "spectrum-blobs-sizes-layers-v1"
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

_BLOB_SCALES = (1.2, 2.0, 3.2, 5.0)
"""Gaussian sigmas (working-scale pixels) of the band-pass filters the blob counts are taken at."""
_SIZE_SCALES = (1.2, 1.6, 2.0, 2.5, 3.2, 5.0)
"""Every band-pass scale measured; speck sizes compare responses across all of them."""
_SIZE_REFERENCES = (1.6, 2.0, 2.5)
"""Scales whose strong specks have their size read."""
_BLOB_STRENGTHS = (2.0, 4.0, 8.0)
"""A dark speck counts at each strength its band-pass response reaches, in median absolute responses."""
_BLOB_CELLS = 4
"""The frame is cut into this many cells each way to measure how evenly strong specks spread."""
_LAYER_BANDS = np.geomspace(0.012, 0.2, 7)
"""Edges of the frequency bands (cycles per working-scale pixel) the colour layers are compared in."""
_LAYER_ANGLE_BINS = 180
"""One-degree bins over 0..180 degrees for the layers' angular profiles."""
_LAYER_OFFSET = 4.0
"""Added to 8-bit values before the logarithm, so black pixels stay finite."""

_SPECTRUM_SIZE = 2 * _RADIAL_BANDS + (len(_ANGLE_OCTAVES) - 1) * (len(_LAGS) + 1) + 7
_BLOB_SIZE = len(_BLOB_SCALES) * (len(_BLOB_STRENGTHS) + 2)
_SIZES_SIZE = len(_SIZE_REFERENCES) * (len(_SIZE_SCALES) - 1)
_LAYER_COUNT = len(_LAYER_BANDS) - 1
_LAYERS_SIZE = 2 * _LAYER_COUNT
_LAYERS_START = _SPECTRUM_SIZE + _BLOB_SIZE + _SIZES_SIZE
FEATURE_SIZE = _LAYERS_START + _LAYERS_SIZE
"""Length of a feature vector."""

FAMILIES: tuple[tuple[str, slice], ...] = (
    ("spectrum", slice(0, _SPECTRUM_SIZE)),
    ("blobs", slice(_SPECTRUM_SIZE, _SPECTRUM_SIZE + _BLOB_SIZE)),
    ("sizes", slice(_SPECTRUM_SIZE + _BLOB_SIZE, _LAYERS_START)),
    ("layers", slice(_LAYERS_START, FEATURE_SIZE)),
)
"""The families of measurements, each judged against its own genuine limit, and where they sit in a vector."""

GROUPS: tuple[tuple[str, slice], ...] = (
    ("the spacing of its repeating structures", slice(0, 2 * _RADIAL_BANDS)),
    ("the angles between its repeating structures", slice(2 * _RADIAL_BANDS, _SPECTRUM_SIZE - 7)),
    ("its colour and contrast", slice(_SPECTRUM_SIZE - 7, _SPECTRUM_SIZE)),
    ("the number and spread of its pores and specks", slice(_SPECTRUM_SIZE, _SPECTRUM_SIZE + _BLOB_SIZE)),
    ("the size of its pores and specks", slice(_SPECTRUM_SIZE + _BLOB_SIZE, _LAYERS_START)),
    ("how its colour layers line up with each other", slice(_LAYERS_START, FEATURE_SIZE)),
)
"""What each part of the feature vector measures, for explanations."""

MIN_SIDE_PX = 32
"""Smallest frame side the spectrum is measured on."""


@dataclass(frozen=True, eq=False)
class TextureBlock:
    """Genuine references for one family of measurements (one entry of :data:`FAMILIES`)."""

    name: str
    """The family's name."""
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
    """The genuine limit: the raw distance genuine regions of the fewest images a region of the material needs stay
    within (a high quantile)."""
    limits_by_images: tuple[tuple[int, float], ...] = ()
    """Tighter limits for regions of more images, as (image count, limit) pairs in ascending count: the mean of more
    frames strays less from genuine, so the same quantile lies nearer. See :meth:`limit`."""

    def limit(self, images: int) -> float:
        """The limit for a region judged on ``images`` frames: that of the largest count in
        :attr:`limits_by_images` up to ``images``, else :attr:`distance_ref`."""
        chosen = self.distance_ref
        for count, value in self.limits_by_images:
            if count <= images:
                chosen = value
        return chosen


@dataclass(frozen=True, eq=False)
class TextureHead:
    """A linear genuine-versus-counterfeit score on one frame's whole feature vector, fitted on known counterfeits.

    It measures what the one-class distance cannot rank: a counterfeit seen in training whose features sit inside
    genuine's spread but all lean one way (a weave 2 % less dense). The calibration weighs it against the network.
    """

    mean: FloatArray
    """Per-feature mean of the training images it was fitted on."""
    std: FloatArray
    """Per-feature standard deviation, > 0."""
    weights: FloatArray
    """One weight per standardised feature; higher scores mean more genuine."""
    bias: float


@dataclass(frozen=True, eq=False)
class TextureStats:
    """One material's genuine texture references (a bundle's ``open_set.<material>.texture``)."""

    features: str
    """The feature layout they were fitted on; must be :data:`FEATURE_SET`."""
    blocks: tuple[TextureBlock, ...]
    """One per family, in :data:`FAMILIES` order."""
    head: TextureHead | None = None
    """The supervised score, when the bundle has one."""
    material: tuple[TextureBlock, ...] = ()
    """References of the material as a whole, one per family in :data:`FAMILIES` order: fitted on every training
    image of it, genuine and counterfeit alike, each block's ``distance_ref`` the distance a single frame of the
    material stays within. A frame beyond one is not this material at all (see :func:`material_distance`). Empty in
    bundles without them."""

    def with_limits(
        self, limits: Sequence[float], by_images: Sequence[Mapping[int, float]] | None = None
    ) -> TextureStats:
        """The same references with each block's ``distance_ref`` replaced, in block order, and with ``by_images``
        each block's :attr:`~TextureBlock.limits_by_images` (image count -> limit; none when omitted)."""
        extra = list(by_images) if by_images is not None else [{} for _ in self.blocks]
        if len(limits) != len(self.blocks) or len(extra) != len(self.blocks):
            raise ValueError(f"need {len(self.blocks)} limits, got {len(limits)} and {len(extra)} by image count")
        return TextureStats(
            self.features,
            tuple(
                replace(
                    b, distance_ref=float(r), limits_by_images=tuple(sorted((int(n), float(v)) for n, v in e.items()))
                )
                for b, r, e in zip(self.blocks, limits, extra, strict=True)
            ),
            self.head,
            self.material,
        )


class _LayerGrid(NamedTuple):
    """Where each frequency of an rfft2 grid falls for the ``layers`` family."""

    keep: npt.NDArray[np.bool_]
    """Frequencies inside the bands."""
    band: npt.NDArray[np.intp]
    """Band of each kept frequency."""
    cell: npt.NDArray[np.intp]
    """(band, angle bin) cell of each kept frequency, flattened."""
    counts: npt.NDArray[np.float64]
    """Frequencies per cell (at least 1), bands x angle bins."""
    quad: npt.NDArray[np.complex128]
    """exp(4i angle) of each kept frequency: a square lattice's peaks all point the same way."""


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
    layers: _LayerGrid
    """The same grid as the ``layers`` family bins it."""


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
    return _Grid(window, band, keep, log_radius, octaves, _layer_grid(radius, np.arctan2(fy, fx)))


def _layer_grid(radius: npt.NDArray[np.float64], theta: npt.NDArray[np.float64]) -> _LayerGrid:
    band_all = np.digitize(radius, _LAYER_BANDS) - 1
    keep = (band_all >= 0) & (band_all < _LAYER_COUNT)
    angle = np.mod(np.degrees(theta), 180.0)
    bins = np.minimum((angle * (_LAYER_ANGLE_BINS / 180.0)).astype(np.intp), _LAYER_ANGLE_BINS - 1)
    band = band_all[keep]
    cell = band * _LAYER_ANGLE_BINS + bins[keep]
    counts = np.bincount(cell, None, _LAYER_COUNT * _LAYER_ANGLE_BINS).reshape(_LAYER_COUNT, _LAYER_ANGLE_BINS)
    return _LayerGrid(keep, band, cell, np.maximum(counts, 1.0), np.exp(4j * theta[keep]))


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
    blobs = _blob_features(luma)
    layers = _layer_features(pixels, grid.window, grid.layers)
    return np.concatenate([radial, centroid, *angular, *tone, blobs, layers]).astype(np.float32)


def _layer_features(pixels: npt.NDArray[np.float32], window: FloatArray, grid: _LayerGrid) -> npt.NDArray[np.float64]:
    """The ``layers`` family: per band, how alike the two main colour layers' angular amplitude profiles are, then
    per band the angle (degrees, 0..45) between their dominant four-fold orientations."""
    height, width = pixels.shape[:2]
    colour = np.log(pixels + np.float32(_LAYER_OFFSET)).reshape(-1, 3)
    colour -= colour.mean(axis=0)
    _, axes = np.linalg.eigh(colour.T @ colour)  # ascending: the last two columns are the main layers
    profiles = []
    orientations = []
    for k in (2, 1):
        layer = (colour @ axes[:, k]).reshape(height, width).astype(np.float32) * window
        amplitude = np.abs(np.fft.rfft2(layer))[grid.keep].astype(np.float64)
        profile = np.bincount(grid.cell, amplitude, grid.counts.size).reshape(grid.counts.shape) / grid.counts
        profile -= profile.mean(axis=1, keepdims=True)
        profiles.append(profile / (np.sqrt(np.sum(profile * profile, axis=1, keepdims=True)) + 1e-12))
        power = amplitude * amplitude
        orientations.append(
            np.bincount(grid.band, power * grid.quad.real, _LAYER_COUNT)
            + 1j * np.bincount(grid.band, power * grid.quad.imag, _LAYER_COUNT)
        )
    alike = np.sum(profiles[0] * profiles[1], axis=1)
    apart = np.abs(np.degrees(np.angle(orientations[0] * np.conj(orientations[1])))) / 4.0
    return np.concatenate([alike, apart])


@lru_cache(maxsize=4)
def _dog_filters(height: int, width: int) -> tuple[npt.NDArray[np.float32], ...]:
    """Difference-of-Gaussian transfer functions (sigma against 1.6 sigma) on the rfft2 grid, one per size scale."""
    fy = np.fft.fftfreq(height)[:, None]
    fx = np.fft.rfftfreq(width)[None, :]
    r2 = -2.0 * np.pi**2 * (fx * fx + fy * fy)
    return tuple((np.exp(r2 * s**2) - np.exp(r2 * (1.6 * s) ** 2)).astype(np.float32) for s in _SIZE_SCALES)


def _dark_minima(band: npt.NDArray[np.float32]) -> tuple[npt.NDArray[np.intp], npt.NDArray[np.intp], FloatArray]:
    """Rows, columns and depths (in median absolute responses) of the band's strict local minima."""
    height, width = band.shape
    # The band's typical response, from every other pixel each way: plenty for a median, a quarter the work.
    mad = float(np.median(np.abs(band[::2, ::2]))) + 1e-6
    inner = band[1:-1, 1:-1]
    minimum = np.ones(inner.shape, dtype=bool)
    for dy in (-1, 0, 1):
        for dx in (-1, 0, 1):
            if dy or dx:
                minimum &= inner < band[1 + dy : height - 1 + dy, 1 + dx : width - 1 + dx]
    rows, cols = np.nonzero(minimum)
    return rows + 1, cols + 1, (inner[minimum] / -mad).astype(np.float32)


def _blob_features(luma: npt.NDArray[np.float32]) -> npt.NDArray[np.float64]:
    """The ``blobs`` and ``sizes`` families: counts, spread and skew of dark specks, and their typical size."""
    height, width = luma.shape
    spectrum = np.fft.rfft2(luma - luma.mean()).astype(np.complex64)
    bands = [np.fft.irfft2(spectrum * dog, s=(height, width)).astype(np.float32) for dog in _dog_filters(height, width)]
    minima = {scale: _dark_minima(band) for scale, band in zip(_SIZE_SCALES, bands, strict=True)}
    area = height * width / 1e4
    counts: list[float] = []
    for scale in _BLOB_SCALES:
        rows, cols, depth = minima[scale]
        counts.extend(float(np.log1p(np.count_nonzero(depth > t) / area)) for t in _BLOB_STRENGTHS)
        strong = depth > _BLOB_STRENGTHS[1]
        cells = np.histogram2d(rows[strong], cols[strong], bins=_BLOB_CELLS, range=[[0, height], [0, width]])[0]
        counts.append(float(np.log((cells.var() + 1.0) / (cells.mean() + 1.0))))  # 0 when spread like rain
        band = bands[_SIZE_SCALES.index(scale)]
        unit = band / (float(band.std()) + 1e-6)
        counts.append(float(np.mean(unit * unit * unit)))
    sizes: list[float] = []
    for scale in _SIZE_REFERENCES:
        rows, cols, depth = minima[scale]
        strong = depth > _BLOB_STRENGTHS[1]
        ref = _SIZE_SCALES.index(scale)
        if np.count_nonzero(strong) < 3:
            sizes.extend([0.0] * (len(_SIZE_SCALES) - 1))
            continue
        responses = np.maximum(np.stack([-b[rows[strong], cols[strong]] for b in bands], axis=1), 1e-3)
        ratios = np.log(responses / responses[:, ref : ref + 1])
        sizes.extend(float(np.median(ratios[:, k])) for k in range(len(_SIZE_SCALES)) if k != ref)
    return np.asarray(counts + sizes, dtype=np.float64)


def fit_texture_stats(
    features: npt.ArrayLike, *, components: int = 32, shrinkage: float = 0.1, distance_ref: float = 1.0
) -> TextureStats:
    """Genuine references from an N x :data:`FEATURE_SIZE` array of genuine images' features.

    Per family, keeps up to ``components`` leading principal axes (at most
    one per four images) of the standardised features; the covariance
    is shrunk toward the identity by ``shrinkage`` (0..1], which keeps the
    distance stable when there are fewer images than features. Every block
    gets ``distance_ref`` as its limit (see :meth:`TextureStats.with_limits`).
    Raises :class:`ValueError` for fewer than 2 images or a wrong width.
    """
    x = np.asarray(features, dtype=np.float64)
    if x.ndim != 2 or x.shape[1] != FEATURE_SIZE or len(x) < 2:
        raise ValueError(f"need at least 2 feature vectors of {FEATURE_SIZE} values, got shape {x.shape}")
    if not 0.0 < shrinkage <= 1.0:
        raise ValueError(f"shrinkage must be in (0, 1], got {shrinkage}")
    blocks = []
    for name, part in FAMILIES:
        block = x[:, part]
        mean = block.mean(axis=0)
        spread = block.std(axis=0)
        # A feature that barely moves between genuine images (a speck count that is almost always 0) would turn
        # any change into an enormous z-score; no feature counts as steadier than a tenth of the family's median.
        std = np.maximum(spread, max(0.1 * float(np.median(spread)), 1e-6))
        values, vectors = np.linalg.eigh(np.cov((block - mean) / std, rowvar=False))
        # Every axis the images can pin down: a quarter as many axes as images, and no more than ``components``.
        keep = max(1, min(components, block.shape[1], len(x) // 4))
        order = np.argsort(values)[::-1][:keep]
        blocks.append(
            TextureBlock(
                name=name,
                mean=mean.astype(np.float32),
                std=std.astype(np.float32),
                components=vectors[:, order].T.astype(np.float32),
                variances=np.maximum(values[order], 0.0).astype(np.float32),
                shrinkage=float(shrinkage),
                distance_ref=float(distance_ref),
            )
        )
    return TextureStats(FEATURE_SET, tuple(blocks))


def raw_distances(
    features: Sequence[FloatArray] | npt.ArrayLike,
    stats: TextureStats,
    blocks: Sequence[TextureBlock] | None = None,
) -> tuple[float, ...]:
    """Per family, the RMS Mahalanobis distance of the mean of one or more feature vectors from genuine (or from
    ``blocks``, references in :data:`FAMILIES` order such as :attr:`TextureStats.material`)."""
    mean = _mean_vector(features, stats)
    out = []
    for block, (_, part) in zip(stats.blocks if blocks is None else blocks, FAMILIES, strict=True):
        z = (mean[part] - block.mean) / block.std
        lam = block.shrinkage
        projected = block.components.astype(np.float64) @ z
        inside = float(np.sum(projected**2 / ((1.0 - lam) * block.variances + lam)))
        outside = max(float(z @ z - projected @ projected), 0.0) / lam
        out.append(float(np.sqrt((inside + outside) / z.size)))
    return tuple(out)


def texture_distance(features: Sequence[FloatArray] | npt.ArrayLike, stats: TextureStats) -> float:
    """A region's distance from genuine texture, in units of each family's limit for a region of that many frames
    (the largest): above 1 is unlike genuine."""
    return max(_relative(features, stats))


def _relative(features: Sequence[FloatArray] | npt.ArrayLike, stats: TextureStats) -> list[float]:
    """Per family, the region's raw distance over the family's limit for its number of frames."""
    images = len(np.asarray(features, dtype=np.float64).reshape(-1, FEATURE_SIZE))
    return [d / b.limit(images) for d, b in zip(raw_distances(features, stats), stats.blocks, strict=True)]


def material_distance(features: FloatArray | npt.ArrayLike, stats: TextureStats) -> float | None:
    """How far one frame's texture lies from every image of the material seen in training, genuine or counterfeit,
    in units of each family's per-frame limit (the largest): above 1 the frame shows something else. None when
    ``stats`` holds no material references."""
    if not stats.material:
        return None
    x = np.asarray(features, dtype=np.float64).reshape(FEATURE_SIZE)
    distances = raw_distances(x, stats, stats.material)
    return max(d / b.distance_ref for d, b in zip(distances, stats.material, strict=True))


def furthest_group(features: Sequence[FloatArray] | npt.ArrayLike, stats: TextureStats) -> str:
    """What lies furthest from the genuine references: a phrase from :data:`GROUPS`, from the family furthest
    beyond its limit (within the spectrum, the part whose features stray most)."""
    relative = _relative(features, stats)
    worst = max(range(len(stats.blocks)), key=lambda i: relative[i])
    block, part = stats.blocks[worst], FAMILIES[worst][1]
    z = (_mean_vector(features, stats)[part] - block.mean) / block.std
    inside = [
        (phrase, slice(g.start - part.start, g.stop - part.start))
        for phrase, g in GROUPS
        if part.start <= g.start < part.stop
    ]
    return max(inside, key=lambda g: float(np.mean(z[g[1]] ** 2)))[0]


def head_logit(features: FloatArray | npt.ArrayLike, head: TextureHead) -> float:
    """The supervised texture score of one frame's features (a logit; higher is more genuine)."""
    x = np.asarray(features, dtype=np.float64).reshape(FEATURE_SIZE)
    return float(((x - head.mean) / head.std) @ head.weights.astype(np.float64) + head.bias)


def _mean_vector(features: Sequence[FloatArray] | npt.ArrayLike, stats: TextureStats) -> npt.NDArray[np.float64]:
    x = np.asarray(features, dtype=np.float64).reshape(-1, FEATURE_SIZE)
    if stats.features != FEATURE_SET or [b.name for b in stats.blocks] != [n for n, _ in FAMILIES]:
        raise InvalidArgument(f"texture statistics are for {stats.features!r}, this device measures {FEATURE_SET!r}")
    result: npt.NDArray[np.float64] = x.mean(axis=0)
    return result
