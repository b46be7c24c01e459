"""Time the device's per-image analysis of full 2028 x 1520 frames with a bundle, and estimate it on a Pi 4.

Usage: python models/scripts/bench_inference.py [BUNDLE_DIR] [--threads N] [--frames N] [--json]

Prints the median and 90th percentile of Analyzer.analyze_image (tiling, int8
model and scoring) and of the tiling alone on this machine; then the model's
multiply-accumulates (MACs) per tile and per image (tiles per image from the
bundle's tiling) and the Raspberry Pi 4 model time they suggest, against the
reference int8 MobileNetV2 time and the aim of a quarter of it (see
veriscope.training.macs). --json prints the same as one JSON object. Needs
only the runtime install.
"""

from __future__ import annotations

import argparse
import json
import statistics
import time
from pathlib import Path
from typing import Any

import numpy as np

from veriscope.device.inference import frame_to_tiles, load_bundle
from veriscope.device.inference._runtime import runtime_name
from veriscope.device.pipeline.inference import Analyzer
from veriscope.training.macs import PI4_AIM_MS, PI4_REFERENCE_MACS, PI4_REFERENCE_MS, count_macs, pi4_estimate_ms

DEFAULT_BUNDLE = Path(__file__).resolve().parents[1] / "bundles" / "veriscope-demo"


def _summary_ms(values: list[float]) -> dict[str, float]:
    ordered = sorted(values)
    return {
        "median_ms": round(1000 * statistics.median(ordered), 2),
        "p90_ms": round(1000 * ordered[int(0.9 * (len(ordered) - 1))], 2),
    }


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("bundle", nargs="?", type=Path, default=DEFAULT_BUNDLE)
    parser.add_argument("--threads", type=int, default=1, help="interpreter threads")
    parser.add_argument("--frames", type=int, default=30)
    parser.add_argument("--json", action="store_true", help="print one JSON object instead of text")
    args = parser.parse_args()
    bundle = load_bundle(args.bundle)
    analyzer = Analyzer(bundle, num_threads=args.threads)
    frame = np.random.default_rng(0).integers(0, 256, size=(1520, 2028, 3), dtype=np.uint8)
    material = bundle.materials[0]
    analyzer.analyze_image(frame, material)  # warm up
    total: list[float] = []
    tiling: list[float] = []
    for _ in range(args.frames):
        started = time.perf_counter()
        frame_to_tiles(frame, bundle.tiling)
        tiling.append(time.perf_counter() - started)
        started = time.perf_counter()
        analyzer.analyze_image(frame, material)
        total.append(time.perf_counter() - started)

    macs = count_macs(bundle.model_path)
    tiles = bundle.tiling.tile_count
    macs_per_image = macs.total * tiles
    estimate_ms = pi4_estimate_ms(macs_per_image)
    report: dict[str, Any] = {
        "bundle": bundle.name,
        "version": bundle.version,
        "size_bytes": bundle.size_bytes,
        "runtime": runtime_name(),
        "threads": args.threads,
        "frames": args.frames,
        "analyze_image": _summary_ms(total),
        "tiling": _summary_ms(tiling),
        "macs_per_tile": macs.total,
        "macs_by_op": macs.by_op,
        "unmodelled_ops": list(macs.unmodelled),
        "tiles_per_image": tiles,
        "macs_per_image": macs_per_image,
        "pi4_estimate_ms": round(estimate_ms, 3),
        "pi4_reference_ms": PI4_REFERENCE_MS,
        "pi4_reference_macs": PI4_REFERENCE_MACS,
        "pi4_aim_ms": PI4_AIM_MS,
        "ratio_to_reference": round(estimate_ms / PI4_REFERENCE_MS, 4),
        "ratio_to_aim": round(estimate_ms / PI4_AIM_MS, 4),
    }
    if args.json:
        print(json.dumps(report, indent=2))
        return

    def ms(summary: dict[str, float]) -> str:
        return f"median {summary['median_ms']:.1f} ms, p90 {summary['p90_ms']:.1f} ms"

    print(f"{bundle.name} {bundle.version} ({bundle.size_bytes} bytes) on {runtime_name()}, {args.threads} thread(s)")
    print(f"analyze_image, 2028x1520 frame: {ms(report['analyze_image'])}")
    print(f"  of which tiling:              {ms(report['tiling'])}")
    print(f"MACs per tile:                  {macs.total / 1e6:.2f} M")
    print(f"tiles per image:                {tiles} ({bundle.tiling.grid_rows} x {bundle.tiling.grid_cols})")
    print(f"MACs per image:                 {macs_per_image / 1e6:.1f} M")
    verdict = "within" if estimate_ms <= PI4_AIM_MS else "over"
    print(f"Pi 4 model time, estimated:     {estimate_ms:.2f} ms per image")
    print(f"{f'  vs the {PI4_REFERENCE_MS:g} ms reference:':<32}x{report['ratio_to_reference']:.2f}")
    print(f"{f'  vs the {PI4_AIM_MS:g} ms aim:':<32}x{report['ratio_to_aim']:.2f} ({verdict} the aim)")
    print(
        f"  assumes time proportional to MACs, from int8 MobileNetV2 "
        f"({PI4_REFERENCE_MACS / 1e6:.0f} M MACs, {PI4_REFERENCE_MS:g} ms on a Pi 4 with XNNPACK)"
    )
    if macs.unmodelled:
        print(f"  not counted, so under-estimated: {', '.join(macs.unmodelled)}")


if __name__ == "__main__":
    main()
