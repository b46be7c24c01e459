"""The heat-map renderer: geometry at the working scale, the colour ramp, unfamiliar tiles and bad input."""

from __future__ import annotations

import numpy as np
import pytest

from veriscope.device.errors import InvalidArgument
from veriscope.device.inference.tiling import Tiling, tile_origins, work_size
from veriscope.device.pipeline import heatmap

TILING = Tiling(work_width_px=384, tile_px=128, grid_rows=3, grid_cols=4)
GREY_FRAME = np.full((480, 640, 3), 128, dtype=np.uint8)


def _centre(result: heatmap.Heatmap, row: int, col: int) -> np.ndarray:
    x, y = result.column_x_px[col] + 64, result.row_y_px[row] + 64
    return result.pixels[y - 3 : y + 4, x - 3 : x + 4].reshape(-1, 3).astype(int)


def test_heatmap_is_the_working_scale_with_the_tile_grid() -> None:
    scores = np.full((3, 4), 0.9)
    result = heatmap.render(GREY_FRAME, TILING, scores, np.ones(12), score_threshold=0.6, familiarity_threshold=0.5)
    assert result.pixels.shape == (288, 384, 3) and result.pixels.dtype == np.uint8
    width, height = work_size(640, 480, TILING)
    origins = tile_origins(width, height, TILING)
    assert result.column_x_px == tuple(x for x, _ in origins[:4])
    assert result.row_y_px == tuple(y for _, y in origins[::4])


def test_colours_run_from_red_through_amber_to_green() -> None:
    ramp = heatmap.tile_colours([0.0, 0.3, 0.6, 0.8, 1.0], 0.6)
    assert ramp[0] == pytest.approx(heatmap.RED)
    assert ramp[2] == pytest.approx(heatmap.AMBER)
    assert ramp[4] == pytest.approx(heatmap.GREEN)
    green_minus_red = ramp[:, 1] - ramp[:, 0]
    assert np.all(np.diff(green_minus_red) > 0)
    # Out-of-range and NaN scores are clipped, and a threshold at an end leaves one half of the ramp.
    clipped = heatmap.tile_colours([-1.0, 2.0, np.nan], 0.6)
    assert clipped == pytest.approx(np.asarray([heatmap.RED, heatmap.GREEN, heatmap.RED]), abs=1e-3)
    assert heatmap.tile_colours([0.0, 1.0], 0.0)[0] == pytest.approx(heatmap.AMBER)
    assert heatmap.tile_colours([0.0, 1.0], 1.0)[1] == pytest.approx(heatmap.AMBER)


def test_each_tile_is_tinted_by_its_own_score_and_unfamiliar_tiles_are_hatched() -> None:
    scores = np.full((3, 4), 0.95)
    scores[0, 0], scores[1, 2] = 0.05, 0.6
    familiarity = np.ones((3, 4))
    familiarity[2, 3] = 0.1
    result = heatmap.render(GREY_FRAME, TILING, scores, familiarity, score_threshold=0.6, familiarity_threshold=0.5)
    red, amber, green = _centre(result, 0, 0).mean(0), _centre(result, 1, 2).mean(0), _centre(result, 0, 1).mean(0)
    assert red[0] > red[1] + 40 and green[1] > green[0] + 40
    assert green[0] < amber[0] and amber[1] > red[1]
    hatched = _centre(result, 2, 3)
    assert np.all(np.ptp(hatched, axis=1) == 0)  # grey only: no hue
    assert {tuple(p) for p in hatched} >= {heatmap.HATCH}
    assert len({tuple(p) for p in hatched}) == 2  # the hatch lines and the grey between them


def test_cells_meet_halfway_between_tile_centres() -> None:
    scores = np.tile([0.0, 1.0, 0.0, 1.0], (3, 1))
    result = heatmap.render(GREY_FRAME, TILING, scores, np.ones(12), score_threshold=0.5, familiarity_threshold=0.0)
    row = result.pixels[40].astype(int)
    redder = row[:, 0] > row[:, 1]
    # Tile centres are at x = 64, 149, 235, 320: pixels up to 105 are nearer the first, 106..191 the second.
    assert redder[:106].all() and not redder[106:192].any() and redder[192:277].all()


def test_mismatched_grids_are_invalid() -> None:
    with pytest.raises(InvalidArgument, match="scores hold 11 values; the 3x4 tile grid needs 12"):
        heatmap.render(GREY_FRAME, TILING, np.ones(11), np.ones(12), score_threshold=0.5, familiarity_threshold=0.5)
    with pytest.raises(InvalidArgument, match="familiarity"):
        heatmap.render(GREY_FRAME, TILING, np.ones(12), np.ones(13), score_threshold=0.5, familiarity_threshold=0.5)
    with pytest.raises(InvalidArgument, match="HxWx3"):
        heatmap.render(
            GREY_FRAME[..., 0], TILING, np.ones(12), np.ones(12), score_threshold=0.5, familiarity_threshold=0.5
        )
