"""The bundled model's tile batch on each runtime that can run it: ai-edge-litert, tflite-runtime, ONNX Runtime.

``ai-edge-litert`` (the device's default) runs here, in ``.venv``. The others
run in cached venvs of their own under ``build/``, in a subprocess
(bench/_runtime_worker.py) fed the same tile batch:

- ``tflite-runtime`` needs numpy < 2, so it runs in the Raspberry Pi OS venv
  built from ``requirements-pi.lock`` (tests/cached_venvs.py, shared with
  tests/test_tflite_runtime_fallback.py);
- ONNX Runtime needs the model converted: a venv of pinned ``tf2onnx``,
  ``onnx``, ``onnxruntime`` and ``tensorflow-cpu`` (the version of
  ``requirements-train.lock``; the converter imports TensorFlow) converts the
  int8 ``.tflite`` with ``python -m tf2onnx.convert --tflite``, and the
  converted model is cached in that venv.

Each measured runtime reports p50/p95 per thread count, its p50 over
ai-edge-litert's at the same thread count, and the largest difference of its
outputs from ai-edge-litert's on the batch, dequantised (logit and embedding
units) and in quantisation steps. A runtime that cannot be measured is
recorded as ``{"measured": False, "reason": ...}``.
"""

from __future__ import annotations

import hashlib
import json
import re
import subprocess
import sys
import tempfile
from importlib import metadata
from pathlib import Path
from typing import Any

import numpy as np
from _common import BUNDLE, ROOT, percentiles_ms, time_calls

from veriscope.device.inference.bundle import ModelBundle, load_bundle

sys.path.insert(0, str(ROOT / "tests"))

from cached_venvs import VenvBuildError, VenvUnavailable, cached_venv, lock_pins, pi_env, pi_venv

THREADS = (1, 2)
"""Interpreter thread counts measured (the Pi Zero 2 W has 4 cores; this machine has 2)."""
WORKER = Path(__file__).with_name("_runtime_worker.py")
TRAIN_LOCK = ROOT / "requirements-train.lock"
ONNX_PINS = ("tf2onnx==1.17.0", "onnx==1.23.2", "onnxruntime==1.32.0")
"""The converter and the runtime, pinned; TensorFlow's pin comes from requirements-train.lock."""
WORKER_TIMEOUT_S = 600
CONVERT_TIMEOUT_S = 600


def measure(repeat: int) -> dict[str, Any]:
    """Per runtime: version, ``<n>_threads`` p50/p95 in ms and agreement with ai-edge-litert, or why not measured."""
    bundle = load_bundle(BUNDLE)
    t = bundle.input.tile_px
    tiles = np.random.default_rng(3).integers(0, 256, (bundle.tiling.tile_count, t, t, 3), dtype=np.uint8)
    litert, reference, quantization = _litert(bundle, tiles, repeat)
    out: dict[str, Any] = {"ai-edge-litert": litert}
    with tempfile.TemporaryDirectory() as tmp:
        tiles_npy = Path(tmp) / "tiles.npy"
        np.save(tiles_npy, tiles)
        for name, measure_one in (("tflite-runtime", _tflite_runtime), ("onnxruntime", _onnxruntime)):
            try:
                entry = measure_one(bundle, tiles_npy, repeat, Path(tmp))
            except (VenvUnavailable, VenvBuildError, _NotMeasured) as exc:
                out[name] = {"measured": False, "reason": str(exc)}
                continue
            outputs = entry.pop("outputs")
            out[name] = {
                **entry,
                "p50_ratio_vs_litert": {
                    f"{n}_threads": entry[f"{n}_threads"]["p50_ms"] / litert[f"{n}_threads"]["p50_ms"] for n in THREADS
                },
                "max_abs_diff_vs_litert": _differences(reference, outputs, quantization),
            }
    return out


class _NotMeasured(Exception):
    """A runtime's venv was built but it could not run the model; the message is the reason."""


def _litert(
    bundle: ModelBundle, tiles: np.ndarray, repeat: int
) -> tuple[dict[str, Any], dict[str, Any], dict[str, Any]]:
    """ai-edge-litert's timings, its outputs at the first thread count, and each output's (scale, zero point)."""
    from ai_edge_litert.interpreter import Interpreter

    entry: dict[str, Any] = {"version": metadata.version("ai-edge-litert")}
    reference: dict[str, np.ndarray] = {}
    quantization: dict[str, tuple[float, int]] = {}
    for n in THREADS:
        interpreter = Interpreter(model_path=str(bundle.model_path), num_threads=n)
        interpreter.allocate_tensors()
        runner = interpreter.get_signature_runner(bundle.outputs.signature)
        if not reference:
            reference = dict(runner(**{bundle.input.name: tiles}))
            quantization = {k: tuple(d["quantization"]) for k, d in runner.get_output_details().items()}
        entry[f"{n}_threads"] = percentiles_ms(
            time_calls(lambda runner=runner: runner(**{bundle.input.name: tiles}), repeat, warmup=3)
        )
    return entry, reference, quantization


def _spec(bundle: ModelBundle) -> str:
    """What the worker needs of the model: signature, input name, and tensor name -> signature output name."""
    from ai_edge_litert.interpreter import Interpreter

    runner = Interpreter(model_path=str(bundle.model_path)).get_signature_runner(bundle.outputs.signature)
    outputs = {d["name"]: name for name, d in runner.get_output_details().items()}
    return json.dumps({"signature": bundle.outputs.signature, "input": bundle.input.name, "outputs": outputs})


def _run_worker(
    python: Path,
    runtime: str,
    model: Path,
    bundle: ModelBundle,
    tiles_npy: Path,
    repeat: int,
    tmp: Path,
    env: dict | None,
) -> dict[str, Any]:
    """Run bench/_runtime_worker.py in ``python``'s venv: version, ``<n>_threads`` percentiles and the outputs."""
    outputs_npz = tmp / f"{runtime}-outputs.npz"
    command = [str(python), str(WORKER), runtime, str(model), str(tiles_npy), str(outputs_npz), _spec(bundle)]
    command += [str(repeat), *(str(n) for n in THREADS)]
    done = subprocess.run(command, capture_output=True, text=True, timeout=WORKER_TIMEOUT_S, env=env, cwd=ROOT)
    if done.returncode != 0:
        raise _NotMeasured(f"{runtime} failed on the model: {_last_error(done.stderr)}")
    report = json.loads(done.stdout.strip().splitlines()[-1])
    with np.load(outputs_npz) as saved:
        outputs = {name: saved[name] for name in saved.files}
    entry: dict[str, Any] = {"version": report["version"]}
    entry.update({f"{n}_threads": percentiles_ms(times) for n, times in report["times_s"].items()})
    entry["outputs"] = outputs
    return entry


def _tflite_runtime(bundle: ModelBundle, tiles_npy: Path, repeat: int, tmp: Path) -> dict[str, Any]:
    """tflite-runtime in the Raspberry Pi OS venv (numpy < 2)."""
    return _run_worker(pi_venv(), "tflite-runtime", bundle.model_path, bundle, tiles_npy, repeat, tmp, pi_env())


def _onnxruntime(bundle: ModelBundle, tiles_npy: Path, repeat: int, tmp: Path) -> dict[str, Any]:
    """ONNX Runtime on the model converted by tf2onnx, both in a venv of their own."""
    (tensorflow,) = lock_pins(TRAIN_LOCK)["tensorflow-cpu"]
    pins = [*ONNX_PINS, f"tensorflow-cpu=={tensorflow}"]
    python = cached_venv("onnx-venv", sys.executable, pins)
    digest = hashlib.sha256(bundle.model_path.read_bytes()).hexdigest()[:16]
    model = python.parents[1] / "models" / f"{bundle.model_path.stem}-{digest}.onnx"
    if not model.is_file():
        model.parent.mkdir(exist_ok=True)
        partial = model.with_suffix(".partial.onnx")
        command = [str(python), "-m", "tf2onnx.convert", "--tflite", str(bundle.model_path), "--output", str(partial)]
        done = subprocess.run(command, capture_output=True, text=True, timeout=CONVERT_TIMEOUT_S, cwd=tmp)
        if done.returncode != 0 or not partial.is_file():
            raise _NotMeasured(
                f"tf2onnx {ONNX_PINS[0].split('==')[1]} could not convert it: {_last_error(done.stderr)}"
            )
        partial.replace(model)
    entry = _run_worker(python, "onnxruntime", model, bundle, tiles_npy, repeat, tmp, None)
    return {"converter": f"tf2onnx {ONNX_PINS[0].split('==')[1]} (tensorflow-cpu {tensorflow})", **entry}


def _differences(
    reference: dict[str, np.ndarray], outputs: dict[str, np.ndarray], quantization: dict[str, Any]
) -> dict[str, Any]:
    """Per output: the largest |difference| from ai-edge-litert's, dequantised and in quantisation steps."""
    diffs: dict[str, Any] = {}
    for name, expected in reference.items():
        got = outputs.get(name)
        if got is None or got.shape != expected.shape:
            diffs[name] = f"shape {None if got is None else got.shape}, expected {expected.shape}"
            continue
        scale, zero_point = quantization[name]
        got = got.astype(np.float64)
        if np.issubdtype(outputs[name].dtype, np.floating):
            got = got / scale + zero_point  # a runtime that dequantised its output: back to quantised units
        steps = float(np.abs(got - expected.astype(np.float64)).max())
        diffs[name] = {"dequantised": steps * scale, "steps": steps}
    return diffs


def _last_error(stderr: str) -> str:
    """The exception line of a traceback in ``stderr``, else its last line."""
    lines = [line.strip() for line in stderr.splitlines() if line.strip()]
    errors = [line for line in lines if re.match(r"^[A-Za-z_][\w.]*(Error|Exception|Exit)\b", line)]
    return (errors or lines or ["no output"])[-1]
