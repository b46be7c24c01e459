"""Woven fabric: warp and weft yarns interlaced as twill or plain weave, with twisted fibres and slubs.

Warp yarns run along the tile's y axis, weft along x. The tile holds a whole
number of weave repeats in each direction, so thread pitches are exact and the
tile wraps; weave skew is applied when the fabric is placed on the item.
"""

from __future__ import annotations

import math
from dataclasses import dataclass

import numpy as np

from veriscope.device.specimen._synth import (
    F32,
    Recipe,
    SurfaceMaps,
    band_noise,
    coords_um,
    f32,
    rgb,
    tile_shape,
)

_TILE_TARGET_UM = 2500.0
_BRIGHTENER = (0.25, 0.45, 1.0)


@dataclass(frozen=True)
class FabricParams:
    """Parameters of a woven fabric (lengths in micrometres, angles in degrees)."""

    repeat: int = 3
    """Weave repeat: 2 plain weave, 3 a 2/1 twill, 4 a 3/1 twill."""
    warp_pitch_um: float = 230.0
    weft_pitch_um: float = 270.0
    cover: float = 0.93
    """Yarn width over pitch; lower leaves gaps between yarns."""
    twist_deg: float = 28.0
    """Fibre angle to the yarn axis: positive Z twist, negative S twist, 0 untwisted filament."""
    fibre_um: float = 22.0
    """Spacing of the fibre striations."""
    fibre_contrast: float = 0.22
    slub: float = 0.06
    """Yarn thickness irregularity (relative)."""
    hair: float = 0.12
    """Fuzz from loose fibre ends."""
    skew_deg: float = 0.0
    """Angle by which weft yarns deviate from square to the warp."""
    relief_um: float = 45.0
    warp_rgb: tuple[float, float, float] = (0.33, 0.27, 0.17)
    weft_rgb: tuple[float, float, float] = (0.56, 0.49, 0.36)
    gloss: float = 0.05
    fluorescence: float = 0.08
    fluorescence_rgb: tuple[float, float, float] = (0.5, 0.5, 0.35)


SPREAD = {
    "warp_pitch_um": 1.0,
    "weft_pitch_um": 1.2,
    "twist_deg": 0.5,
    "slub": 0.006,
    "skew_deg": 0.15,
    "cover": 0.006,
}
"""Item-to-item manufacturing variance (standard deviations) within any one source. Makers hold these tight, so a
superfake sits several spreads from genuine even where one image cannot resolve the difference."""

_G = FabricParams()

RECIPES: dict[str, Recipe[FabricParams]] = {
    "genuine": Recipe(_G, ""),
    "counterfeit-a": Recipe(
        FabricParams(repeat=2, warp_pitch_um=330.0, weft_pitch_um=350.0, cover=0.76, hair=0.2, slub=0.1),
        "Loose plain weave instead of twill: fewer threads per cm, with gaps between the yarns.",
    ),
    "counterfeit-b": Recipe(
        FabricParams(weft_pitch_um=230.0, twist_deg=-25.0, skew_deg=3.0),
        "Balanced twill at a steeper diagonal, S-twisted yarn and a 3 degree weave skew.",
    ),
    "counterfeit-c": Recipe(
        FabricParams(warp_pitch_um=234.5, weft_pitch_um=275.5, twist_deg=25.0),
        "Near-identical twill about 2% less dense with slightly lower yarn twist.",
        superfake=True,
    ),
    "counterfeit-d": Recipe(
        FabricParams(
            twist_deg=0.0,
            fibre_um=11.0,
            fibre_contrast=0.12,
            hair=0.02,
            gloss=0.4,
            fluorescence=0.7,
            fluorescence_rgb=_BRIGHTENER,
        ),
        "Polyester filament yarn: untwisted, smooth and shiny; optical brighteners glow under UV.",
    ),
    "counterfeit-e": Recipe(
        FabricParams(repeat=4, warp_pitch_um=205.0, weft_pitch_um=250.0, twist_deg=-22.0),
        "Denser 3/1 twill with S-twisted yarn.",
    ),
    "counterfeit-f": Recipe(
        FabricParams(skew_deg=1.6, twist_deg=31.0, slub=0.11),
        "Twill with a slight 1.5 degree skew, marginally tighter twist and uneven yarn.",
        superfake=True,
    ),
}


def synthesize(p: FabricParams, rng: np.random.Generator, plate_seed: int) -> SurfaceMaps:
    """Build one fabric tile (``plate_seed`` is unused: every yarn is spun anew)."""
    del plate_seed
    r = max(2, p.repeat)
    nx = max(r, round(_TILE_TARGET_UM / p.warp_pitch_um / r) * r)
    ny = max(r, round(_TILE_TARGET_UM / p.weft_pitch_um / r) * r)
    pw, pf = float(p.warp_pitch_um), float(p.weft_pitch_um)
    size = (nx * pw, ny * pf)
    shape = tile_shape(size)
    x, y = coords_um(shape, size)

    # Which yarn and where across it.
    i = np.floor(x / np.float32(pw)).astype(np.int32)
    j = np.floor(y / np.float32(pf)).astype(np.int32)
    ux = x - (i + 0.5).astype(np.float32) * np.float32(pw)  # across warp, um
    vy = y - (j + 0.5).astype(np.float32) * np.float32(pf)  # across weft, um

    # +1 where warp passes over weft, -1 under; the twill diagonal steps one yarn per yarn.
    lattice = np.subtract.outer(np.arange(ny), np.arange(nx))
    up = np.mod(lattice, r) != 0 if r > 2 else np.mod(lattice, 2) == 0
    table = np.where(up, np.float32(1.0), np.float32(-1.0)).astype(np.float32)

    def over(ii: np.ndarray, jj: np.ndarray) -> F32:
        # ii varies along x only and jj along y only, so one broadcast gather builds the map.
        return f32(table[np.mod(jj, ny), np.mod(ii, nx)])

    # Undulation: each yarn dips smoothly between the crossings it passes over and under.
    tj = vy / np.float32(pf)
    wj = (0.5 * (1.0 - np.cos(np.pi * np.abs(tj)))).astype(np.float32)
    jn = j + np.where(tj >= 0, 1, -1).astype(np.int32)
    warp_z = (1.0 - wj) * over(i, j) + wj * over(i, jn)
    ti = ux / np.float32(pw)
    wi = (0.5 * (1.0 - np.cos(np.pi * np.abs(ti)))).astype(np.float32)
    in_ = i + np.where(ti >= 0, 1, -1).astype(np.int32)
    weft_z = -((1.0 - wi) * over(i, j) + wi * over(in_, j))

    warp_slub = _per_yarn(rng, nx, shape, axis="warp")
    weft_slub = _per_yarn(rng, ny, shape, axis="weft")
    warp_w = np.float32(pw * p.cover) * (1.0 + np.float32(p.slub) * warp_slub)
    weft_w = np.float32(pf * p.cover) * (1.0 + np.float32(p.slub) * weft_slub)
    a_warp = np.sqrt(np.clip(1.0 - (2.0 * ux / warp_w) ** 2, 0.0, 1.0)).astype(np.float32)
    a_weft = np.sqrt(np.clip(1.0 - (2.0 * vy / weft_w) ** 2, 0.0, 1.0)).astype(np.float32)
    rel = np.float32(p.relief_um)
    h_warp = np.where(a_warp > 0, rel * (0.35 * a_warp + 0.3 * warp_z), -rel)
    h_weft = np.where(a_weft > 0, rel * (0.35 * a_weft + 0.3 * weft_z), -rel)
    warp_on_top = h_warp >= h_weft
    a = np.where(warp_on_top, a_warp, a_weft)
    height = np.maximum(h_warp, h_weft)
    gap = (a_warp <= 0) & (a_weft <= 0)

    # Fibre striations along the twist: phase across the stripes, wrapped on the tile.
    fib = _fibres(p, rng, shape, size, ux, vy, i, j, warp_on_top)
    fuzz = band_noise(rng, shape, size, 9.0) * np.float32(p.hair)
    tint_warp = rng.normal(0.0, 0.03, nx).astype(np.float32)[i]
    tint_weft = rng.normal(0.0, 0.03, ny).astype(np.float32)[j]
    colour = np.where(warp_on_top[..., None], rgb(p.warp_rgb), rgb(p.weft_rgb))
    tint = np.where(warp_on_top, tint_warp, tint_weft)
    shade = (0.5 + 0.5 * a) * (1.0 + np.float32(p.fibre_contrast) * fib + fuzz + tint)
    shade = np.where(gap, np.float32(0.18), shade)
    albedo = colour * np.clip(shade, 0.02, 2.0)[..., None]
    height = height + np.float32(2.0) * fib * a
    gloss = np.float32(p.gloss) * a * (1.0 + 0.5 * fib)
    fluor = np.float32(p.fluorescence) * np.where(gap, 0.1, 0.6 + 0.4 * a).astype(np.float32)
    return SurfaceMaps(
        size,
        albedo.astype(np.float32),
        height.astype(np.float32),
        gloss.astype(np.float32),
        fluor,
        p.fluorescence_rgb,
        skew_deg=p.skew_deg,
    )


def _per_yarn(rng: np.random.Generator, count: int, shape: tuple[int, int], *, axis: str) -> F32:
    """Thickness noise along every yarn (unit variance), as a map over the tile."""
    ny, nx = shape
    length = ny if axis == "warp" else nx
    white = rng.standard_normal((count, length)).astype(np.float32)
    # Slubs are a few hundred micrometres long: low-pass each yarn's noise (periodic along its length).
    spec = np.fft.rfft(white, axis=1)
    k = np.arange(spec.shape[1], dtype=np.float32)
    spec *= np.exp(-0.5 * (k / max(2.0, length / 80.0)) ** 2)[None, :]
    noise = np.fft.irfft(spec, n=length, axis=1).astype(np.float32)
    noise /= np.float32(max(float(noise.std()), 1e-6))
    if axis == "warp":
        idx = (np.arange(nx) * count // nx).astype(np.int32)
        return noise[idx, :].T.copy()
    idx = (np.arange(ny) * count // ny).astype(np.int32)
    return noise[idx, :]


def _fibres(
    p: FabricParams,
    rng: np.random.Generator,
    shape: tuple[int, int],
    size: tuple[float, float],
    ux: F32,
    vy: F32,
    i: np.ndarray,
    j: np.ndarray,
    warp_on_top: np.ndarray,
) -> F32:
    """Striations of the fibres at the twist angle, -1..1, irregular like real fibres."""
    x, y = coords_um(shape, size)
    phi = math.radians(p.twist_deg)
    lam = max(p.fibre_um, 4.0)
    # Along-yarn frequencies rounded to whole cycles per tile so the pattern wraps.
    f_warp = round(size[1] * math.sin(phi) / lam) / size[1]
    f_weft = round(size[0] * math.sin(phi) / lam) / size[0]
    across = np.float32(math.cos(phi) / lam)
    jitter = band_noise(rng, shape, size, 14.0) * np.float32(0.9)
    phase_warp = across * ux - np.float32(f_warp) * y + rng.uniform(0, 1, int(i.max()) + 1).astype(np.float32)[i]
    phase_weft = across * vy - np.float32(f_weft) * x + rng.uniform(0, 1, int(j.max()) + 1).astype(np.float32)[j]
    phase = np.where(warp_on_top, phase_warp, phase_weft)
    return f32(np.cos(np.float32(2.0 * np.pi) * phase + jitter))
