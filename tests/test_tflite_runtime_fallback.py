"""The ``tflite-runtime`` fallback, run for real as on Raspberry Pi OS bookworm (numpy < 2, no ai-edge-litert).

A separate venv is built from ``requirements-pi.lock`` (numpy 1.26, tflite-runtime
2.14.0 and the daemon's other dependencies, hash-checked) and cached under
``build/`` keyed by the lock's digest, so only the first run downloads. The
project's packages run in it from their sources. In that venv the runtime chooser
must pick tflite-runtime, every module of the daemon must import, the bundled
model must score images as ai-edge-litert does in this venv, and a simulated
daemon running there must scan a genuine item to AUTHENTIC.
"""

from __future__ import annotations

import hashlib
import json
import os
import platform
import re
import shutil
import subprocess
import sys
import tomllib
from collections.abc import Iterator
from pathlib import Path

import numpy as np
import pytest
from PIL import Image

from veriscope.device.inference import load_bundle
from veriscope.device.launch import DaemonProcess, spawn_daemon
from veriscope.device.pipeline.inference import Analyzer
from veriscope.device.specimen import generate_dataset
from veriscope.sdk import Client, Verdict

ROOT = Path(__file__).resolve().parents[1]
PI_IN = ROOT / "requirements-pi.in"
PI_LOCK = ROOT / "requirements-pi.lock"
MAIN_LOCK = ROOT / "requirements.lock"
BUNDLE_DIR = ROOT / "models" / "bundles" / "veriscope-demo"
SOURCES = [ROOT / p for p in ("protos/python/src", "device/src", "firmware_tools/src", "host_sdk/src")]
PROJECT_PYPROJECTS = [ROOT / p / "pyproject.toml" for p in ("protos/python", "device", "firmware_tools", "host_sdk")]
# tflite-runtime 2.14.0 publishes wheels for CPython 3.9 to 3.11 on these machines (bookworm has 3.11).
PI_PYTHONS = ((3, 11), (3, 10), (3, 9))
PI_MACHINES = ("x86_64", "aarch64")
# Signs in pip's output that the package index could not be reached, as opposed to a broken lock.
NETWORK_FAILURES = (
    "NewConnectionError",
    "Max retries exceeded",
    "Temporary failure in name resolution",
    "Name or service not known",
    "Network is unreachable",
    "ConnectTimeoutError",
    "ReadTimeoutError",
    "Could not fetch URL",
    "Connection refused",
)
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


def _pins(lock: Path) -> dict[str, set[str]]:
    """Package name -> pinned versions (several when markers split them) of a ``uv pip compile`` lock."""
    pins: dict[str, set[str]] = {}
    for match in re.finditer(r"^([A-Za-z0-9_.-]+)==([^ ;\\]+)", lock.read_text(), re.MULTILINE):
        pins.setdefault(_normal(match[1]), set()).add(match[2])
    return pins


def _normal(name: str) -> str:
    return re.sub(r"[-_.]+", "-", name).lower()


def _python_version(exe: str) -> tuple[int, int] | None:
    try:
        done = subprocess.run(
            [exe, "-c", "import sys; print(*sys.version_info[:2])"], capture_output=True, text=True, timeout=30
        )
    except OSError:
        return None
    if done.returncode != 0:
        return None
    major, minor = done.stdout.split()
    return int(major), int(minor)


def _pi_interpreter() -> tuple[str, tuple[int, int]]:
    """A Python that tflite-runtime 2.14.0 has wheels for: this one, else python3.11/3.10/3.9 on PATH."""
    if platform.machine() not in PI_MACHINES:
        pytest.skip(f"tflite-runtime 2.14.0 has no wheels for {platform.machine()} (only {', '.join(PI_MACHINES)})")
    if sys.version_info[:2] in PI_PYTHONS:
        return sys.executable, (sys.version_info[0], sys.version_info[1])
    for major, minor in PI_PYTHONS:
        exe = shutil.which(f"python{major}.{minor}")
        if exe is not None and _python_version(exe) == (major, minor):
            return exe, (major, minor)
    pytest.skip(
        "tflite-runtime 2.14.0 has wheels only for CPython 3.9-3.11 (Raspberry Pi OS bookworm has 3.11); "
        f"this is {platform.python_version()} and no python3.11/3.10/3.9 is on PATH"
    )


@pytest.fixture(scope="module")
def pi_python() -> Path:
    """The interpreter of the cached Pi venv, built from requirements-pi.lock on first use."""
    base, version = _pi_interpreter()
    key = hashlib.sha256(PI_LOCK.read_bytes() + f"{version}".encode()).hexdigest()[:16]
    venv = ROOT / "build" / f"pi-venv-{key}"
    python = venv / "bin" / "python"
    done_marker = venv / ".installed"
    if done_marker.is_file():
        return python
    shutil.rmtree(venv, ignore_errors=True)  # a half-built venv from an interrupted run
    venv.parent.mkdir(parents=True, exist_ok=True)
    made = subprocess.run([base, "-m", "venv", str(venv)], capture_output=True, text=True, timeout=300)
    assert made.returncode == 0, f"could not create {venv}:\n{made.stdout}{made.stderr}"
    install = [str(python), "-m", "pip", "install", "--disable-pip-version-check", "--no-input", "--quiet"]
    install += ["--require-hashes", "--only-binary=:all:", "-r", str(PI_LOCK)]
    done = subprocess.run(install, capture_output=True, text=True, timeout=900)
    if done.returncode != 0:
        output = done.stdout + done.stderr
        shutil.rmtree(venv, ignore_errors=True)
        if any(sign in output for sign in NETWORK_FAILURES):
            pytest.skip(f"pip could not reach the package index to install {PI_LOCK.name}:\n{output[-2000:]}")
        pytest.fail(f"pip install -r {PI_LOCK.name} failed:\n{output[-4000:]}")
    done_marker.touch()
    return python


def _pi_env() -> dict[str, str]:
    """The environment for the Pi venv: the project's packages from source, no user site, no VERISCOPE_*."""
    env = {k: v for k, v in os.environ.items() if not k.startswith("VERISCOPE_")}
    env["PYTHONPATH"] = os.pathsep.join(str(p) for p in SOURCES)
    env["PYTHONNOUSERSITE"] = "1"
    return env


def _run_pi(python: Path, script: str, *args: str) -> dict:
    done = subprocess.run(
        [str(python), "-c", script, *args], capture_output=True, text=True, timeout=600, env=_pi_env(), cwd=ROOT
    )
    assert done.returncode == 0, done.stderr
    return json.loads(done.stdout.strip().splitlines()[-1])


def test_pi_lock_covers_the_daemon_and_matches_the_main_lock() -> None:
    pi, main = _pins(PI_LOCK), _pins(MAIN_LOCK)
    assert pi["numpy"] and all(v.startswith("1.") for v in pi["numpy"]), pi["numpy"]
    assert pi["tflite-runtime"] == {"2.14.0"}
    assert "ai-edge-litert" not in pi
    needed = set()
    for path in PROJECT_PYPROJECTS:
        for requirement in tomllib.loads(path.read_text())["project"]["dependencies"]:
            needed.add(_normal(re.split(r"[\s<>=!~;\[]", requirement, maxsplit=1)[0]))
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
    unit = spawn_daemon(tmp_path_factory.mktemp("pi-unit") / "data", command=command, env=_pi_env())
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
