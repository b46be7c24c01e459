"""On-device inference: model bundles, frame tiling and the TFLite runtime.

:func:`load_bundle` reads a bundle directory into a checked :class:`ModelBundle`;
:mod:`veriscope.device.pipeline.inference` runs it on frames. TensorFlow is never
imported here: the interpreter comes from ``ai-edge-litert`` or ``tflite-runtime``.
"""

from veriscope.device.inference.bundle import (
    Calibration,
    InputSpec,
    ItemTypeSpec,
    ModelBundle,
    OpenSetStats,
    OutputSpec,
    RegionSpec,
    ScoreThreshold,
    Thresholds,
    load_bundle,
)
from veriscope.device.inference.tiling import Tiling, frame_to_tiles

__all__ = [
    "Calibration",
    "InputSpec",
    "ItemTypeSpec",
    "ModelBundle",
    "OpenSetStats",
    "OutputSpec",
    "RegionSpec",
    "ScoreThreshold",
    "Thresholds",
    "Tiling",
    "frame_to_tiles",
    "load_bundle",
]
