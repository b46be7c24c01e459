"""The daemon's whole per-image path against the bare interpreter invoke it cannot avoid.

The limit is one ``Interpreter`` signature-runner call on the bundle's tile
batch (all the tiles of one frame go in one batch, so a frame needs exactly one
invoke). The whole path is what the scan service does with an uploaded image:
one decode, the quality gate, tiling, the invoke and turning raw outputs into an
analysis (all at upload, while the frame is decoded), then the item verdict at
completion (its cost divided by the images it judges). Images are those of ``bench_load``: three
regions, a PNG and a JPEG each, at the unit's capture size.
"""

from __future__ import annotations

import time
from functools import partial
from typing import Any

from _common import BUNDLE, median, percentiles_ms, time_calls
from bench_load import ITEM, render_item_images

from veriscope.device import codec
from veriscope.device.inference import _runtime
from veriscope.device.inference.bundle import load_bundle
from veriscope.device.pipeline import quality
from veriscope.device.pipeline.inference import Analyzer, analyze_outputs
from veriscope.device.pipeline.verdict import decide

MAX_PIXELS = 40_000_000


def measure(repeat: int) -> dict[str, Any]:
    """p50/p95 of one invoke and of the whole per-image path, in ms, and their ratio (see the module docstring)."""
    bundle = load_bundle(BUNDLE)
    analyzer = Analyzer(bundle)
    spec = bundle.item_type(ITEM)
    material_of = {region.name: region.material for region in spec.regions}
    images = render_item_images()
    first_region, first_data = images[0]
    tiles = analyzer.tiles(codec.decode(first_data, max_pixels=MAX_PIXELS))

    interpreter = _runtime.make_interpreter(bundle.model_path)
    runner = interpreter.get_signature_runner(bundle.outputs.signature)
    invoke_s = time_calls(lambda: runner(**{bundle.input.name: tiles}), repeat * len(images))

    def whole_path(region: str, data: bytes) -> Any:
        material = material_of[region]
        pixels = codec.decode(data, max_pixels=MAX_PIXELS)
        quality.assess(pixels, bundle.quality_overrides(material))
        raw = analyzer.run_tiles(analyzer.tiles(pixels))
        return analyze_outputs(bundle, raw, material)

    # One pass over the item's images per repeat; each image's time gets an equal share of the verdict.
    path_s: list[float] = []
    parts: dict[str, list[float]] = {
        "decode": [],
        "quality_gate": [],
        "tiling": [],
        "invoke": [],
        "aggregation": [],
    }
    for _ in range(repeat + 1):
        analyses = []
        by_region: dict[str, list[tuple[str, bool, Any]]] = {r.name: [] for r in spec.regions}
        per_image: list[float] = []
        for k, (region, data) in enumerate(images):
            start = time.perf_counter()
            analyses.append(whole_path(region, data))
            per_image.append(time.perf_counter() - start)
            by_region[region].append((f"{k:03d}", True, analyses[-1]))
        decide_s = median(time_calls(partial(decide, bundle, spec, by_region), 5, warmup=1))
        path_s.extend(t + decide_s / len(images) for t in per_image)
        parts["aggregation"].append(decide_s / len(images))
    path_s = path_s[len(images) :]  # the first pass warms caches

    # The parts, for naming where time goes when the ratio is high.
    material = material_of[first_region]
    pixels = codec.decode(first_data, max_pixels=MAX_PIXELS)
    for _, data in images:
        parts["decode"].extend(time_calls(partial(codec.decode, data, max_pixels=MAX_PIXELS), 1, warmup=0))
    parts["quality_gate"] = time_calls(lambda: quality.assess(pixels, bundle.quality_overrides(material)), repeat)
    parts["tiling"] = time_calls(lambda: analyzer.tiles(pixels), repeat)
    parts["invoke"] = invoke_s

    invoke = percentiles_ms(invoke_s)
    path = percentiles_ms(path_s)
    invokes_per_image = 1
    return {
        "runtime": _runtime.runtime_name(),
        "threads": _runtime.default_threads(),
        "tiles_per_invoke": int(tiles.shape[0]),
        "tile_px": bundle.input.tile_px,
        "invokes_per_image": invokes_per_image,
        "images": len(images),
        "image_size": [int(pixels.shape[1]), int(pixels.shape[0])],
        "invoke_p50_ms": invoke["p50_ms"],
        "invoke_p95_ms": invoke["p95_ms"],
        "path_p50_ms": path["p50_ms"],
        "path_p95_ms": path["p95_ms"],
        "parts_p50_ms": {name: percentiles_ms(values)["p50_ms"] for name, values in parts.items()},
        "pipeline_overhead_ratio": path["p50_ms"] / (invoke["p50_ms"] * invokes_per_image),
    }
