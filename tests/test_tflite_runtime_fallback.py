"""The ``tflite-runtime`` fallback, run for real as on Raspberry Pi OS bookworm (numpy < 2, no ai-edge-litert).

A separate venv is built from ``requirements-pi.lock`` (numpy 1.26, tflite-runtime
2.14.0 and the daemon's other dependencies, hash-checked) and cached under
``build/`` keyed by the lock's digest (tests/cached_venvs.py, which the runtimes
benchmark shares), so only the first run downloads. The
project's packages run in it from their sources. In that venv the runtime chooser
must pick tflite-runtime, every module of the daemon must import, the bundled
model must score images as ai-edge-litert does in this venv, and a simulated
daemon running there must scan a genuine item to AUTHENTIC.
"""

from __future__ import annotations

import json
import re
import subprocess
import tomllib
from collections.abc import Iterator
from pathlib import Path

import numpy as np
import pytest
from cached_venvs import PI_LOCK, ROOT, VenvBuildError, VenvUnavailable, lock_pins, normal_name, pi_env, pi_venv
from PIL import Image

from veriscope.device.inference import load_bundle
from veriscope.device.launch import DaemonProcess, spawn_daemon
from veriscope.device.pipeline.inference import Analyzer
from veriscope.device.specimen import generate_dataset
from veriscope.sdk import Client, Verdict

PI_IN = ROOT / "requirements-pi.in"
MAIN_LOCK = ROOT / "requirements.lock"
BUNDLE_DIR = ROOT / "models" / "bundles" / "veriscope-demo"
PROJECT_PYPROJECTS = [ROOT / p / "pyproject.toml" for p in ("protos/python", "device", "firmware_tools", "host_sdk")]
# The int8 kernels of the two runtimes differ in rounding, so outputs may differ by a quantisation step: on 36
# simulated images the largest differences were 0.010 (image score), 0.13 (logit) and 0.065 (one tile's score).
SCORE_TOLERANCE = 0.03
"""Largest difference allowed between the runtimes' calibrated score or familiarity (0..1) of one image."""
LOGIT_TOLERANCE = 0.3
"""Largest difference allowed between the runtimes' calibrated logits of one image."""
TILE_TOLERANCE = 0.1
"""Largest difference allowed between the runtimes' calibrated scores (0..1) of one tile."""

PROBE = """
import importlib, json, pkgutil, sys
import numpy
import veriscope.device
from veriscope.device.inference import _runtime
failed = {}
for module in pkgutil.walk_packages(veriscope.device.__path__, "veriscope.device."):
    try:
        importlib.import_module(module.name)
    except Exception as exc:
        failed[module.name] = repr(exc)
try:
    import ai_edge_litert
    litert = True
except ImportError:
    litert = False
print(json.dumps({"numpy": numpy.__version__, "runtime": _runtime.runtime_name(), "litert": litert,
                  "failed": failed}))
"""

ANALYZE = """
import json, sys
from pathlib import Path
import numpy as np
from PIL import Image
from veriscope.device.inference import _runtime, load_bundle
from veriscope.device.pipeline.inference import Analyzer
analyzer = Analyzer(load_bundle(Path(sys.argv[1])), num_threads=1)
results = {}
for item in json.loads(sys.argv[2]):
    with Image.open(item["path"]) as image:
        pixels = np.asarray(image.convert("RGB"))
    a = analyzer.analyze_image(pixels, item["material"])
    results[item["path"]] = {"score": a.score, "logit": a.logit, "familiarity": a.familiarity,
                             "tile_scores": a.tile_scores.tolist()}
print(json.dumps({"runtime": _runtime.runtime_name(), "results": results}))
"""


@pytest.fixture(scope="module")
def pi_python() -> Path:
    """The interpreter of the cached Pi venv, built from requirements-pi.lock on first use."""
    try:
        return pi_venv()
    except VenvUnavailable as exc:
        pytest.skip(str(exc))
    except VenvBuildError as exc:
        pytest.fail(str(exc))


def _run_pi(python: Path, script: str, *args: str) -> dict:
    done = subprocess.run(
        [str(python), "-c", script, *args], capture_output=True, text=True, timeout=600, env=pi_env(), cwd=ROOT
    )
    assert done.returncode == 0, done.stderr
    return json.loads(done.stdout.strip().splitlines()[-1])


def test_pi_lock_covers_the_daemon_and_matches_the_main_lock() -> None:
    pi, main = lock_pins(PI_LOCK), lock_pins(MAIN_LOCK)
    assert pi["numpy"] and all(v.startswith("1.") for v in pi["numpy"]), pi["numpy"]
    assert pi["tflite-runtime"] == {"2.14.0"}
    assert "ai-edge-litert" not in pi
    needed = set()
    for path in PROJECT_PYPROJECTS:
        for requirement in tomllib.loads(path.read_text())["project"]["dependencies"]:
            needed.add(normal_name(re.split(r"[\s<>=!~;\[]", requirement, maxsplit=1)[0]))
    needed = {n for n in needed if not n.startswith("veriscope-") and n != "ai-edge-litert"}
    assert needed <= set(pi), f"{PI_LOCK.name} lacks {sorted(needed - set(pi))}: add them to {PI_IN.name}"
    drifted = {n: (pi[n], main[n]) for n in set(pi) & set(main) if n != "numpy" and pi[n] != main[n]}
    assert not drifted, f"pins differ from {MAIN_LOCK.name} (pi, main): {drifted}; update {PI_IN.name}"


def test_chooser_picks_tflite_runtime_and_the_daemon_imports(pi_python: Path) -> None:
    probe = _run_pi(pi_python, PROBE)
    assert probe["numpy"].startswith("1."), probe
    assert probe["litert"] is False, probe
    assert probe["runtime"] == "tflite-runtime"
    assert probe["failed"] == {}, "modules that fail to import under numpy < 2 and tflite-runtime"


@pytest.fixture(scope="module")
def specimen_images(tmp_path_factory: pytest.TempPathFactory) -> list[dict[str, str]]:
    """One genuine and one blatant-fake image of each material, as PNG files."""
    root = tmp_path_factory.mktemp("specimens")
    generate_dataset(root, sources=["genuine", "counterfeit-a"], items_per_source=1, images_per_item=1, seed=777)
    images = [{"path": str(p), "material": p.parts[-4]} for p in sorted(root.glob("*/*/*/*.png"))]
    assert len(images) == 6
    return images


def test_tflite_runtime_scores_match_ai_edge_litert(pi_python: Path, specimen_images: list[dict[str, str]]) -> None:
    pi = _run_pi(pi_python, ANALYZE, str(BUNDLE_DIR), json.dumps(specimen_images))
    assert pi["runtime"] == "tflite-runtime"
    analyzer = Analyzer(load_bundle(BUNDLE_DIR), num_threads=1)
    scores = []
    for item in specimen_images:
        with Image.open(item["path"]) as image:
            here = analyzer.analyze_image(np.asarray(image.convert("RGB")), item["material"])
        there = pi["results"][item["path"]]
        scores.append(here.score)
        where = f"{item['path']}: litert {here.score:.4f}, tflite-runtime {there['score']:.4f}"
        assert abs(here.score - there["score"]) <= SCORE_TOLERANCE, where
        assert abs(here.logit - there["logit"]) <= LOGIT_TOLERANCE, where
        assert abs(here.familiarity - there["familiarity"]) <= SCORE_TOLERANCE, where
        tiles = np.abs(here.tile_scores - np.array(there["tile_scores"]))
        assert tiles.max() <= TILE_TOLERANCE, where + f", tile scores differ by up to {tiles.max():.3f}"
    # The images span the score range, so agreement is not two runtimes both saying 0.
    assert max(scores) - min(scores) > 0.5, scores


@pytest.fixture(scope="module")
def pi_daemon(pi_python: Path, tmp_path_factory: pytest.TempPathFactory) -> Iterator[DaemonProcess]:
    """``veriscope-device serve --simulate`` running in the Pi venv."""
    command = [str(pi_python), "-c", "import sys; from veriscope.device.cli import main; sys.exit(main())"]
    unit = spawn_daemon(tmp_path_factory.mktemp("pi-unit") / "data", command=command, env=pi_env())
    yield unit
    code = unit.stop()
    assert code == 0, "daemon did not exit 0 on SIGTERM:\n" + "".join(unit.output)


@pytest.mark.slow
def test_daemon_on_tflite_runtime_scans_a_genuine_item_authentic(pi_daemon: DaemonProcess) -> None:
    # One scan: the analyser test above already shows the runtimes agree on genuine and fake images alike.
    with Client(pi_daemon.address) as client:
        model = client.get_device().model
        assert model is not None and model.name == "veriscope-demo"
        client.place_item("wallet-compact", "genuine", 12)
        genuine = client.scan("wallet-compact")
    assert (genuine.verdict, genuine.reason) == (Verdict.AUTHENTIC, None), genuine
    assert [r.region for r in genuine.regions] == ["canvas", "interior"]
