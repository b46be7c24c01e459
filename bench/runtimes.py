"""The bundled model's tile batch on each TFLite-compatible runtime that is installed.

Only ``ai-edge-litert`` (the device's default) is required; ``tflite-runtime``
needs numpy < 2 and so a venv of its own, and ONNX Runtime needs the model
converted. Runtimes not measured are recorded with the reason.
"""

from __future__ import annotations

import importlib.util
from typing import Any

import numpy as np
from _common import BUNDLE, percentiles_ms, time_calls

from veriscope.device.inference.bundle import load_bundle


def _litert(threads: int, repeat: int) -> dict[str, float]:
    from ai_edge_litert.interpreter import Interpreter

    bundle = load_bundle(BUNDLE)
    interpreter = Interpreter(model_path=str(bundle.model_path), num_threads=threads)
    interpreter.allocate_tensors()
    runner = interpreter.get_signature_runner(bundle.outputs.signature)
    t = bundle.input.tile_px
    tiles = np.random.default_rng(3).integers(0, 256, (bundle.tiling.tile_count, t, t, 3), dtype=np.uint8)
    return percentiles_ms(time_calls(lambda: runner(**{bundle.input.name: tiles}), repeat, warmup=3))


def measure(repeat: int) -> dict[str, Any]:
    """Invoke p50/p95 in ms per runtime and thread count, or ``{"measured": False, "reason": ...}``."""
    out: dict[str, Any] = {
        "ai-edge-litert": {f"{n}_threads": _litert(n, repeat) for n in (1, 2)},
    }
    for name, module, reason in (
        ("tflite-runtime", "tflite_runtime", "needs numpy < 2, so a venv of its own; not set up in this round"),
        ("onnxruntime", "onnxruntime", "needs the model converted to ONNX (tf2onnx); not done in this round"),
    ):
        installed = importlib.util.find_spec(module) is not None
        out[name] = {"measured": False, "reason": reason if not installed else f"{reason} (the module is installed)"}
    return out
