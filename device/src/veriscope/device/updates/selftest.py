"""The health check a model must pass before the unit commits it: run it on rendered frames, expect sane outputs."""

from __future__ import annotations

import math

import numpy as np

from veriscope.device.errors import ModelError
from veriscope.device.pipeline.inference import Analyzer

FRAMES = 3
"""Rendered frames the check runs per material."""


def _frames(width_px: int, height_px: int) -> list[np.ndarray]:
    """Deterministic test frames: flat grey, a smooth gradient and fine noise, which together exercise the tiles."""
    rng = np.random.default_rng(20261128)
    grey = np.full((height_px, width_px, 3), 128, np.uint8)
    ramp = np.linspace(0, 255, width_px, dtype=np.float32)[None, :, None]
    gradient = np.broadcast_to(ramp, (height_px, width_px, 3)).astype(np.uint8)
    noise = rng.integers(0, 256, (height_px, width_px, 3), dtype=np.uint8)
    return [grey, gradient, noise][:FRAMES]


def self_test(analyzer: Analyzer) -> None:
    """Run the analyzer's model on rendered frames of every material it knows.

    Raises:
        ModelError: The model fails to run, or any score, logit or familiarity is not a finite number in range.
    """
    bundle = analyzer.bundle
    tiling = bundle.tiling
    width = tiling.work_width_px
    height = max(tiling.tile_px * tiling.grid_rows, width * tiling.grid_rows // max(1, tiling.grid_cols))
    for frame in _frames(width, height):
        for material in bundle.materials:
            try:
                analysis = analyzer.analyze_image(frame, material)
            except Exception as exc:  # the runtime's failures are as many as its backends
                raise ModelError(f"self-test: the model failed on a rendered frame of {material}: {exc}") from exc
            values = [analysis.score, analysis.familiarity]
            if not all(math.isfinite(v) and 0.0 <= v <= 1.0 for v in values) or not math.isfinite(analysis.logit):
                raise ModelError(f"self-test: the model gave non-finite or out-of-range outputs for {material}")
            for name, array in (("tile scores", analysis.tile_scores), ("tile familiarity", analysis.tile_familiarity)):
                if not np.all(np.isfinite(array)):
                    raise ModelError(f"self-test: the model gave non-finite {name} for {material}")
