"""Helpers shared by the benchmark modules: paths, percentiles and timing."""

from __future__ import annotations

import statistics
import sys
import time
from collections.abc import Callable
from pathlib import Path

import numpy as np

ROOT = Path(__file__).resolve().parents[1]
"""The repository's top folder."""
BUNDLE = ROOT / "models" / "bundles" / "veriscope-demo"
"""The bundled demo model every figure runs."""
FIRMWARE_DIR = ROOT / "build" / "firmware"
"""Where ``make firmware`` leaves the controller image and its emulator."""

# The device's load benchmark is reused, not copied.
sys.path.insert(0, str(ROOT / "device" / "bench"))


def percentiles_ms(samples_s: list[float]) -> dict[str, float]:
    """p50 and p95 of durations given in seconds, in milliseconds."""
    values = np.array(samples_s) * 1000.0
    return {"p50_ms": float(np.percentile(values, 50)), "p95_ms": float(np.percentile(values, 95))}


def time_calls(fn: Callable[[], object], repeat: int, warmup: int = 2) -> list[float]:
    """Wall times of ``repeat`` calls of ``fn`` after ``warmup`` untimed ones, in seconds."""
    for _ in range(warmup):
        fn()
    times = []
    for _ in range(repeat):
        start = time.perf_counter()
        fn()
        times.append(time.perf_counter() - start)
    return times


def median(values: list[float]) -> float:
    """The median of ``values``."""
    return statistics.median(values)
