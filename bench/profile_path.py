"""Where the per-image path spends its time, sampled with py-spy (native frames included).

Run as a program, it loops over the daemon's per-image path (decode, quality
gate, analysis: tiling, invoke and outputs) on the ``bench_load`` images for the
given seconds. :func:`measure` runs that program under ``py-spy record`` and
turns the samples into shares of the path: per step, per part of the analysis,
and per check of the quality gate. py-spy is a development tool, not a
dependency: without it the figure is reported as not measured, with the install
command.
"""

from __future__ import annotations

import collections
import re
import shutil
import subprocess
import sys
import tempfile
import time
from pathlib import Path
from typing import Any

_STEPS = {"decode": "decode", "assess": "quality gate", "analyze_image": "analysis"}
_ANALYSIS_PARTS = ("to_work_scale", "run_tiles", "analyze_outputs")


def _loop(seconds: float) -> None:
    from _common import BUNDLE
    from bench_load import ITEM, render_item_images

    from veriscope.device import codec
    from veriscope.device.inference.bundle import load_bundle
    from veriscope.device.pipeline import quality
    from veriscope.device.pipeline.inference import Analyzer

    bundle = load_bundle(BUNDLE)
    analyzer = Analyzer(bundle)
    material_of = {r.name: r.material for r in bundle.item_type(ITEM).regions}
    images = render_item_images()
    end = time.monotonic() + seconds
    while time.monotonic() < end:
        for region, data in images:
            pixels = _step_decode(codec, data)
            _step_assess(quality, pixels, bundle.quality_overrides(material_of[region]))
            _step_analyze_image(analyzer, pixels, material_of[region])


# One named frame per step, so that the samples can be told apart by their stack.
def _step_decode(codec: Any, data: bytes) -> Any:
    return codec.decode(data, max_pixels=40_000_000)


def _step_assess(quality: Any, pixels: Any, overrides: Any) -> Any:
    return quality.assess(pixels, overrides)


def _step_analyze_image(analyzer: Any, pixels: Any, material: str) -> Any:
    return analyzer.analyze_image(pixels, material)


def measure(seconds: float) -> dict[str, Any]:
    """Shares (percent of the path's samples) per step, analysis part and gate check; or why it was not measured."""
    py_spy = shutil.which("py-spy") or shutil.which("py-spy", path=str(Path(sys.executable).parent))
    if py_spy is None:
        return {"measured": False, "reason": "py-spy is not installed (pip install py-spy)"}
    with tempfile.TemporaryDirectory() as scratch:
        raw = Path(scratch) / "samples.txt"
        command = [py_spy, "record", "--native", "-r", "200", "-f", "raw", "-o", str(raw), "--"]
        command += [sys.executable, str(Path(__file__).resolve()), str(seconds)]
        done = subprocess.run(command, capture_output=True, text=True, timeout=seconds + 300, check=False)
        if done.returncode != 0 or not raw.is_file():
            return {"measured": False, "reason": f"py-spy failed: {(done.stderr or done.stdout).strip()[-300:]}"}
        lines = raw.read_text().splitlines()
    return summarise(lines)


def summarise(lines: list[str]) -> dict[str, Any]:
    """Shares of the path's samples from py-spy's raw (collapsed-stack) output."""
    steps: collections.Counter[str] = collections.Counter()
    parts: collections.Counter[str] = collections.Counter()
    gate: collections.Counter[str] = collections.Counter()
    total = 0
    for line in lines:
        stack, _, count = line.rpartition(" ")
        frames = stack.split(";")
        names = [re.sub(r" \(.*", "", f).rsplit(".", 1)[-1] for f in frames]  # "Analyzer.run_tiles" -> "run_tiles"
        step = next((_STEPS[n.removeprefix("_step_")] for n in names if n.removeprefix("_step_") in _STEPS), None)
        if step is None or not any(n.startswith("_step_") for n in names):
            continue
        n = int(count)
        total += n
        steps[step] += n
        for part in _ANALYSIS_PARTS:
            if part in names:
                parts[part] += n
        if step == "quality gate":
            inner = [name for name, f in zip(names, frames, strict=True) if "quality.py" in f]
            if len(inner) > 1:
                gate[inner[1]] += n
    if total == 0:
        return {"measured": False, "reason": "no samples fell in the per-image path"}

    def shares(counter: collections.Counter[str]) -> dict[str, float]:
        return {name: round(100 * n / total, 1) for name, n in counter.most_common()}

    return {"samples": total, "steps_pct": shares(steps), "analysis_pct": shares(parts), "gate_pct": shares(gate)}


if __name__ == "__main__":
    sys.path.insert(0, str(Path(__file__).resolve().parent))
    import _common  # noqa: F401  (puts device/bench on the path)

    _loop(float(sys.argv[1]) if len(sys.argv) > 1 else 20.0)
