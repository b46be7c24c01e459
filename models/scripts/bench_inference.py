"""Time the device's per-image analysis of full 2028 x 1520 frames with a bundle.

Usage: python models/scripts/bench_inference.py [BUNDLE_DIR] [--threads N] [--frames N]

Prints the median and 90th percentile of Analyzer.analyze_image (tiling, int8
model and scoring) and of the tiling alone. Needs only the runtime install.
"""

from __future__ import annotations

import argparse
import statistics
import time
from pathlib import Path

import numpy as np

from veriscope.device.inference import frame_to_tiles, load_bundle
from veriscope.device.inference._runtime import runtime_name
from veriscope.device.pipeline.inference import Analyzer

DEFAULT_BUNDLE = Path(__file__).resolve().parents[1] / "bundles" / "veriscope-demo"


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("bundle", nargs="?", type=Path, default=DEFAULT_BUNDLE)
    parser.add_argument("--threads", type=int, default=1, help="interpreter threads")
    parser.add_argument("--frames", type=int, default=30)
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

    def ms(values: list[float]) -> str:
        ordered = sorted(values)
        return f"median {1000 * statistics.median(ordered):.1f} ms, p90 {1000 * ordered[int(0.9 * (len(ordered) - 1))]:.1f} ms"

    print(f"{bundle.name} {bundle.version} ({bundle.size_bytes} bytes) on {runtime_name()}, {args.threads} thread(s)")
    print(f"analyze_image, 2028x1520 frame: {ms(total)}")
    print(f"  of which tiling:              {ms(tiling)}")


if __name__ == "__main__":
    main()
