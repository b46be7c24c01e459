"""Full-integer int8 TFLite export with a representative data set.

The exported model takes uint8 tiles (scale 1, zero point 0: raw pixel values)
and returns int8 outputs under the signature ``serving_default`` with the names
``material_logits``, ``authenticity_logits`` and ``embedding``.
"""

from __future__ import annotations

from collections.abc import Iterable, Iterator
from pathlib import Path
from typing import Any

import numpy as np

from veriscope.training._tf import keras, tf

SIGNATURE = "serving_default"
INPUT_NAME = "tiles"
OUTPUT_NAMES = ("material_logits", "authenticity_logits", "embedding")


def to_tflite_int8(model: Any, representative_tiles: Iterable[np.ndarray], tile_px: int) -> bytes:
    """Convert a three-output Keras model to a full-integer int8 TFLite flatbuffer.

    ``representative_tiles`` yields uint8 N x tile x tile x 3 batches seen in
    training; their activations fix the quantisation ranges.
    """
    # Dict outputs give the signature its output names.
    named = keras.Model(model.inputs, dict(zip(OUTPUT_NAMES, model.outputs, strict=True)), name=model.name)

    def representative() -> Iterator[list[np.ndarray]]:
        # One tile spanning 0..255 pins the uint8 input to scale 1, zero point 0.
        ramp = np.linspace(0, 255, tile_px * tile_px * 3, dtype=np.float32).reshape(1, tile_px, tile_px, 3)
        yield [ramp]
        for batch in representative_tiles:
            for tile in batch:
                yield [tile[None].astype(np.float32)]

    converter = tf.lite.TFLiteConverter.from_keras_model(named)
    converter.optimizations = [tf.lite.Optimize.DEFAULT]
    converter.representative_dataset = representative
    converter.target_spec.supported_ops = [tf.lite.OpsSet.TFLITE_BUILTINS_INT8]
    converter.inference_input_type = tf.uint8
    converter.inference_output_type = tf.int8
    flatbuffer: bytes = converter.convert()
    return flatbuffer


def input_quantisation(model_path: Path) -> tuple[float, int]:
    """The (scale, zero_point) of an exported model's input."""
    from ai_edge_litert.interpreter import Interpreter

    runner = Interpreter(model_path=str(model_path)).get_signature_runner(SIGNATURE)
    scale, zero_point = runner.get_input_details()[INPUT_NAME]["quantization"]
    return float(scale), int(zero_point)
