"""Grained leather: pebble grain cells, creases, hair-follicle pores and a dyed, lightly polished finish.

Natural grain is an irregular cell pattern grown by the hide, unique to every
item. Embossed grain is pressed by a plate: regular cells that repeat with the
plate's period and are the same on every item the plate made.
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np

from veriscope.device.specimen._synth import (
    F32,
    Recipe,
    SurfaceMaps,
    band_noise,
    rgb,
    smoothstep,
    speckle,
    stamp_pits,
    tile_shape,
    voronoi,
)

TILE_UM = 2560.0


@dataclass(frozen=True)
class LeatherParams:
    """Parameters of a grained leather surface (lengths in micrometres)."""

    cell_um: float = 380.0
    """Mean pebble size."""
    jitter: float = 1.0
    """Irregularity of the cell layout: 1 natural, lower for embossing plates."""
    size_spread: float = 0.6
    """Spread of cell sizes (additive Voronoi weights, in cell sizes)."""
    dome_um: float = 22.0
    """Height of a pebble's dome above its border."""
    crease_depth_um: float = 28.0
    crease_width_um: float = 16.0
    wrinkle_um: float = 2.5
    """Amplitude of the fine wrinkles on pebble tops."""
    pores_per_mm2: float = 42.0
    pore_radius_um: float = 8.0
    pore_radius_spread: float = 0.35
    """Log-normal spread of pore radii (natural pores vary; plate pores do not)."""
    pore_clusters: float = 1.0
    """1: pores grouped as hair follicles are; 0: scattered at random."""
    emboss_repeat: int = 0
    """0 for natural grain; k > 0 for a plate whose pattern repeats k times per tile."""
    colour: tuple[float, float, float] = (0.54, 0.27, 0.115)
    mottle: float = 0.07
    grain_speckle: float = 0.09
    """Contrast of the fine fibre and pigment texture of the grain layer."""
    crease_dark: float = 0.55
    gloss: float = 0.15
    fluorescence: float = 0.05
    fluorescence_rgb: tuple[float, float, float] = (0.55, 0.45, 0.2)


_BRIGHTENER = (0.25, 0.45, 1.0)

SPREAD = {
    "cell_um": 6.0,
    "dome_um": 0.8,
    "crease_depth_um": 1.0,
    "pores_per_mm2": 1.5,
    "pore_radius_um": 0.2,
    "mottle": 0.005,
    "gloss": 0.01,
}
"""Item-to-item manufacturing variance (standard deviations) within any one source. Makers hold these tight, so a
superfake sits several spreads from genuine even where one image cannot resolve the difference."""

_G = LeatherParams()

RECIPES: dict[str, Recipe[LeatherParams]] = {
    "genuine": Recipe(_G, ""),
    "counterfeit-a": Recipe(
        LeatherParams(
            cell_um=340.0,
            jitter=0.35,
            size_spread=0.05,
            dome_um=18.0,
            crease_depth_um=24.0,
            crease_width_um=14.0,
            wrinkle_um=0.6,
            pores_per_mm2=3.0,
            pore_radius_spread=0.05,
            pore_clusters=0.0,
            emboss_repeat=2,
            colour=(0.56, 0.29, 0.13),
            mottle=0.02,
            gloss=0.5,
        ),
        "Embossed synthetic: regular pebbles from a plate that repeats every 1.3 mm, almost no pores, plastic sheen.",
    ),
    "counterfeit-b": Recipe(
        LeatherParams(pores_per_mm2=34.0, crease_depth_um=25.0, wrinkle_um=2.1, gloss=0.18),
        "Corrected-grain leather: natural-looking pebbles but about a fifth fewer pores and softer creases.",
        superfake=True,
    ),
    "counterfeit-c": Recipe(
        LeatherParams(
            cell_um=540.0,
            crease_depth_um=40.0,
            crease_width_um=22.0,
            pores_per_mm2=22.0,
            pore_radius_um=6.0,
            mottle=0.12,
            colour=(0.50, 0.245, 0.105),
        ),
        "Coarse grain: larger pebbles, deeper and wider creases, sparse small pores, blotchy dye.",
    ),
    "counterfeit-d": Recipe(
        LeatherParams(
            jitter=0.7,
            size_spread=0.2,
            emboss_repeat=1,
            pores_per_mm2=14.0,
            pore_clusters=0.2,
            wrinkle_um=1.0,
            gloss=0.28,
            fluorescence=0.6,
            fluorescence_rgb=_BRIGHTENER,
        ),
        "Bonded leather: embossed grain on reconstituted fibre, few pores; glows blue under UV (optical brighteners).",
    ),
    "counterfeit-e": Recipe(
        LeatherParams(
            cell_um=420.0,
            jitter=0.55,
            size_spread=0.15,
            emboss_repeat=1,
            pores_per_mm2=30.0,
            pore_radius_um=9.0,
            pore_radius_spread=0.05,
            pore_clusters=0.0,
            wrinkle_um=1.2,
            gloss=0.3,
        ),
        "Embossed grain: fairly regular pebbles with scattered pores all of one size, satin sheen.",
    ),
    "counterfeit-f": Recipe(
        LeatherParams(pore_radius_um=9.4, pores_per_mm2=38.0, crease_width_um=18.5, pore_clusters=0.6),
        "Natural grain with slightly larger, less clustered pores and broader creases.",
        superfake=True,
    ),
}


def synthesize(p: LeatherParams, rng: np.random.Generator, plate_seed: int) -> SurfaceMaps:
    """Build one leather tile. Embossed grain comes from ``plate_seed`` (shared by a source), natural from ``rng``."""
    size = (TILE_UM, TILE_UM)
    shape = tile_shape(size)
    if p.emboss_repeat > 0:
        k = p.emboss_repeat
        plate_size = (TILE_UM / k, TILE_UM / k)
        plate_shape = (shape[0] // k, shape[1] // k)
        (dome, crease), pores, cells = _grain(p, np.random.default_rng(plate_seed), plate_shape, plate_size)
        dome, crease = np.tile(dome, (k, k)), np.tile(crease, (k, k))
        pores, cells = np.tile(pores, (k, k)), np.tile(cells, (k, k))
    else:
        (dome, crease), pores, cells = _grain(p, rng, shape, size)
    wrinkles = band_noise(rng, shape, size, 22.0, beta=0.5) * np.float32(p.wrinkle_um)
    # The grain layer's fine crackle: a network of shallow ridges a few tens of micrometres apart.
    crackle = (1.0 - np.abs(band_noise(rng, shape, size, 18.0))) ** 3 - np.float32(0.3)
    height = (
        np.float32(p.dome_um) * dome
        - np.float32(p.crease_depth_um) * crease
        + wrinkles * (0.4 + 0.6 * dome)
        - np.float32(0.8 * p.wrinkle_um) * crackle
        - np.float32(14.0) * pores
    )
    mottle = band_noise(rng, shape, size, 900.0, beta=1.0) * np.float32(p.mottle)
    cell_tint = rng.normal(0.0, 0.025 if p.emboss_repeat == 0 else 0.005, int(cells.max()) + 1).astype(np.float32)
    shade = (
        (
            1.0
            + mottle
            + cell_tint[cells]
            + 0.08 * (dome - 0.5)
            + 0.02 * wrinkles
            - np.float32(0.07 * p.wrinkle_um) * crackle
            + np.float32(p.grain_speckle) * speckle(rng, shape)
        )
        # Dye pools and light is trapped across the whole valley, wider than its steep walls.
        * (1.0 - np.float32(p.crease_dark) * crease**0.35)
        * (1.0 - 0.55 * pores)
    )
    albedo = rgb(p.colour) * np.clip(shade, 0.05, 2.0)[..., None]
    # Polish catches pebble tops; creases and pores stay matte.
    gloss = np.float32(p.gloss) * (0.6 + 0.4 * dome) * (1.0 - crease) * (1.0 - pores)
    fluor = np.float32(p.fluorescence) * (1.0 + 0.5 * mottle) * (1.0 - 0.5 * crease)
    return SurfaceMaps(size, albedo.astype(np.float32), height, gloss, fluor, p.fluorescence_rgb)


def _grain(
    p: LeatherParams, rng: np.random.Generator, shape: tuple[int, int], size: tuple[float, float]
) -> tuple[tuple[F32, F32], F32, np.ndarray]:
    border, cells = voronoi(rng, shape, size, p.cell_um, jitter=p.jitter, weight_spread=p.size_spread)
    border = np.maximum(border, 0.0)
    dome = (1.0 - np.exp(-border / np.float32(0.3 * p.cell_um))).astype(np.float32)
    dome /= np.float32(max(float(dome.max()), 1e-6))
    crease = np.exp(-((border / np.float32(p.crease_width_um)) ** 2)).astype(np.float32)
    area_mm2 = size[0] * size[1] / 1e6
    count = int(rng.poisson(max(p.pores_per_mm2, 0.0) * area_mm2))
    clustered = round(count * min(max(p.pore_clusters, 0.0), 1.0))
    follicles = max(1, clustered // 3)
    centres = rng.uniform(0.0, 1.0, (follicles, 2)) * np.asarray(size)
    grouped = centres[rng.integers(0, follicles, clustered)] + rng.normal(0.0, 22.0, (clustered, 2))
    scattered = rng.uniform(0.0, 1.0, (count - clustered, 2)) * np.asarray(size)
    all_centres = np.mod(np.concatenate([grouped, scattered]), np.asarray(size))
    radii = p.pore_radius_um * np.exp(rng.normal(0.0, max(p.pore_radius_spread, 0.0), count))
    pores = stamp_pits(rng, shape, size, all_centres, np.maximum(radii, 2.0))
    return (dome, crease), smoothstep(0.0, 0.8, pores), cells
