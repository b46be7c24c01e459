"""The quality gate: decides whether a frame is good enough to judge, and says what to fix.

Every capture and every upload goes through :func:`assess`. A frame that fails
is never used for a verdict. Each failure is a stable issue name with a hint
for the person holding the scanner (:data:`HINTS`).

The metrics are computed on a grey copy box-downscaled to at most
``ANALYSIS_WIDTH_PX`` wide, so the gate costs little next to the capture itself:

- ``mean_level``: mean grey level 0..1.
- ``clipped_fraction``: fraction of pixels at or above ``clip_level`` outside
  specular highlights: the surface itself is exposed too brightly.
- ``glare_fraction``: fraction of pixels in specular highlights: near-white,
  unsaturated (specular light has the LEDs' colour, not the surface's), and
  well above the frame's median level.
- ``sharpness``: variance of the Laplacian divided by the squared mean level,
  so it measures focus rather than brightness.
- ``motion_score``, ``motion_length_px``, ``motion_angle_deg``: evidence of a
  smear along one line. Movement during the exposure convolves the frame with
  a short line, whose spectrum has periodic zeros across that line; in the
  cepstrum (the Fourier transform of the log power spectrum) they make one
  sharp negative peak at the smear's length and direction. ``motion_score``
  is the depth of the strongest such peak, in robust standard deviations of
  the cepstrum, counting only a peak that is deeper than the point at the same
  distance in the perpendicular direction and than its neighbour towards the
  origin. Texture, however anisotropic (twill), shapes the spectrum but has no
  periodic zeros, so it does not score; nor does defocus, which blurs every
  direction alike, nor the one-sided shading of raking light, whose cepstrum
  falls off steadily from the origin. ``motion_length_px`` is the length in
  pixels of the frame as given.
- ``motion_detail_ratio``: fine detail (second differences) along the smear's
  direction over fine detail across it; a real smear removes detail along its
  direction only, so it is well below 1.
- ``focus_uniformity``: the frame is cut into three bands across each of four
  directions; it is the least sharp band's Laplacian energy over the sharpest
  one's, for the worst direction. A scanner tilted on the surface, or pressed
  down at one edge only, blurs the bands at one or both ends; so does a
  surface whose texture differs across the field (two inks of a printed
  canvas), so only gross unevenness fails on it.
- ``edge_focus_ratio``: the frame is cut into seven strips across each of eight
  directions; it is the Laplacian energy of the sharper of the two outermost
  strips over that of the middle three, for the worst direction (at most 1).
  Autofocus puts the middle of a tilted field in focus, so a tilt softens both
  ends along its direction at once, which vignetting or the raking light's
  one-sided fall-off do not: this is the sensitive tilt check.
- ``edge_fine_ratio``: the same ratio of the share of fine detail (the Laplacian
  energy over that of the frame halved). A printed canvas may show a paler ink
  at both ends than in the middle, with less detail but as fine; blur takes the
  finest detail first. The ends count as blurred only when this ratio is below
  :data:`EDGE_BLUR_FINE_RATIO` too.

What a tilt does depends on the depth of field: about 30 um for this
optics' 1.5 mm field (a numerical aperture near 0.1, as usual for so wide a
field; depths of a few micrometres belong to 20x objectives and fields a fifth
as wide). With the middle of the field in focus, a tilt of t degrees about the
frame's short axis puts its left and right edges tan(t) x 750 um from the
focal plane, about its long axis the top and bottom edges tan(t) x 560 um.
From 2 degrees in any direction the ends lie well beyond half the depth of
field: on every simulated material and source ``edge_focus_ratio`` falls
below 0.65 and ``edge_fine_ratio`` below 0.89. Flat captures stay above 0.74,
or, where a paler ink fills both ends, keep their fine detail. At 1.5 degrees
nine tilts in ten are flagged: all those about the short axis and most
diagonal ones (a smooth coated canvas shows too little fine detail for a
diagonal one to be sure). About the long axis 1.5 degrees keeps the top and
bottom edges within 15 um, half the depth of field: every part of the frame is
still in focus, its ends lose no more detail than texture varies across a flat
frame, and it is not reliably flagged; nor does it need to be.

Exposure is judged first (``underexposed``, ``overexposed``, ``glare``; any of
them may fail together), then, in a frame bright enough to show detail, focus:
``motion_blur``; else ``uneven_focus`` when part of the frame is sharp but the
bands or the ends differ; else ``out_of_focus`` when the whole frame is soft.

Thresholds come from the model bundle's ``quality`` section (global, per
lighting channel and per material; see
:meth:`~veriscope.device.inference.ModelBundle.quality_overrides`) over
:data:`LIGHTING_DEFAULTS` and :data:`DEFAULT_THRESHOLDS`.
"""

from __future__ import annotations

import functools
import math
from collections.abc import Mapping
from dataclasses import dataclass, field

import numpy as np
import numpy.typing as npt

from veriscope.device.errors import InvalidArgument
from veriscope.device.types import RGBImage

ANALYSIS_WIDTH_PX = 512
"""Frames are box-downscaled to at most this width before the checks."""
MOTION_WINDOW_PX = 256
"""Side of the windows whose power spectra are averaged for the motion check."""
MOTION_MIN_LAG_PX = 3.0
MOTION_MAX_LAG_PX = 24.0
"""Smear lengths the motion check looks for, in pixels of its analysis image (at least half the frame's scale)."""

DEFAULT_THRESHOLDS: dict[str, float] = {
    "min_mean_level": 0.2,
    "max_clipped_fraction": 0.02,
    "clip_level": 0.98,
    "max_glare_fraction": 0.004,
    "min_sharpness": 0.0012,
    "max_motion_score": 10.0,
    "max_motion_detail_ratio": 0.9,
    "min_focus_uniformity": 0.3,
    "min_edge_focus_ratio": 0.0,
}
"""Default thresholds of the gate, overridable from the model bundle.

A frame fails ``motion_blur`` when ``motion_score`` exceeds
``max_motion_score`` and ``motion_detail_ratio`` is below
``max_motion_detail_ratio``; ``uneven_focus`` when ``focus_uniformity`` is below
``min_focus_uniformity``, or ``edge_focus_ratio`` below ``min_edge_focus_ratio``
(0 turns that check off, as for uploads) while ``edge_fine_ratio`` is below
:data:`EDGE_BLUR_FINE_RATIO`."""

LIGHTING_DEFAULTS: dict[str, dict[str, float]] = {
    "white_ring": {"min_focus_uniformity": 0.55, "min_edge_focus_ratio": 0.7},
    "uv": {"min_focus_uniformity": 0.55, "min_edge_focus_ratio": 0.55},
    "raking": {"min_focus_uniformity": 0.35, "min_edge_focus_ratio": 0.6},
}
"""Thresholds for the unit's own frames, by the lighting channel they were taken under, before any bundle override.

Through the contact optics a surface fills the field with texture of even
statistics, so uneven sharpness across one of the unit's frames means uneven
focus; an upload (no lighting known) may come from other optics or frame a
scene whose detail varies across it, so only gross unevenness fails it and
``edge_focus_ratio`` is not checked. The raking LED lights the field from one
side and falls off across it, so its frames show more relief at one end than
at the other; the UV LED's hot spot dims the ends of the field."""

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

_GLARE_MIN_LEVEL = 0.92
_GLARE_MAX_SATURATION = 0.1
_GLARE_MIN_RISE = 0.2
"""A highlight pixel is near-white, unsaturated, and this much brighter than the frame's median level."""
EDGE_BLUR_FINE_RATIO = 0.92
"""``edge_fine_ratio`` below which ends with less detail than the middle (``edge_focus_ratio``) are taken for blur."""
_BAND_DIRECTIONS = 4
_EDGE_STRIPS = 7
_EDGE_DIRECTIONS = 8
_CELL_PX = 4
_LUMA = np.array([0.299, 0.587, 0.114], dtype=np.float32)


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


def check_overrides(overrides: Mapping[str, object]) -> dict[str, float]:
    """``overrides`` as floats, or :class:`InvalidArgument` naming an unknown key or a value that is not a number."""
    checked: dict[str, float] = {}
    for key, value in overrides.items():
        if key not in DEFAULT_THRESHOLDS:
            raise InvalidArgument(f"quality threshold {key!r} is unknown; known: {', '.join(DEFAULT_THRESHOLDS)}")
        if isinstance(value, bool) or not isinstance(value, int | float) or not np.isfinite(value):
            raise InvalidArgument(f"quality threshold {key!r} must be a finite number, got {value!r}")
        checked[key] = float(value)
    return checked


def thresholds_from(overrides: Mapping[str, float] | None, *, lighting: str | None = None) -> dict[str, float]:
    """The thresholds for a frame under ``lighting`` ("white_ring", "raking", "uv"; None: no channel defaults).

    :data:`DEFAULT_THRESHOLDS`, then :data:`LIGHTING_DEFAULTS` for the channel,
    then ``overrides`` (from the bundle). Raises :class:`InvalidArgument` for an
    unknown key or a value that is not a finite number.
    """
    merged = dict(DEFAULT_THRESHOLDS)
    if lighting is not None:
        merged.update(LIGHTING_DEFAULTS.get(str(lighting), {}))
    merged.update(check_overrides(overrides or {}))
    return merged


# --- Analysis image ------------------------------------------------------------------------------------------


def _downscale_factor(width: int) -> int:
    return max(1, math.ceil(width / ANALYSIS_WIDTH_PX))


def _analysis_rgb(pixels: RGBImage) -> tuple[npt.NDArray[np.float32], int]:
    """RGB 0..1 box-downscaled to at most ANALYSIS_WIDTH_PX wide, and the factor used."""
    if pixels.ndim != 3 or pixels.shape[2] != 3 or pixels.dtype != np.uint8:
        raise InvalidArgument(f"frame must be an HxWx3 uint8 array, got shape {pixels.shape} dtype {pixels.dtype}")
    factor = _downscale_factor(pixels.shape[1])
    h = pixels.shape[0] // factor * factor
    w = pixels.shape[1] // factor * factor
    if h // factor < 16 or w // factor < 16:
        raise InvalidArgument(f"frame of {pixels.shape[1]}x{pixels.shape[0]} px is too small to assess")
    if factor == 1:
        return pixels.astype(np.float32) * np.float32(1.0 / 255.0), 1
    # Exact box sums, rows first (whole rows added, integers), then columns; rounding to 8 bits here would fill
    # the spectral zeros the motion check looks for.
    cropped = pixels[:h, :w]
    rows = cropped[0::factor].astype(np.uint16 if factor <= 256 else np.uint32)
    for k in range(1, factor):
        np.add(rows, cropped[k::factor], out=rows)
    columns = rows.reshape(h // factor, w // factor, factor, 3)
    sums = columns[:, :, 0, :].astype(np.float32)
    for k in range(1, factor):
        np.add(sums, columns[:, :, k, :], out=sums)
    sums *= np.float32(1.0 / (255.0 * factor * factor))
    return sums, factor


def _grey(pixels: RGBImage) -> npt.NDArray[np.float32]:
    """Grey levels 0..1, box-downscaled to at most ANALYSIS_WIDTH_PX wide."""
    rgb, _ = _analysis_rgb(pixels)
    return rgb @ _LUMA


def _halve(grey: npt.NDArray[np.float32]) -> npt.NDArray[np.float32]:
    h, w = grey.shape[0] // 2 * 2, grey.shape[1] // 2 * 2
    halved: npt.NDArray[np.float32] = grey[:h, :w].reshape(h // 2, 2, w // 2, 2).mean(axis=(1, 3), dtype=np.float32)
    return halved


# --- Checks --------------------------------------------------------------------------------------------------


def _laplacian(grey: npt.NDArray[np.float32]) -> npt.NDArray[np.float32]:
    return grey[1:-1, :-2] + grey[1:-1, 2:] + grey[:-2, 1:-1] + grey[2:, 1:-1] - np.float32(4.0) * grey[1:-1, 1:-1]


def sharpness(pixels: RGBImage) -> float:
    """Focus measure of a frame: variance of the Laplacian over the squared mean level (dimensionless)."""
    return _sharpness(_grey(pixels))


def _sharpness(grey: npt.NDArray[np.float32]) -> float:
    mean = float(grey.mean())
    return float(_laplacian(grey).var()) / max(mean * mean, 1e-4)


def _exposure(rgb: npt.NDArray[np.float32], grey: npt.NDArray[np.float32], clip_level: float) -> tuple[float, float]:
    """(clipped_fraction outside highlights, glare_fraction)."""
    r, g, b = rgb[..., 0], rgb[..., 1], rgb[..., 2]
    lowest = np.minimum(np.minimum(r, g), b)
    saturation = np.maximum(np.maximum(r, g), b) - lowest
    typical = float(np.median(grey))
    highlight = (
        (lowest >= _GLARE_MIN_LEVEL) & (saturation < _GLARE_MAX_SATURATION) & (grey >= typical + _GLARE_MIN_RISE)
    )
    clipped = (grey >= clip_level) & ~highlight
    return float(clipped.mean()), float(highlight.mean())


@functools.lru_cache(maxsize=8)
def _strips(cells: tuple[int, int], count: int, directions: int) -> tuple[npt.NDArray[np.intp], ...]:
    """For each of ``directions`` directions, the strip (0..count-1) of every cell: equal shares along it."""
    h, w = cells
    y = (np.arange(h, dtype=np.float32) - 0.5 * (h - 1))[:, None]
    x = (np.arange(w, dtype=np.float32) - 0.5 * (w - 1))[None, :]
    labels = []
    for k in range(directions):
        a = math.pi * k / directions
        d = (x * np.float32(math.cos(a)) + y * np.float32(math.sin(a))).ravel()
        edges = np.quantile(d, np.arange(1, count) / count)
        labels.append(np.searchsorted(edges, d, side="right").astype(np.intp))
    return tuple(labels)


def _strip_means(cells: npt.NDArray[np.float32], labels: npt.NDArray[np.intp], count: int) -> npt.NDArray[np.float64]:
    return np.bincount(labels, weights=cells.ravel(), minlength=count) / np.maximum(
        np.bincount(labels, minlength=count), 1
    )


def _cell_means(values: npt.NDArray[np.float32], cell: int) -> npt.NDArray[np.float32]:
    h, w = values.shape[0] // cell, values.shape[1] // cell
    means: npt.NDArray[np.float32] = values[: h * cell, : w * cell].reshape(h, cell, w, cell).mean(axis=(1, 3))
    return means


def _edge_ratio(strips: npt.NDArray[np.float64]) -> float:
    """The sharper outermost strip's value over the middle three strips' (inf when they are all zero)."""
    centre = float(strips[_EDGE_STRIPS // 2 - 1 : _EDGE_STRIPS // 2 + 2].mean())
    return max(float(strips[0]), float(strips[-1])) / centre if centre > 1e-12 else math.inf


def _focus_evenness(grey: npt.NDArray[np.float32]) -> tuple[float, float, float, float]:
    """(focus_uniformity, edge_focus_ratio, edge_fine_ratio, sharpness of the sharpest third) of a grey image.

    All compare the Laplacian energy of strips of the frame, averaged over
    cells of ``_CELL_PX`` x ``_CELL_PX`` pixels first (strip edges fall between
    cells, and strips cost little to sum in eight directions). The fine ratio
    divides each strip's energy by that of the frame halved, whose cells cover
    the same pixels.
    """
    fine = _cell_means(_laplacian(grey) ** 2, _CELL_PX)
    coarse = _cell_means(_laplacian(_halve(grey)) ** 2, _CELL_PX // 2)
    h, w = min(fine.shape[0], coarse.shape[0]), min(fine.shape[1], coarse.shape[1])
    fine, coarse = fine[:h, :w], coarse[:h, :w]
    uniformity, best = 1.0, 0.0
    for labels in _strips((h, w), 3, _BAND_DIRECTIONS):
        bands = _strip_means(fine, labels, 3)
        best = max(best, float(bands.max()))
        if bands.max() > 1e-12:
            uniformity = min(uniformity, float(bands.min() / bands.max()))
    edge_ratio, fine_ratio = 1.0, 1.0
    for labels in _strips((h, w), _EDGE_STRIPS, _EDGE_DIRECTIONS):
        strips = _strip_means(fine, labels, _EDGE_STRIPS)
        edge_ratio = min(edge_ratio, _edge_ratio(strips))
        fine_ratio = min(
            fine_ratio, _edge_ratio(strips / np.maximum(_strip_means(coarse, labels, _EDGE_STRIPS), 1e-12))
        )
    mean = float(grey.mean())
    return uniformity, edge_ratio, fine_ratio, best / max(mean * mean, 1e-4)


@dataclass(frozen=True)
class _CepstrumIndex:
    """Flat indices into an n x n centred cepstrum for the lags the motion check searches."""

    ring: npt.NDArray[np.intp]
    """Every lag MOTION_MIN_LAG_PX..MOTION_MAX_LAG_PX from the centre."""
    perpendicular: npt.NDArray[np.intp]
    """The lag at the same distance, rotated by 90 degrees."""
    inner: npt.NDArray[np.intp]
    """The lag one pixel nearer the centre along the same direction."""
    length: npt.NDArray[np.float64]
    angle_deg: npt.NDArray[np.float64]
    window: npt.NDArray[np.float32]
    """2-D Hann window."""


@functools.lru_cache(maxsize=4)
def _cepstrum_index(n: int) -> _CepstrumIndex:
    o = n // 2
    dy, dx = np.mgrid[-o : n - o, -o : n - o]
    r = np.hypot(dy, dx)
    ring = np.flatnonzero((r >= MOTION_MIN_LAG_PX) & (r <= MOTION_MAX_LAG_PX))
    ry, rx, rr = dy.ravel()[ring], dx.ravel()[ring], r.ravel()[ring]
    scale = (rr - 1.0) / rr
    inner = (np.rint(ry * scale).astype(np.intp) + o) * n + np.rint(rx * scale).astype(np.intp) + o
    perpendicular = (rx + o) * n + (-ry + o)
    hann = np.hanning(n).astype(np.float32)
    return _CepstrumIndex(
        ring=ring,
        perpendicular=perpendicular.astype(np.intp),
        inner=inner,
        length=rr,
        angle_deg=np.degrees(np.arctan2(ry, rx)) % 180.0,
        window=np.outer(hann, hann),
    )


def _cepstrum(grey: npt.NDArray[np.float32], n: int) -> npt.NDArray[np.float64]:
    """Centred real cepstrum of the power spectrum averaged over half-overlapping n x n windows."""
    h, w = grey.shape
    index = _cepstrum_index(n)
    ys = np.unique(np.linspace(0, h - n, max(1, math.ceil(2 * (h - n) / n) + 1)).astype(int))
    xs = np.unique(np.linspace(0, w - n, max(1, math.ceil(2 * (w - n) / n) + 1)).astype(int))
    power = np.zeros((n, n // 2 + 1))
    for y in ys:
        for x in xs:
            patch = grey[y : y + n, x : x + n]
            power += np.abs(np.fft.rfft2((patch - patch.mean()) * index.window)) ** 2
    power /= len(ys) * len(xs)
    log_power = np.log(power + 1e-6 * float(power.mean()) + 1e-30)
    return np.fft.fftshift(np.fft.irfft2(log_power, s=(n, n)))


def _motion(grey: npt.NDArray[np.float32]) -> tuple[float, float, float]:
    """(score, length_px, angle_deg) of the strongest smear in ``grey``; (0, 0, 0) when it is too small to tell."""
    n = min(MOTION_WINDOW_PX, grey.shape[0], grey.shape[1]) // 2 * 2
    if n < 64:
        return 0.0, 0.0, 0.0
    index = _cepstrum_index(n)
    c = _cepstrum(grey, n).ravel()
    values = c[index.ring]
    middle = float(np.median(values))
    spread = 1.4826 * float(np.median(np.abs(values - middle))) + 1e-12
    # A smear's peak is deep, deeper than across it, and deeper than the lag before it.
    score = np.minimum(np.minimum(middle - values, c[index.perpendicular] - values), c[index.inner] - values)
    best = int(np.argmax(score))
    return float(score[best]) / spread, float(index.length[best]), float(index.angle_deg[best])


_STEPS = ((1, 0), (2, 1), (1, 1), (1, 2), (0, 1), (-1, 2), (-1, 1), (-2, 1))
"""Pixel steps in eight directions; step k and step (k + 4) % 8 are perpendicular and equally long."""


def _second_difference_energy(grey: npt.NDArray[np.float32], dx: int, dy: int) -> float:
    p = max(abs(dx), abs(dy))
    h, w = grey.shape
    centre = grey[p : h - p, p : w - p]
    ahead = grey[p + dy : h - p + dy, p + dx : w - p + dx]
    behind = grey[p - dy : h - p - dy, p - dx : w - p - dx]
    return float(np.mean((ahead + behind - 2.0 * centre) ** 2))


def _detail_ratio(grey: npt.NDArray[np.float32], angle_deg: float) -> float:
    """Fine detail along ``angle_deg`` over fine detail across it."""
    angles = [math.degrees(math.atan2(dy, dx)) % 180.0 for dx, dy in _STEPS]
    k = min(range(len(_STEPS)), key=lambda i: abs((angle_deg - angles[i] + 90.0) % 180.0 - 90.0))
    along = _second_difference_energy(grey, *_STEPS[k])
    across = _second_difference_energy(grey, *_STEPS[(k + 4) % len(_STEPS)])
    return along / max(across, 1e-12)


def assess(
    pixels: RGBImage, thresholds: Mapping[str, float] | None = None, *, lighting: str | None = None
) -> QualityReport:
    """Run every check on an RGB frame and return the report.

    ``thresholds`` override the defaults (see :func:`thresholds_from`);
    ``lighting`` ("white_ring", "raking", "uv") selects the channel's defaults
    first. Raises :class:`InvalidArgument` when ``pixels`` is not an HxWx3
    uint8 array of at least 16x16 pixels after downscaling, or for a bad
    threshold.
    """
    t = thresholds_from(thresholds, lighting=lighting)
    rgb, factor = _analysis_rgb(pixels)
    grey = rgb @ _LUMA
    mean_level = float(grey.mean())
    clipped, glare = _exposure(rgb, grey, t["clip_level"])
    sharp = _sharpness(grey)
    uniformity, edge_ratio, fine_ratio, sharpest_band = _focus_evenness(grey)
    # The motion check never looks at single pixels of the frame: JPEG's 8x8 blocks would look like smears.
    motion_grey, motion_factor = (grey, factor) if factor > 1 else (_halve(grey), 2)
    score, length, angle = _motion(motion_grey)
    ratio = _detail_ratio(motion_grey, angle) if score > 0 else 1.0
    metrics = {
        "mean_level": mean_level,
        "clipped_fraction": clipped,
        "glare_fraction": glare,
        "sharpness": sharp,
        "motion_score": score,
        "motion_length_px": length * motion_factor,
        "motion_angle_deg": angle,
        "motion_detail_ratio": ratio,
        "focus_uniformity": uniformity,
        "edge_focus_ratio": edge_ratio,
        "edge_fine_ratio": fine_ratio,
    }
    issues: list[QualityIssue] = []

    def fail(code: str, value: float, threshold: float) -> None:
        issues.append(QualityIssue(code, HINTS[code], value, threshold))

    if mean_level < t["min_mean_level"]:
        fail("underexposed", mean_level, t["min_mean_level"])
    if clipped > t["max_clipped_fraction"]:
        fail("overexposed", clipped, t["max_clipped_fraction"])
    if glare > t["max_glare_fraction"]:
        fail("glare", glare, t["max_glare_fraction"])
    if mean_level >= t["min_mean_level"]:
        # Focus checks mean nothing in a frame too dark to show detail.
        if score > t["max_motion_score"] and ratio < t["max_motion_detail_ratio"]:
            fail("motion_blur", score, t["max_motion_score"])
        elif sharpest_band >= t["min_sharpness"] and (
            uniformity < t["min_focus_uniformity"]
            or (edge_ratio < t["min_edge_focus_ratio"] and fine_ratio < EDGE_BLUR_FINE_RATIO)
        ):
            # Part of the frame is sharp: the scanner is tilted, not the focus lost.
            if uniformity < t["min_focus_uniformity"]:
                fail("uneven_focus", uniformity, t["min_focus_uniformity"])
            else:
                fail("uneven_focus", edge_ratio, t["min_edge_focus_ratio"])
        elif sharp < t["min_sharpness"]:
            fail("out_of_focus", sharp, t["min_sharpness"])
    return QualityReport(issues=tuple(issues), metrics=metrics)
