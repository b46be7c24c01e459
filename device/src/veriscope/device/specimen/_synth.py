"""Building blocks for periodic surface textures: noise, cells, stamps and the map bundle they feed.

Every field here lives on a torus (it wraps at the tile edges), so a surface
built from them can be sampled anywhere without seams.
"""

from __future__ import annotations

import math
from dataclasses import dataclass, replace
from typing import Any, Generic, TypeVar

import numpy as np
import numpy.typing as npt
from PIL import Image

F32 = npt.NDArray[np.float32]
P = TypeVar("P")

TEXEL_UM = 2.0
"""Nominal texel pitch of surface tiles, in micrometres; about the optical resolution of the microscope."""


@dataclass(frozen=True)
class SurfaceMaps:
    """The physical maps of one periodic surface tile, as a material generator produces them.

    Arrays are ``ny x nx`` (``x 3`` for colours) float32 and wrap at the edges.
    """

    size_um: tuple[float, float]
    """Tile period along x and y, in micrometres."""
    albedo: F32
    """Diffuse reflectance under the white ring, linear RGB 0..1 (cavities already darkened)."""
    height_um: F32
    """Surface relief in micrometres."""
    gloss: F32
    """Specular strength 0..1 (coatings and finishes)."""
    fluorescence: F32
    """Emission under 365 nm light, relative 0..1."""
    fluorescence_rgb: tuple[float, float, float]
    """Colour of the emission (optical brighteners glow blue, natural materials dull yellow)."""
    skew_deg: float = 0.0
    """Shear of the tile's x axis when placed on the item (woven fabrics that are off square)."""


def f32(x: object) -> F32:
    """``x`` as a float32 array (no copy when it already is one)."""
    return np.asarray(x, dtype=np.float32)


def tile_shape(size_um: tuple[float, float]) -> tuple[int, int]:
    """Texel counts (ny, nx) for a tile of ``size_um``: multiples of 8 (three exact pyramid levels) nearest
    :data:`TEXEL_UM`, so a texel is within 0.3 % of it whatever the tile size and no item's texture is
    rendered finer or coarser than another's."""

    def count(length_um: float) -> int:
        return max(256, 8 * round(length_um / TEXEL_UM / 8))

    return count(size_um[1]), count(size_um[0])


def coords_um(shape: tuple[int, int], size_um: tuple[float, float]) -> tuple[F32, F32]:
    """Texel-centre coordinates (x, y) in micrometres, as broadcastable row and column vectors."""
    ny, nx = shape
    x = ((np.arange(nx, dtype=np.float32) + 0.5) * np.float32(size_um[0] / nx))[None, :]
    y = ((np.arange(ny, dtype=np.float32) + 0.5) * np.float32(size_um[1] / ny))[:, None]
    return x, y


def band_noise(
    rng: np.random.Generator,
    shape: tuple[int, int],
    size_um: tuple[float, float],
    scale_um: float,
    *,
    beta: float = 0.0,
) -> F32:
    """Periodic Gaussian noise whose features are about ``scale_um`` across; zero mean, unit variance.

    The spectrum is a Gaussian low-pass at ``1/scale_um`` shaped by ``k**-beta``
    (0: blobs of one size; 1..2: fractal, with fine detail riding on large
    swells). Large features are synthesised on a coarse grid and upsampled,
    which keeps big tiles cheap.
    """
    ny, nx = shape
    texel_um = min(size_um[0] / nx, size_um[1] / ny)
    # Synthesise on a grid of about 2 samples per feature (bicubic upsampling fills in), never finer than the tile.
    factor = 1
    while (
        factor < 16 and scale_um / (texel_um * factor * 2) >= 1.6 and nx % (factor * 2) == 0 and ny % (factor * 2) == 0
    ):
        factor *= 2
    sy, sx = ny // factor, nx // factor
    white = rng.standard_normal((sy, sx), dtype=np.float32)
    spec = np.fft.rfft2(white)
    ky = np.fft.fftfreq(sy, d=size_um[1] / sy).astype(np.float32)[:, None]
    kx = np.fft.rfftfreq(sx, d=size_um[0] / sx).astype(np.float32)[None, :]
    k = np.sqrt(kx * kx + ky * ky)
    k0 = np.float32(1.0 / max(scale_um, 1e-3))
    filt = np.exp(-0.5 * (k / k0) ** 2)
    if beta:
        filt *= np.maximum(k, k0 * np.float32(0.05)) ** np.float32(-beta)
    filt[0, 0] = 0.0
    field = np.fft.irfft2(spec * filt, s=(sy, sx)).astype(np.float32)
    if factor > 1:
        field = upsample_periodic(field, factor)
    std = float(field.std())
    return f32((field - field.mean()) / np.float32(std if std > 0 else 1.0))


def speckle(rng: np.random.Generator, shape: tuple[int, int]) -> F32:
    """Fine periodic noise a few texels across (pigment grains, fibre ends), unit variance; cheap, no FFT."""
    white = rng.standard_normal(shape, dtype=np.float32)
    # A [1 2 1] kernel in each direction: grains about two texels wide.
    smooth = 2.0 * white + np.roll(white, 1, axis=0) + np.roll(white, -1, axis=0)
    smooth = 2.0 * smooth + np.roll(smooth, 1, axis=1) + np.roll(smooth, -1, axis=1)
    return (smooth * np.float32(1.0 / math.sqrt(36.0))).astype(np.float32)


def upsample_periodic(field: F32, factor: int, *, linear: bool = False) -> F32:
    """Enlarge a periodic field by an integer ``factor`` without a seam (bicubic or bilinear, wrapping)."""
    pad = 3
    padded = np.pad(field, pad, mode="wrap")
    sy, sx = field.shape
    big = Image.fromarray(padded.astype(np.float32), mode="F").resize(
        (sx * factor, sy * factor),
        Image.Resampling.BILINEAR if linear else Image.Resampling.BICUBIC,
        box=(pad, pad, pad + sx, pad + sy),
    )
    return np.asarray(big, dtype=np.float32)


def blur_periodic(field: F32, size_um: tuple[float, float], sigma_um: float) -> F32:
    """Gaussian blur of a periodic field (sigma in micrometres), computed in the Fourier domain."""
    if sigma_um <= 0:
        return field
    ny, nx = field.shape
    ky = np.fft.fftfreq(ny, d=size_um[1] / ny).astype(np.float32)[:, None]
    kx = np.fft.rfftfreq(nx, d=size_um[0] / nx).astype(np.float32)[None, :]
    otf = np.exp(np.float32(-2.0 * np.pi**2 * sigma_um**2) * (kx * kx + ky * ky))
    return np.fft.irfft2(np.fft.rfft2(field) * otf, s=(ny, nx)).astype(np.float32)


def voronoi(
    rng: np.random.Generator,
    shape: tuple[int, int],
    size_um: tuple[float, float],
    cell_um: float,
    *,
    jitter: float,
    weight_spread: float = 0.0,
) -> tuple[F32, npt.NDArray[np.int32]]:
    """Periodic cells: distance from each texel to its cell border (um) and the cell id.

    Seeds sit on a jittered grid (``jitter`` 0: a regular lattice, 1: fully
    irregular); ``weight_spread`` gives cells additive weights so sizes vary,
    as natural grain does. The border distance is ``(d2 - d1) / 2`` for the two
    nearest (weighted) seeds. It is computed at half resolution and
    interpolated: the distance field is smooth apart from its ridges.
    """
    ny, nx = shape
    half = (ny // 2, nx // 2)
    gx = max(2, round(size_um[0] / cell_um))
    gy = max(2, round(size_um[1] / cell_um))
    cx, cy = size_um[0] / gx, size_um[1] / gy
    px = ((np.arange(gx)[None, :] + 0.5 + jitter * rng.uniform(-0.5, 0.5, (gy, gx))) * cx).astype(np.float32).ravel()
    py = ((np.arange(gy)[:, None] + 0.5 + jitter * rng.uniform(-0.5, 0.5, (gy, gx))) * cy).astype(np.float32).ravel()
    weights = (weight_spread * cell_um * rng.uniform(-0.5, 0.5, gy * gx)).astype(np.float32)
    x, y = coords_um(half, size_um)
    ix = np.floor(x / np.float32(cx)).astype(np.int32)
    iy = np.floor(y / np.float32(cy)).astype(np.int32)
    d1 = np.full(half, np.inf, dtype=np.float32)
    d2 = np.full(half, np.inf, dtype=np.float32)
    ident = np.zeros(half, dtype=np.int32)
    # Seeds move up to half a cell and weights shift borders further, so search two cells out (5 x 5);
    # a 3 x 3 search leaves straight seams along the seed grid.
    reach = 2 if jitter > 0.5 or weight_spread > 0.1 else 1
    span = range(-reach, reach + 1)
    for oy in span:
        jy = iy + oy
        row = np.mod(jy, gy) * gx
        shift_y = (np.floor_divide(jy, gy) * size_um[1]).astype(np.float32)
        for ox in span:
            jx = ix + ox
            shift_x = (np.floor_divide(jx, gx) * size_um[0]).astype(np.float32)
            cell = row + np.mod(jx, gx)
            dx = x - (px.take(cell) + shift_x)
            dy = y - (py.take(cell) + shift_y)
            d = np.sqrt(dx * dx + dy * dy) - weights.take(cell)
            closer = d < d1
            np.minimum(d2, np.maximum(d1, d), out=d2)
            np.minimum(d1, d, out=d1)
            np.copyto(ident, cell, where=closer)
    border = upsample_periodic(0.5 * (d2 - d1), 2, linear=True)
    cells = np.repeat(np.repeat(ident, 2, axis=0), 2, axis=1)
    return border, cells


def stamp_pits(
    rng: np.random.Generator,
    shape: tuple[int, int],
    size_um: tuple[float, float],
    centres_um: npt.NDArray[np.float64],
    radius_um: npt.NDArray[np.float64],
) -> F32:
    """A periodic map of Gaussian pits (peak 1) at ``centres_um`` (n x 2, x then y) with the given radii."""
    ny, nx = shape
    out = np.zeros(shape, dtype=np.float32)
    sx, sy = size_um[0] / nx, size_um[1] / ny
    for (cx, cy), r in zip(centres_um, radius_um, strict=True):
        half = int(np.ceil(2.5 * r / min(sx, sy))) + 1
        jx = np.arange(int(cx / sx) - half, int(cx / sx) + half + 1)
        jy = np.arange(int(cy / sy) - half, int(cy / sy) + half + 1)
        dx = ((jx + 0.5) * sx - cx)[None, :]
        dy = ((jy + 0.5) * sy - cy)[:, None]
        blob = np.exp(-(dx * dx + dy * dy) / (2.0 * r * r)).astype(np.float32)
        rows = np.mod(jy, ny)[:, None]
        cols = np.mod(jx, nx)[None, :]
        out[rows, cols] = np.maximum(out[rows, cols], blob)
    return out


def smoothstep(edge0: float, edge1: float, x: F32) -> F32:
    """Hermite step from 0 at ``edge0`` to 1 at ``edge1``."""
    t = np.clip((x - np.float32(edge0)) / np.float32(edge1 - edge0), 0.0, 1.0)
    return f32(t * t * (3.0 - 2.0 * t))


def rgb(colour: tuple[float, float, float]) -> F32:
    """A colour as a broadcastable (1, 1, 3) float32 array."""
    return np.asarray(colour, dtype=np.float32)[None, None, :]


@dataclass(frozen=True)
class Recipe(Generic[P]):
    """How one source makes one material: nominal parameters, and what sets it apart from genuine."""

    params: P
    """Nominal parameters; each item varies around them."""
    description: str
    """One sentence on the defect, for model cards and explanations ("" for genuine)."""
    superfake: bool = False
    """True when one poor image cannot tell it from genuine."""


def vary(params: P, spread: dict[str, float], rng: np.random.Generator) -> P:
    """Manufacturing variance: ``params`` with each field in ``spread`` moved by a normal draw of that std."""
    changes: dict[str, Any] = {
        name: getattr(params, name) + float(rng.normal(0.0, std)) for name, std in spread.items()
    }
    return replace(params, **changes)  # type: ignore[type-var]
