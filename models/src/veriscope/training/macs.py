"""Multiply-accumulates of a ``.tflite`` model, and the Raspberry Pi 4 latency they suggest.

:func:`count_macs` reads the model through the same TFLite runtime the device
uses (:mod:`veriscope.device.inference._runtime`) and counts the
multiply-accumulates of one input tile (batch 1) layer by layer from the tensor
shapes. :func:`pi4_estimate_ms` scales a count to milliseconds on a Raspberry
Pi 4 from one reference model. Needs numpy and the runtime only, not TensorFlow.
"""

from __future__ import annotations

import math
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from veriscope.device.inference._runtime import make_interpreter

PI4_REFERENCE_MS = 17.0
"""Time of one int8 MobileNetV2 (width 1.0, 224 x 224 input) inference on a Raspberry Pi 4, 64-bit OS, XNNPACK."""

PI4_REFERENCE_MACS = 300_000_000
"""Multiply-accumulates of that MobileNetV2 inference."""

PI4_AIM_MS = PI4_REFERENCE_MS / 4
"""The per-image budget Veriscope aims for: a quarter of the reference model's time."""

COUNTED_OPS = frozenset({"CONV_2D", "DEPTHWISE_CONV_2D", "FULLY_CONNECTED"})
"""Ops whose multiply-accumulates are counted; every other op is listed at 0."""

UNMODELLED_OPS = frozenset({"TRANSPOSE_CONV", "CONV_3D", "CONV_3D_TRANSPOSE", "BATCH_MATMUL"})
"""Ops that do multiply-accumulate work this counter does not model; a model with any is under-counted."""

_NOT_LAYERS = frozenset({"DELEGATE"})
"""Runtime nodes that wrap ops already listed, such as the XNNPACK delegate's."""


@dataclass(frozen=True)
class LayerMacs:
    """One op of the model and its multiply-accumulates for a single tile."""

    index: int
    """The op's index in the model's execution plan."""
    op: str
    """The builtin op name, for example "CONV_2D"."""
    output_shape: tuple[int, ...]
    """Shape of the op's first output at batch 1."""
    macs: int
    """Multiply-accumulates of the op; 0 for ops not in :data:`COUNTED_OPS`."""


@dataclass(frozen=True)
class MacReport:
    """The multiply-accumulates of one model, per input tile (batch 1)."""

    model_path: Path
    """The ``.tflite`` file counted."""
    input_shape: tuple[int, ...]
    """Shape of the model's first input at batch 1, for example (1, 128, 128, 3)."""
    layers: tuple[LayerMacs, ...]
    """Every op of the model in execution order, counted or not."""

    @property
    def total(self) -> int:
        """Multiply-accumulates of one tile, summed over all layers."""
        return sum(layer.macs for layer in self.layers)

    @property
    def by_op(self) -> dict[str, int]:
        """Multiply-accumulates of one tile per op name, including ops counted at 0."""
        totals: dict[str, int] = {}
        for layer in self.layers:
            totals[layer.op] = totals.get(layer.op, 0) + layer.macs
        return totals

    @property
    def unmodelled(self) -> tuple[str, ...]:
        """Names of ops in the model that do multiply-accumulate work this counter leaves at 0, sorted."""
        return tuple(sorted({layer.op for layer in self.layers} & UNMODELLED_OPS))


def count_macs(model_path: str | Path) -> MacReport:
    """Count the multiply-accumulates of one input tile of a ``.tflite`` model.

    Counts, from the shapes the runtime reports after allocating tensors at
    batch 1: CONV_2D as output elements x kernel height x kernel width x input
    channels per group, DEPTHWISE_CONV_2D as output elements x kernel height x
    kernel width, and FULLY_CONNECTED as output elements x input features. Bias
    additions, activations, pooling, quantisation and the like are listed at 0;
    ops in :data:`UNMODELLED_OPS` are listed at 0 and named by
    :attr:`MacReport.unmodelled`.

    Raises :class:`veriscope.device.errors.ModelError` when no TFLite runtime is
    installed or the file is not a model the runtime can load, and
    :class:`ValueError` when a counted op's tensor shapes are not the ones
    TFLite defines for it.
    """
    path = Path(model_path)
    interpreter = make_interpreter(path, num_threads=1)
    _resize_to_batch_one(interpreter)
    shapes = {int(t["index"]): tuple(int(d) for d in t["shape"]) for t in interpreter.get_tensor_details()}
    layers = []
    for op in interpreter._get_ops_details():
        name = str(op["op_name"])
        if name in _NOT_LAYERS:
            continue
        inputs = [shapes.get(int(i), ()) for i in op["inputs"]]
        outputs = [shapes.get(int(i), ()) for i in op["outputs"]]
        output = outputs[0] if outputs else ()
        layers.append(LayerMacs(int(op["index"]), name, output, _op_macs(name, inputs, output)))
    input_shape = tuple(int(d) for d in interpreter.get_input_details()[0]["shape"])
    return MacReport(model_path=path, input_shape=input_shape, layers=tuple(layers))


def pi4_estimate_ms(macs_per_image: int) -> float:
    """Estimated model time of one image on a Raspberry Pi 4, in milliseconds.

    Assumes time is proportional to multiply-accumulates and scales from the
    reference of :data:`PI4_REFERENCE_MS` (about 17 ms) for int8 MobileNetV2
    (width 1.0, 224 x 224, :data:`PI4_REFERENCE_MACS`, about 300 M) run with
    XNNPACK on a Raspberry Pi 4 under a 64-bit OS. The assumption ignores
    per-invoke overhead and memory-bound ops, and depthwise layers do fewer
    MACs per second than MobileNetV2's mix, so the estimate is likely
    optimistic: check it on a real Pi 4. Frame scaling and tiling are not
    included. Raises :class:`ValueError` for a negative count.
    """
    if macs_per_image < 0:
        raise ValueError(f"macs_per_image must be >= 0, got {macs_per_image}")
    return PI4_REFERENCE_MS * macs_per_image / PI4_REFERENCE_MACS


def _resize_to_batch_one(interpreter: Any) -> None:
    """Give every input a batch of one, so shapes and counts are per tile."""
    resized = False
    for detail in interpreter.get_input_details():
        shape = [int(d) for d in detail["shape"]]
        if shape and shape[0] != 1:
            interpreter.resize_tensor_input(detail["index"], [1, *shape[1:]])
            resized = True
    if resized:
        interpreter.allocate_tensors()


def _op_macs(name: str, inputs: Sequence[tuple[int, ...]], output: tuple[int, ...]) -> int:
    if name not in COUNTED_OPS:
        return 0
    if len(inputs) < 2 or not output:
        raise ValueError(f"{name} has inputs {list(inputs)} and output {output}; expected data, weights and an output")
    weights = inputs[1]
    out_elements = math.prod(output)
    if name == "CONV_2D":
        # Filter [out_channels, kh, kw, in_channels per group].
        if len(weights) != 4:
            raise ValueError(f"CONV_2D filter shape {weights} is not 4-D")
        return out_elements * weights[1] * weights[2] * weights[3]
    if name == "DEPTHWISE_CONV_2D":
        # Filter [1, kh, kw, out_channels]: one kh x kw window per output element.
        if len(weights) != 4:
            raise ValueError(f"DEPTHWISE_CONV_2D filter shape {weights} is not 4-D")
        return out_elements * weights[1] * weights[2]
    # FULLY_CONNECTED: weights [units, input features].
    if len(weights) != 2:
        raise ValueError(f"FULLY_CONNECTED weights shape {weights} is not 2-D")
    return out_elements * weights[1]
