"""Heat-maps of per-tile results: the image the model saw, with each tile's score laid over it in colour.

:func:`render` is pure: it takes a frame, the bundle's tiling and the per-tile
scores and familiarity of that frame, and returns an RGB array at the working
scale (the resolution the tiles were cut at).

How it reads:

- The frame is shown in grey, so the overlay's hue carries the score.
- A tile scoring at or below ``score_threshold`` is tinted from red (0) to
  amber (the threshold); above it, from amber to green (1).
- A tile whose familiarity is below ``familiarity_threshold`` is tinted grey
  and hatched: the model does not recognise the material there, so its score
  means little.
- Tiles overlap when the frame is small, so each pixel takes the colour of the
  tile whose centre is nearest (per axis), and thin dark lines separate the
  cells. Where tiles leave gaps, the nearest tile covers them too.
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np
import numpy.typing as npt

from veriscope.device.errors import InvalidArgument
from veriscope.device.inference.tiling import Tiling, tile_origins, to_work_scale
from veriscope.device.types import RGBImage

RED = (215, 48, 39)
"""Colour of a tile scoring 0 (counterfeit-like)."""
AMBER = (250, 190, 60)
"""Colour of a tile scoring exactly the threshold."""
GREEN = (26, 152, 80)
"""Colour of a tile scoring 1 (genuine-like)."""
UNFAMILIAR = (128, 128, 128)
"""Tint of a tile whose material the model does not recognise."""
HATCH = (40, 40, 40)
"""Colour of the diagonal hatching over unfamiliar tiles."""
TINT_ALPHA = 0.55
"""Weight of the tile colour against the grey frame, 0..1."""
HATCH_PERIOD_PX = 8
"""Distance between hatch lines, in pixels."""
HATCH_WIDTH_PX = 2
"""Width of a hatch line, in pixels."""
BORDER_ALPHA = 0.6
"""Darkening of the one-pixel lines between cells, 0..1."""


@dataclass(frozen=True, eq=False)
class Heatmap:
    """A rendered heat-map and where the tiles lie on it."""

    pixels: RGBImage
    """H x W x 3 uint8 RGB at the working scale."""
    column_x_px: tuple[int, ...]
    """Left edge of each grid column, in pixels."""
    row_y_px: tuple[int, ...]
    """Top edge of each grid row, in pixels."""


def tile_colours(scores: npt.ArrayLike, score_threshold: float) -> npt.NDArray[np.float32]:
    """The tint of each score: red at 0, amber at ``score_threshold``, green at 1 (``... x 3`` floats 0..255).

    Scores are clipped to 0..1; NaN counts as 0. A threshold at 0 or 1 leaves
    only one half of the ramp.
    """
    s = np.clip(np.nan_to_num(np.asarray(scores, dtype=np.float32), nan=0.0), 0.0, 1.0)[..., None]
    t = float(np.clip(score_threshold, 0.0, 1.0))
    red, amber, green = (np.asarray(c, dtype=np.float32) for c in (RED, AMBER, GREEN))
    low = red + (amber - red) * (s / t if t > 0 else np.ones_like(s))
    high = amber + (green - amber) * ((s - t) / (1.0 - t) if t < 1 else np.zeros_like(s))
    return np.where(s <= t, low, high).astype(np.float32)


def _cells(origins: list[int], tile_px: int, length: int) -> npt.NDArray[np.intp]:
    """For each pixel along one axis, the index of the tile whose centre is nearest."""
    centres = np.asarray(origins, dtype=np.float64) + tile_px / 2.0
    bounds = (centres[:-1] + centres[1:]) / 2.0
    return np.searchsorted(bounds, np.arange(length) + 0.5, side="right").astype(np.intp)


def render(
    pixels: RGBImage,
    tiling: Tiling,
    scores: npt.ArrayLike,
    familiarity: npt.ArrayLike,
    *,
    score_threshold: float,
    familiarity_threshold: float,
) -> Heatmap:
    """Render the heat-map of one frame.

    Args:
        pixels: The frame as analysed, H x W x 3 uint8 at any resolution.
        tiling: The bundle's tiling, which the scores were computed with.
        scores: grid_rows x grid_cols calibrated tile scores 0..1 (or as many values, row-major).
        familiarity: grid_rows x grid_cols tile familiarity 0..1 (or as many values, row-major).
        score_threshold: Scores below this 0..1 are counterfeit-like (red side of the ramp).
        familiarity_threshold: Tiles with familiarity below this 0..1 are drawn grey and hatched.

    Raises :class:`InvalidArgument` when the frame cannot be tiled or the
    scores or familiarity do not hold one value per tile.
    """
    grid = (tiling.grid_rows, tiling.grid_cols)
    tile_scores = np.asarray(scores, dtype=np.float32)
    tile_fam = np.asarray(familiarity, dtype=np.float32)
    for name, values in (("scores", tile_scores), ("familiarity", tile_fam)):
        if values.size != tiling.tile_count:
            raise InvalidArgument(
                f"heat-map {name} hold {values.size} values; the {grid[0]}x{grid[1]} tile grid needs {tiling.tile_count}"
            )
    tile_scores, tile_fam = tile_scores.reshape(grid), tile_fam.reshape(grid)

    work = to_work_scale(pixels, tiling)
    height, width = int(work.shape[0]), int(work.shape[1])
    origins = tile_origins(width, height, tiling)
    xs = [x for x, _ in origins[: tiling.grid_cols]]
    ys = [y for _, y in origins[:: tiling.grid_cols]]
    col = _cells(xs, tiling.tile_px, width)
    row = _cells(ys, tiling.tile_px, height)

    unfamiliar = ~(np.nan_to_num(tile_fam, nan=0.0) >= familiarity_threshold)
    tints = tile_colours(tile_scores, score_threshold)
    tints[unfamiliar] = UNFAMILIAR

    luminance = work.astype(np.float32) @ np.asarray([0.299, 0.587, 0.114], dtype=np.float32)
    out = (1.0 - TINT_ALPHA) * luminance[..., None] + TINT_ALPHA * tints[row[:, None], col[None, :]]

    yy, xx = np.indices((height, width))
    hatched = unfamiliar[row[:, None], col[None, :]] & ((xx + yy) % HATCH_PERIOD_PX < HATCH_WIDTH_PX)
    out[hatched] = HATCH
    # Darken the first pixel line of every cell but the first, so neighbouring cells read apart.
    out[:, np.flatnonzero(col[1:] != col[:-1]) + 1] *= 1.0 - BORDER_ALPHA
    out[np.flatnonzero(row[1:] != row[:-1]) + 1] *= 1.0 - BORDER_ALPHA
    image = np.clip(np.rint(out), 0, 255).astype(np.uint8)
    return Heatmap(pixels=image, column_x_px=tuple(xs), row_y_px=tuple(ys))
