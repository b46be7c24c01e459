"""Time the specimen simulator: surface synthesis, frame rendering at several sizes, and dataset writing.

Run: ``.venv/bin/python device/bench/bench_specimen.py``. Prints timings; asserts nothing.
"""

from __future__ import annotations

import statistics
import tempfile
import time
from collections.abc import Callable
from pathlib import Path

import numpy as np

from veriscope.device.specimen import (
    MATERIALS,
    Optics,
    Pose,
    VirtualItem,
    generate_dataset,
    in_focus_steps,
    material_surface,
    render,
)
from veriscope.device.types import Lighting


def timed(fn: Callable[[], object], repeat: int) -> tuple[float, float]:
    """Median and best wall time of ``fn`` in milliseconds, after one warm-up call."""
    fn()
    times = []
    for _ in range(repeat):
        start = time.perf_counter()
        fn()
        times.append((time.perf_counter() - start) * 1000.0)
    return statistics.median(times), min(times)


def main() -> None:
    print("surface synthesis (ms, one tile each)")
    for material in MATERIALS:
        times = []
        for seed in range(3):
            start = time.perf_counter()
            material_surface(material, "genuine", 1000 + seed)
            times.append((time.perf_counter() - start) * 1000.0)
        print(f"  {material:16s} median {statistics.median(times):7.0f}")

    surface = VirtualItem("tote-classic", "genuine", 1).surface("canvas")
    pose = Pose(x_mm=3.0, y_mm=2.0, rotation_deg=17.0)
    focus = round(in_focus_steps(pose))
    rng = np.random.default_rng(0)
    ring = {Lighting.WHITE_RING: 60}
    print("render (ms, median / best)")
    cases: list[tuple[str, Optics, int | None, dict[Lighting, int], Pose, float, int]] = [
        ("640x480 preview, in focus", Optics(), 640, ring, pose, focus, 20),
        ("640x480 preview, 20 steps off", Optics(), 640, ring, pose, focus + 20, 20),
        ("640x480 preview, tilted 3 deg", Optics(), 640, ring, Pose(x_mm=3.0, tilt_x_deg=3.0), focus, 10),
        ("640x480 preview, raking", Optics(), 640, {Lighting.RAKING: 80}, pose, focus, 10),
        ("512x384 dataset frame", Optics(), 512, ring, pose, focus, 20),
        ("2028x1520 full frame", Optics(), None, ring, pose, focus, 5),
        ("4056x3040 full 12 MP", Optics(sensor_width_px=4056, sensor_height_px=3040), None, ring, pose, focus, 3),
    ]
    for name, optics, width, duties, p, f, repeat in cases:

        def frame(
            optics: Optics = optics,
            width: int | None = width,
            duties: dict[Lighting, int] = duties,
            p: Pose = p,
            f: float = f,
        ) -> object:
            return render(
                surface,
                p,
                duties=duties,
                exposure_us=8000,
                analogue_gain=1.0,
                focus_steps=f,
                rng=rng,
                optics=optics,
                width=width,
            )

        median, best = timed(frame, repeat)
        print(f"  {name:32s} {median:7.1f} / {best:7.1f}")

    with tempfile.TemporaryDirectory() as tmp:
        start = time.perf_counter()
        summary = generate_dataset(Path(tmp), items_per_source=1, images_per_item=8, seed=7)
        elapsed = time.perf_counter() - start
        print(
            f"dataset: {summary.images} images of {summary.items} items (512 px) in {elapsed:.1f} s, "
            f"{summary.images / elapsed:.1f} images/s on one core"
        )


if __name__ == "__main__":
    main()
