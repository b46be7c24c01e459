"""Printed coated canvas: a woven cotton base under a grained coating, printed with two halftoned inks.

The halftone screen is a lattice at a screen ruling and angle; the tile's size
is chosen so the lattice wraps exactly, which is why screen angles come in
small rational steps (a few degrees).
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
    smoothstep,
    speckle,
    tile_shape,
)

_TILE_TARGET_UM = 2560.0
_BRIGHTENER = (0.25, 0.45, 1.0)


@dataclass(frozen=True)
class CanvasParams:
    """Parameters of a printed coated canvas (lengths in micrometres)."""

    screen_period_um: float = 170.0
    """Halftone cell pitch (170 um is about 150 lines per inch)."""
    screen_angle_deg: float = 45.0
    dot_gain: float = 0.04
    """Extra coverage at mid tones as ink spreads on the press."""
    ink_bleed_um: float = 3.0
    """Width of the soft edge of each dot."""
    edge_rough: float = 0.04
    """Raggedness of dot edges."""
    base_coverage: float = 0.62
    motif_coverage: float = 0.55
    motif_scale_um: float = 650.0
    substrate: tuple[float, float, float] = (0.60, 0.47, 0.30)
    base_ink: tuple[float, float, float] = (0.30, 0.19, 0.11)
    """Transmission of the dark ground ink."""
    motif_ink: tuple[float, float, float] = (0.95, 0.66, 0.26)
    """Transmission of the ochre motif ink."""
    pigment_speckle: float = 0.06
    """Contrast of the ink's pigment grain."""
    ink_um: float = 3.0
    """Ink film thickness (shows as relief under raking light)."""
    coat_grain_um: float = 40.0
    coat_grain_amp_um: float = 1.6
    weave_pitch_um: float = 430.0
    weave_amp_um: float = 3.0
    weave_contrast: float = 0.04
    gloss: float = 0.45
    fluorescence: float = 0.05
    fluorescence_rgb: tuple[float, float, float] = (0.55, 0.5, 0.3)


SPREAD = {
    "screen_period_um": 0.4,
    "dot_gain": 0.005,
    "ink_bleed_um": 0.25,
    "edge_rough": 0.005,
    "coat_grain_amp_um": 0.06,
    "weave_amp_um": 0.2,
    "gloss": 0.015,
}
"""Item-to-item manufacturing variance (standard deviations) within any one source. Makers hold these tight, so a
superfake sits several spreads from genuine even where one image cannot resolve the difference."""

_G = CanvasParams()

RECIPES: dict[str, Recipe[CanvasParams]] = {
    "genuine": Recipe(_G, ""),
    "counterfeit-a": Recipe(
        CanvasParams(
            screen_period_um=250.0,
            screen_angle_deg=15.0,
            dot_gain=0.15,
            ink_bleed_um=7.0,
            edge_rough=0.08,
            substrate=(0.62, 0.50, 0.30),
            gloss=0.55,
        ),
        "Coarse halftone (about 100 lpi) at a 15 degree screen angle with heavy dot gain.",
    ),
    "counterfeit-b": Recipe(
        CanvasParams(
            ink_bleed_um=12.0,
            edge_rough=0.16,
            dot_gain=0.09,
            coat_grain_amp_um=0.6,
            weave_amp_um=7.0,
            weave_contrast=0.12,
            base_ink=(0.34, 0.20, 0.10),
            gloss=0.3,
        ),
        "Ink bleed: soft, ragged dot edges on a thin coating that lets the base weave show through.",
    ),
    "counterfeit-c": Recipe(
        CanvasParams(screen_period_um=173.0, dot_gain=0.065, gloss=0.5),
        "Near-identical print: screen about 2% coarser with slightly more dot gain and sheen.",
        superfake=True,
    ),
    "counterfeit-d": Recipe(
        CanvasParams(
            coat_grain_amp_um=0.2,
            gloss=0.95,
            ink_bleed_um=4.5,
            fluorescence=0.6,
            fluorescence_rgb=_BRIGHTENER,
        ),
        "High-gloss plastic coating without the fine coating grain; optical brighteners glow under UV.",
    ),
    "counterfeit-e": Recipe(
        CanvasParams(screen_period_um=190.0, screen_angle_deg=30.0, dot_gain=0.1, ink_bleed_um=5.0),
        "Halftone screen about 10% coarser at a 30 degree angle with visible dot gain.",
    ),
    "counterfeit-f": Recipe(
        CanvasParams(
            screen_angle_deg=42.3,
            coat_grain_amp_um=1.25,
            coat_grain_um=35.0,
            fluorescence=0.16,
            fluorescence_rgb=_BRIGHTENER,
        ),
        "Screen angle about 3 degrees off, a finer and flatter coating grain, faint UV brighteners.",
        superfake=True,
    ),
}


def _lattice(period_um: float, angle_deg: float) -> tuple[int, int, float]:
    """Integer screen vector (m1, m2) closest to the wanted angle, and the tile size that makes it wrap exactly."""
    mag = _TILE_TARGET_UM / period_um
    a = math.radians(angle_deg)
    m1, m2 = round(mag * math.cos(a)), round(mag * math.sin(a))
    return m1, m2, period_um * math.hypot(m1, m2)


def synthesize(p: CanvasParams, rng: np.random.Generator, plate_seed: int) -> SurfaceMaps:
    """Build one canvas tile; the print design comes from ``plate_seed`` (one artwork per source)."""
    m1, m2, tile_um = _lattice(max(p.screen_period_um, 40.0), p.screen_angle_deg)
    size = (tile_um, tile_um)
    shape = tile_shape(size)
    x, y = coords_um(shape, size)
    two_pi_l = np.float32(2.0 * np.pi / tile_um)

    def screen(a: int, b: int) -> F32:
        # Two crossed cosines: +1 at dot centres, a lattice that wraps on the tile.
        return f32(0.5 * (np.cos(two_pi_l * (a * x + b * y)) + np.cos(two_pi_l * (-b * x + a * y))))

    design = band_noise(np.random.default_rng(plate_seed), shape, size, p.motif_scale_um, beta=0.3)
    motif = smoothstep(0.25, 0.32, design)
    rough = band_noise(rng, shape, size, 7.0) * np.float32(p.edge_rough)
    period = tile_um / math.hypot(m1, m2)
    # Width of the soft dot edge in screen-function units: |grad S| is about 2.2/period near mid-tone.
    soft = np.float32(max(p.ink_bleed_um, 0.5) * 2.2 / period)

    base = _halftone(screen(m1, m2) + rough, (1.0 - motif) * np.float32(p.base_coverage), p.dot_gain, soft)
    ink2 = _halftone(screen(m2, m1) - rough, motif * np.float32(p.motif_coverage), p.dot_gain, soft)

    weave = _plain_weave(x, y, tile_um, p.weave_pitch_um)
    grain = 1.0 - np.abs(band_noise(rng, shape, size, p.coat_grain_um))
    reflect = (
        rgb(p.substrate)
        * (1.0 - base[..., None] * (1.0 - rgb(p.base_ink)))
        * (1.0 - ink2[..., None] * (1.0 - rgb(p.motif_ink)))
        * (
            1.0
            + np.float32(p.weave_contrast) * weave
            + 0.02 * band_noise(rng, shape, size, 300.0)
            + np.float32(0.05 * p.coat_grain_amp_um) * (grain - 0.4)
            + np.float32(p.pigment_speckle) * speckle(rng, shape) * (0.4 + np.maximum(base, ink2))
        )[..., None]
    )
    height = (
        np.float32(p.weave_amp_um) * weave
        + np.float32(p.coat_grain_amp_um) * grain
        + np.float32(p.ink_um) * np.maximum(base, ink2)
    )
    gloss = np.float32(p.gloss) * (0.85 + 0.15 * grain)
    fluor = np.float32(p.fluorescence) * (1.0 - 0.5 * np.maximum(base, ink2))
    return SurfaceMaps(size, f32(reflect), f32(height), f32(gloss), f32(fluor), p.fluorescence_rgb)


def _halftone(s: F32, tone: F32, dot_gain: float, soft: np.float32) -> F32:
    """Ink coverage of an amplitude-modulated screen ``s`` (range -1..1) printing ``tone`` (0..1)."""
    tone = np.clip(tone + np.float32(4.0 * dot_gain) * tone * (1.0 - tone), 0.0, 1.0)
    # For two crossed cosines the covered fraction is close to linear in the threshold.
    threshold = 1.0 - 2.0 * tone
    return f32(np.clip((s - threshold) / soft + 0.5, 0.0, 1.0))


def _plain_weave(x: F32, y: F32, tile_um: float, pitch_um: float) -> F32:
    """Relief of a plain-weave base cloth, -1..1, with a thread count that wraps on the tile."""
    n = max(1, round(tile_um / (2.0 * pitch_um)))
    w = np.float32(2.0 * np.pi * n / tile_um)
    return f32(np.sin(w * x) * np.sin(w * y))
