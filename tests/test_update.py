"""An over-the-air model update end to end: keys, a signed bundle, ``veriscope-tool update push`` to a daemon
process started with ``--update-trust``, and the unit's models and scan results after it."""

from __future__ import annotations

import json
import subprocess
import sys
import tarfile
from collections.abc import Iterator
from pathlib import Path

import pytest

from veriscope.device.launch import DaemonProcess, spawn_daemon

BIN = Path(sys.executable).parent
TOOL = str(BIN / "veriscope-tool")
CLI = str(BIN / "veriscope")
DEMO = Path(__file__).resolve().parents[1] / "models" / "bundles" / "veriscope-demo"
ITEM = "tote-classic"
BUILTIN = json.loads((DEMO / "manifest.json").read_text())["version"]


def run(*args: str) -> subprocess.CompletedProcess[str]:
    return subprocess.run(list(args), capture_output=True, text=True, timeout=600)


@pytest.fixture(scope="module")
def keys(tmp_path_factory: pytest.TempPathFactory) -> Path:
    out = tmp_path_factory.mktemp("keys")
    done = run(TOOL, "keys", "generate", "--out", str(out))
    assert done.returncode == 0, done.stderr
    return out


@pytest.fixture(scope="module")
def unit(tmp_path_factory: pytest.TempPathFactory, keys: Path) -> Iterator[DaemonProcess]:
    unit = spawn_daemon(tmp_path_factory.mktemp("unit") / "data", "--update-trust", str(keys / "update.pub"))
    yield unit
    assert unit.stop() == 0, "".join(unit.output)


def build(keys: Path, out: Path, version: str) -> Path:
    done = run(
        TOOL, "bundle", "build", "--kind", "model", "--source", str(DEMO), "--version", version,
        "--sign-key", str(keys / "update.key"), "--out", str(out),
    )  # fmt: skip
    assert done.returncode == 0, done.stderr
    return out


def models(unit: DaemonProcess) -> list[dict]:
    done = run(CLI, "--device", unit.address, "models", "--json")
    assert done.returncode == 0, done.stderr
    return json.loads(done.stdout)


def test_push_installs_a_model_and_scans_name_it(unit: DaemonProcess, keys: Path, tmp_path: Path) -> None:
    bundle = build(keys, tmp_path / "demo-0.4.0.vsb", "0.4.0")
    done = run(TOOL, "update", "push", "--device", unit.address, str(bundle))
    assert done.returncode == 0, done.stdout + done.stderr
    assert "0.4.0 is installed and active" in done.stdout
    listed = models(unit)
    active = [m for m in listed if m["active"]]
    assert [(m["version"], m["slot"], m["state"]) for m in active] == [("0.4.0", "a", "ACTIVE")]
    assert {(m["version"], m["slot"], m["state"]) for m in listed if not m["active"]} == {
        (BUILTIN, "builtin", "PREVIOUS")
    }
    placed = run(CLI, "--device", unit.address, "sim", "place", "--item-type", ITEM, "--source", "genuine")
    assert placed.returncode == 0, placed.stderr
    scan = run(CLI, "--device", unit.address, "scan", "--item-type", ITEM, "--json")
    assert scan.returncode == 0, scan.stderr
    assert json.loads(scan.stdout)["model"]["version"] == "0.4.0"
    status = run(TOOL, "update", "status", "--device", unit.address, "--json")
    assert status.returncode == 0, status.stderr
    assert json.loads(status.stdout)["results"][0]["outcome"] == "committed"


def test_a_tampered_bundle_exits_non_zero_and_changes_nothing(unit: DaemonProcess, keys: Path, tmp_path: Path) -> None:
    before = models(unit)
    bundle = build(keys, tmp_path / "demo-0.9.0.vsb", "0.9.0")
    with tarfile.open(bundle) as tar:
        offset = tar.getmember("payload/model.tflite").offset_data
    data = bytearray(bundle.read_bytes())
    data[offset + 100] ^= 0x01
    bundle.write_bytes(bytes(data))
    done = run(TOOL, "update", "push", "--device", unit.address, str(bundle))
    assert done.returncode == 1, done.stdout + done.stderr
    assert "refused" in done.stderr
    assert models(unit) == before


def test_an_unreachable_unit_exits_3(keys: Path, tmp_path: Path) -> None:
    bundle = build(keys, tmp_path / "demo-0.4.0.vsb", "0.4.0")
    done = run(TOOL, "update", "push", "--device", "127.0.0.1:9", "--retries", "1", str(bundle))
    assert done.returncode == 3, done.stdout + done.stderr
