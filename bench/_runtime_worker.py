"""Times one runtime on a saved tile batch, inside that runtime's own venv; bench/runtimes.py runs it.

Usage: ``python bench/_runtime_worker.py RUNTIME MODEL TILES_NPY OUTPUTS_NPZ SPEC_JSON REPEAT THREADS...``

``RUNTIME`` is ``tflite-runtime`` (MODEL a .tflite) or ``onnxruntime`` (MODEL a
.onnx). ``SPEC_JSON`` names the signature, its input, and the signature name of
each output tensor (ONNX keeps the TFLite tensor names). For each thread count
the worker builds a fresh interpreter or session, times ``REPEAT`` calls on the
batch after a warm-up, and keeps the outputs of the first thread count, saved to
``OUTPUTS_NPZ`` under their signature names. It prints one JSON line:
``{"version": ..., "times_s": {"<threads>": [seconds, ...]}}``. It needs only
numpy and the runtime, so it runs as well under numpy 1.x as 2.x.
"""

from __future__ import annotations

import json
import sys
from collections.abc import Callable
from importlib import metadata
from typing import Any

import numpy as np
from _common import time_calls

Outputs = dict[str, np.ndarray]


def _tflite_runtime(model: str, spec: dict[str, Any], threads: int) -> Callable[[np.ndarray], Outputs]:
    from tflite_runtime.interpreter import Interpreter

    interpreter = Interpreter(model_path=model, num_threads=threads)
    interpreter.allocate_tensors()
    runner = interpreter.get_signature_runner(spec["signature"])
    return lambda tiles: runner(**{spec["input"]: tiles})


def _onnxruntime(model: str, spec: dict[str, Any], threads: int) -> Callable[[np.ndarray], Outputs]:
    import onnxruntime as ort

    options = ort.SessionOptions()
    options.intra_op_num_threads = threads
    options.inter_op_num_threads = 1
    session = ort.InferenceSession(model, sess_options=options, providers=["CPUExecutionProvider"])
    (feed,) = session.get_inputs()
    names = [o.name for o in session.get_outputs()]

    def run(tiles: np.ndarray) -> Outputs:
        values = session.run(names, {feed.name: tiles})
        return {spec["outputs"].get(name, name): value for name, value in zip(names, values, strict=True)}

    return run


RUNTIMES = {"tflite-runtime": ("tflite-runtime", _tflite_runtime), "onnxruntime": ("onnxruntime", _onnxruntime)}
"""Runtime name -> (its distribution, a factory of one-batch callables)."""


def main(argv: list[str]) -> int:
    """Run the worker; see the module docstring for the arguments."""
    runtime, model, tiles_npy, outputs_npz, spec_json, repeat, *threads = argv
    distribution, factory = RUNTIMES[runtime]
    spec = json.loads(spec_json)
    tiles = np.load(tiles_npy)
    times: dict[str, list[float]] = {}
    for n in threads:
        call = factory(model, spec, int(n))
        if not times:
            np.savez(outputs_npz, **call(tiles))
        times[n] = time_calls(lambda call=call: call(tiles), int(repeat), warmup=3)
    print(json.dumps({"version": metadata.version(distribution), "times_s": times}))
    return 0


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
