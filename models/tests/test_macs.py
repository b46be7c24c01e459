"""Multiply-accumulate counts of the shipped demo model and the Pi 4 latency estimate.

Reads models/bundles/veriscope-demo/model.tflite with the device's TFLite
runtime; needs no TensorFlow.
"""

from __future__ import annotations

import math
from pathlib import Path
from typing import Any

import pytest

from veriscope.device.errors import ModelError
from veriscope.device.inference import load_bundle
from veriscope.device.inference._runtime import make_interpreter
from veriscope.training.macs import (
    COUNTED_OPS,
    PI4_AIM_MS,
    PI4_REFERENCE_MACS,
    PI4_REFERENCE_MS,
    MacReport,
    count_macs,
    pi4_estimate_ms,
)

BUNDLE = Path(__file__).resolve().parents[1] / "bundles" / "veriscope-demo"


@pytest.fixture(scope="module")
def report() -> MacReport:
    return count_macs(BUNDLE / "model.tflite")


@pytest.fixture(scope="module")
def op_shapes() -> dict[int, tuple[str, list[tuple[int, ...]], tuple[int, ...]]]:
    """Each op's name, input shapes and first output shape, read straight from the runtime."""
    interpreter: Any = make_interpreter(BUNDLE / "model.tflite", num_threads=1)
    shapes = {t["index"]: tuple(int(d) for d in t["shape"]) for t in interpreter.get_tensor_details()}
    return {
        op["index"]: (op["op_name"], [shapes[i] for i in op["inputs"] if i >= 0], shapes[op["outputs"][0]])
        for op in interpreter._get_ops_details()
        if op["op_name"] != "DELEGATE"
    }


def test_first_conv_layer_matches_a_count_by_hand(report: MacReport, op_shapes: dict[int, Any]) -> None:
    conv = next(layer for layer in report.layers if layer.op == "CONV_2D")
    _, inputs, output = op_shapes[conv.index]
    (_, in_h, in_w, in_c), (out_c, kh, kw, filter_c), (_, out_h, out_w, out_c2) = inputs[0], inputs[1], output
    tile_px = load_bundle(BUNDLE).tiling.tile_px
    assert (in_h, in_w, in_c) == (tile_px, tile_px, 3)  # the stem sees one RGB tile
    assert filter_c == in_c and out_c == out_c2
    # Every output value of a dense convolution sums kh * kw * in_c products.
    assert conv.macs == out_h * out_w * out_c * kh * kw * in_c
    assert conv.output_shape == (1, out_h, out_w, out_c)


def test_depthwise_layers_cost_one_window_per_output(report: MacReport, op_shapes: dict[int, Any]) -> None:
    depthwise = [layer for layer in report.layers if layer.op == "DEPTHWISE_CONV_2D"]
    assert depthwise, "the demo model is a depthwise-separable CNN"
    for layer in depthwise:
        _, inputs, output = op_shapes[layer.index]
        _, kh, kw, channels = inputs[1]
        assert output[-1] == channels
        assert layer.macs == math.prod(output) * kh * kw


def test_total_lies_within_bounds_from_the_weights(report: MacReport, op_shapes: dict[int, Any]) -> None:
    weights = sum(math.prod(inputs[1]) for name, inputs, _ in op_shapes.values() if name in COUNTED_OPS)
    tile_pixels = math.prod(report.input_shape[1:3])
    # Each weight is used at least once per tile, and at most once per input pixel (no upsampling).
    assert weights < report.total < weights * tile_pixels
    # A small depthwise-separable CNN on 128 px tiles: a few million MACs, far below MobileNetV2's 300 M.
    assert 1_000_000 < report.total < 30_000_000
    assert report.total == sum(layer.macs for layer in report.layers) == sum(report.by_op.values())


def test_every_op_is_listed_and_only_counted_ops_cost(report: MacReport, op_shapes: dict[int, Any]) -> None:
    assert [layer.index for layer in report.layers] == sorted(op_shapes)
    assert report.input_shape[0] == 1
    for layer in report.layers:
        assert (layer.macs > 0) == (layer.op in COUNTED_OPS), layer
    assert report.by_op["MEAN"] == 0
    assert report.unmodelled == ()


def test_fully_connected_counts_inputs_times_units(report: MacReport, op_shapes: dict[int, Any]) -> None:
    for layer in (layer for layer in report.layers if layer.op == "FULLY_CONNECTED"):
        _, inputs, output = op_shapes[layer.index]
        units, features = inputs[1]
        assert output == (1, units) and layer.macs == units * features


def test_pi4_estimate_scales_from_the_mobilenet_reference() -> None:
    assert pi4_estimate_ms(PI4_REFERENCE_MACS) == pytest.approx(PI4_REFERENCE_MS)
    assert pi4_estimate_ms(PI4_REFERENCE_MACS // 4) == pytest.approx(PI4_AIM_MS)
    assert pi4_estimate_ms(0) == 0.0
    assert pi4_estimate_ms(2 * 75_000_000) == pytest.approx(2 * pi4_estimate_ms(75_000_000))
    with pytest.raises(ValueError):
        pi4_estimate_ms(-1)


def test_count_macs_of_a_file_that_is_no_model(tmp_path: Path) -> None:
    bogus = tmp_path / "model.tflite"
    bogus.write_bytes(b"not a flatbuffer")
    with pytest.raises(ModelError):
        count_macs(bogus)


def test_an_interpreter_sized_for_a_batch_is_counted_per_tile(report: MacReport) -> None:
    from veriscope.training.macs import _op_macs, _resize_to_batch_one

    interpreter: Any = make_interpreter(BUNDLE / "model.tflite", num_threads=1)
    detail = interpreter.get_input_details()[0]
    interpreter.resize_tensor_input(detail["index"], [12, *detail["shape"][1:]])
    interpreter.allocate_tensors()
    _resize_to_batch_one(interpreter)
    shapes = {t["index"]: tuple(int(d) for d in t["shape"]) for t in interpreter.get_tensor_details()}
    ops = [op for op in interpreter._get_ops_details() if op["op_name"] != "DELEGATE"]
    total = sum(
        _op_macs(op["op_name"], [shapes[i] for i in op["inputs"] if i >= 0], shapes[op["outputs"][0]]) for op in ops
    )
    assert interpreter.get_input_details()[0]["shape"][0] == 1
    assert total == report.total
