"""How a full frame becomes the model's input tiles: scale to the working resolution, then cut a grid.

The device and the training pipeline both call :func:`frame_to_tiles`, so the
model sees the same pixels in the field as it saw in training.

A frame is first box-filtered to ``work_width_px`` wide (height in proportion),
which fixes the micrometres per pixel for the unit's standard field of view
whatever the capture resolution. ``grid_rows`` x ``grid_cols`` square tiles of
``tile_px`` are then cut at evenly spread positions that touch all four edges,
so the grid covers the frame (tiles overlap when the frame is small).
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np
import numpy.typing as npt
from PIL import Image

from veriscope.device.errors import InvalidArgument
from veriscope.device.types import RGBImage

TileBatch = npt.NDArray[np.uint8]
"""An N x tile_px x tile_px x 3 uint8 stack of RGB tiles, row-major over the grid."""


@dataclass(frozen=True)
class Tiling:
    """The preprocessing parameters of a model bundle."""

    work_width_px: int
    """Width the frame is scaled to before tiling, in pixels."""
    tile_px: int
    """Side of one square tile at the working scale, in pixels."""
    grid_rows: int
    """Tiles per column of the grid."""
    grid_cols: int
    """Tiles per row of the grid."""

    def __post_init__(self) -> None:
        for name in ("work_width_px", "tile_px", "grid_rows", "grid_cols"):
            value = getattr(self, name)
            if isinstance(value, bool) or not isinstance(value, int) or value < 1:
                raise InvalidArgument(f"tiling {name} must be a positive integer, got {value!r}")
        if self.tile_px > self.work_width_px:
            raise InvalidArgument(f"tile_px {self.tile_px} exceeds work_width_px {self.work_width_px}")

    @property
    def tile_count(self) -> int:
        """Tiles per frame."""
        return self.grid_rows * self.grid_cols


def work_size(width_px: int, height_px: int, tiling: Tiling) -> tuple[int, int]:
    """The (width, height) in pixels a ``width_px`` x ``height_px`` frame is scaled to."""
    height = max(1, round(height_px * tiling.work_width_px / width_px))
    return tiling.work_width_px, height


def to_work_scale(pixels: RGBImage, tiling: Tiling) -> RGBImage:
    """Box-filter a frame to the working scale.

    Raises :class:`InvalidArgument` when ``pixels`` is not an HxWx3 uint8 array
    or is too short to hold one tile at the working scale.
    """
    if not isinstance(pixels, np.ndarray) or pixels.ndim != 3 or pixels.shape[2] != 3 or pixels.dtype != np.uint8:
        shape = getattr(pixels, "shape", None)
        dtype = getattr(pixels, "dtype", type(pixels).__name__)
        raise InvalidArgument(f"frame must be an HxWx3 uint8 array, got shape {shape} dtype {dtype}")
    height_px, width_px = int(pixels.shape[0]), int(pixels.shape[1])
    if width_px < 1 or height_px < 1:
        raise InvalidArgument(f"frame of {width_px}x{height_px} px is empty")
    size = work_size(width_px, height_px, tiling)
    if size[1] < tiling.tile_px:
        raise InvalidArgument(
            f"frame of {width_px}x{height_px} px is {size[1]} px high at the working scale, "
            f"less than one {tiling.tile_px} px tile"
        )
    if size == (width_px, height_px):
        return pixels
    image = Image.fromarray(np.ascontiguousarray(pixels), mode="RGB")
    return np.asarray(image.resize(size, Image.Resampling.BOX), dtype=np.uint8)


def tile_origins(width_px: int, height_px: int, tiling: Tiling) -> list[tuple[int, int]]:
    """Top-left (x, y) of each tile in a working-scale image, row-major.

    The first and last tile of each row and column touch the image edges.
    """
    xs = np.linspace(0, width_px - tiling.tile_px, tiling.grid_cols).round().astype(int)
    ys = np.linspace(0, height_px - tiling.tile_px, tiling.grid_rows).round().astype(int)
    return [(int(x), int(y)) for y in ys for x in xs]


def frame_to_tiles(pixels: RGBImage, tiling: Tiling) -> TileBatch:
    """Cut a frame into the model's input tiles.

    Returns ``tiling.tile_count`` tiles of ``tile_px`` x ``tile_px`` x 3 uint8,
    row-major over the grid. Raises :class:`InvalidArgument` for a frame that is
    not HxWx3 uint8 or is too small to tile.
    """
    work = to_work_scale(pixels, tiling)
    t = tiling.tile_px
    tiles = [work[y : y + t, x : x + t] for x, y in tile_origins(work.shape[1], work.shape[0], tiling)]
    return np.stack(tiles)
