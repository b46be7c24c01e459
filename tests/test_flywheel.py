"""The data flywheel, end to end: scan items on the simulated unit, label them with the CLI, export the labelled
scans with the CLI, and read the export with the training pipeline's own loader (and train on it, with TensorFlow).
"""

from __future__ import annotations

import hashlib
import json
import os
import subprocess
import sys
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any

import numpy as np
import pytest
from PIL import Image

from veriscope.device import codec
from veriscope.device.launch import DaemonProcess
from veriscope.device.specimen import imaging
from veriscope.device.specimen.surface import VirtualItem
from veriscope.device.types import Lighting

CLI = str(Path(sys.executable).with_name("veriscope"))
ITEM = "tote-classic"
MATERIALS = {"canvas": "coated-canvas", "trim": "grained-leather", "lining": "woven-fabric"}


def cli(unit: DaemonProcess, *args: str) -> subprocess.CompletedProcess[str]:
    return subprocess.run([CLI, "--device", unit.address, *args], capture_output=True, text=True, timeout=300)


def cli_json(unit: DaemonProcess, *args: str) -> Any:
    done = cli(unit, *args, "--json")
    assert done.returncode == 0, done.stderr
    return json.loads(done.stdout)


def _frame(item: VirtualItem, region: str, seed: int, sensor: tuple[int, int], fmt: codec.ImageFormat) -> bytes:
    """A well-taken frame of ``region`` on a sensor of ``sensor`` pixels, encoded as a client would upload it."""
    rng = np.random.default_rng(seed)
    optics = imaging.Optics(sensor_width_px=sensor[0], sensor_height_px=sensor[1])
    pose = imaging.good_pose(rng)
    pixels = imaging.render(
        item.surface(region),
        pose,
        duties={Lighting.WHITE_RING: 60},
        exposure_us=8000,
        analogue_gain=1.0,
        focus_steps=imaging.in_focus_steps(pose, optics),
        rng=rng,
        optics=optics,
    )
    return codec.encode(pixels, fmt)


def _scan(unit: DaemonProcess, source: str, seed: int) -> dict[str, Any]:
    done = cli(unit, "sim", "place", "--item-type", ITEM, "--source", source, "--seed", str(seed))
    assert done.returncode == 0, done.stderr
    result = cli_json(unit, "scan", "--item-type", ITEM, "--partner-item-id", f"{source}-{seed}")
    return cli_json(unit, "scan-get", result["scan_id"])


def _analyze_jpegs(unit: DaemonProcess, tmp_path: Path, seed: int, regions: list[str]) -> dict[str, Any]:
    """Upload two JPEGs of each of ``regions`` of a genuine item with the CLI; returns the completed scan."""
    item = VirtualItem(ITEM, "genuine", seed)
    args = []
    for region in regions:
        for k in range(2):
            path = tmp_path / f"{seed}-{region}-{k}.jpg"
            path.write_bytes(_frame(item, region, seed * 10 + k, (1014, 760), codec.ImageFormat.JPEG))
            args += ["--image", f"{region}={path}"]
    result = cli_json(unit, "analyze", "--item-type", ITEM, "--partner-item-id", f"upload-{seed}", *args)
    return cli_json(unit, "scan-get", result["scan_id"])


def _expected_files(scan: dict[str, Any], source: str) -> dict[str, dict[str, Any]]:
    """Export path -> stored image, for every image of ``scan`` that passed the quality gate."""
    return {
        f"{MATERIALS[image['region']]}/{source}/{scan['scan_id']}-{image['region']}/{image['image_id']}.png": image
        for image in scan["images"]
        if image["quality"]["ok"]
    }


def _sha256(path: Path) -> str:
    return hashlib.sha256(path.read_bytes()).hexdigest()


@pytest.mark.slow
def test_label_export_and_read_the_export_for_training(sim_daemon: DaemonProcess, tmp_path: Path) -> None:
    since = datetime.now(UTC) - timedelta(seconds=1)
    genuine = _scan(sim_daemon, "genuine", 301)
    fake = _scan(sim_daemon, "counterfeit-a", 301)
    uploaded = _analyze_jpegs(sim_daemon, tmp_path, 302, list(MATERIALS))
    mistaken = _analyze_jpegs(sim_daemon, tmp_path, 303, ["canvas"])

    # The expert's labels, one of them a mistake taken back.
    for scan, label in ((genuine, "genuine"), (fake, "counterfeit"), (uploaded, "genuine"), (mistaken, "genuine")):
        labelled = cli_json(sim_daemon, "label", scan["scan_id"], label)
        assert labelled["label"] == label.upper() and labelled["label_time"]
        assert labelled["verdict"] == scan["verdict"] and labelled["result"] == scan["result"]
    cleared = cli_json(sim_daemon, "label", mistaken["scan_id"], "--clear")
    assert cleared["label"] is None and cleared["label_time"] is None
    listed = cli_json(sim_daemon, "scans", "--all", "--filter", "label = COUNTERFEIT")
    assert fake["scan_id"] in [s["scan_id"] for s in listed]

    out = tmp_path / "labelled"
    since_text = since.isoformat().replace("+00:00", "Z")
    done = cli(sim_daemon, "export", "--out", str(out), "--since", since_text)
    assert done.returncode == 0, done.stderr
    assert "exported 3 labelled scans" in done.stdout and f"make train TRAIN_DATA={out}" in done.stdout
    assert "scan 3/3" in done.stderr  # progress, on stderr

    expected = {
        **_expected_files(genuine, "genuine"),
        **_expected_files(fake, "counterfeit"),
        **_expected_files(uploaded, "genuine"),
    }
    written = {str(p.relative_to(out)) for p in out.rglob("*") if p.is_file()}
    assert written == {*expected, "manifest.json"}
    for relative, image in expected.items():
        with Image.open(out / relative) as png:
            assert png.format == "PNG" and png.size == (image["metadata"]["width_px"], image["metadata"]["height_px"])
        if image["format"] == "PNG":
            assert _sha256(out / relative) == image["sha256"]  # camera captures are sent as stored
    # An uploaded JPEG becomes a PNG of its own pixels: the first upload is the canvas's image 001.
    canvas = out / "coated-canvas" / "genuine" / f"{uploaded['scan_id']}-canvas" / "001.png"
    assert expected[str(canvas.relative_to(out))]["format"] == "JPEG"
    with Image.open(canvas) as png:
        exported = np.asarray(png.convert("RGB"))
    original = (tmp_path / "302-canvas-0.jpg").read_bytes()
    np.testing.assert_array_equal(exported, codec.decode(original, max_pixels=10**8))

    manifest = json.loads((out / "manifest.json").read_text())
    assert manifest["device_id"].startswith("VS-SIM-") and manifest["since"] is not None
    assert manifest["filter"].startswith("state = COMPLETED AND label != UNSPECIFIED AND create_time >= ")
    assert manifest["totals"] == {"scans": 3, "items": 9, "images": len(expected)}
    for item in manifest["items"]:
        scan = {s["scan_id"]: s for s in (genuine, fake, uploaded)}[item["scan_id"]]
        assert item["path"] == f"{item['material']}/{item['source']}/{item['scan_id']}-{item['region']}"
        assert item["material"] == MATERIALS[item["region"]] and item["partner_item_id"] == scan["partner_item_id"]
        assert item["label"] == ("COUNTERFEIT" if scan is fake else "GENUINE")
        assert item["source"] == item["label"].lower() and item["verdict"] == scan["verdict"]
        assert item["model"]["name"] == scan["result"]["model"]["name"]
        for image in item["images"]:
            assert image["sha256"] == _sha256(out / image["file"])

    # Exporting again writes nothing and asks the unit for no image.
    stamps = {p: p.stat().st_mtime_ns for p in out.rglob("*.png")}
    again = cli_json(sim_daemon, "export", "--out", str(out), "--since", since_text)
    assert again == {"out": str(out), "scans": 3, "items": 9, "images": 0, "skipped": len(expected)}
    assert {p: p.stat().st_mtime_ns for p in out.rglob("*.png")} == stamps

    # The training pipeline's own loader finds every item, genuine and counterfeit as labelled.
    from veriscope.training.config import HELD_OUT_SOURCES
    from veriscope.training.config import MATERIALS as TRAINED
    from veriscope.training.data import scan as scan_dataset
    from veriscope.training.data import split_items

    items = scan_dataset(out, TRAINED)
    found = {(i.material, i.item_id): (i.genuine, len(i.images)) for i in items}
    wanted: dict[tuple[str, str], tuple[bool, int]] = {}
    for relative in expected:
        material, source, item_id, _ = relative.split("/")
        genuine_item, count = wanted.get((material, item_id), (source == "genuine", 0))
        wanted[(material, item_id)] = (genuine_item, count + 1)
    assert found == wanted
    assert sum(not g for g, _ in found.values()) == 3
    # Two genuine items and one counterfeit of each material are too few to validate a model on; training says so.
    with pytest.raises(ValueError, match="too few items of coated-canvas to validate on"):
        split_items(items, held_out_sources=HELD_OUT_SOURCES, val_fraction=0.25, test_fraction=0.25, seed=0)


def _need_tensorflow() -> None:
    """Skip without TensorFlow (the runtime venv has none; `make install-train` adds it), except under CI."""
    try:
        import tensorflow  # noqa: F401
    except ImportError:
        if os.environ.get("CI"):
            pytest.fail("CI must run the training tests: TensorFlow is not installed (make install-train)")
        pytest.skip("TensorFlow is not installed (make install-train)")


@pytest.mark.slow
def test_make_train_trains_on_an_export(sim_daemon: DaemonProcess, tmp_path: Path) -> None:
    """Three genuine and three counterfeit items, uploaded and labelled, exported, and trained on with tiny settings."""
    _need_tensorflow()
    from veriscope.device.inference import load_bundle
    from veriscope.sdk import Client, ScanLabel

    since = datetime.now(UTC)
    with Client(sim_daemon.address) as client:
        for n, source in enumerate(["genuine"] * 3 + ["counterfeit-a"] * 3):
            item = VirtualItem(ITEM, source, 400 + n)
            images = [
                (region, _frame(item, region, 4000 + 10 * n + k, (640, 480), codec.ImageFormat.PNG))
                for region in MATERIALS
                for k in range(2)
            ]
            result = client.analyze(ITEM, images)
            done = cli(sim_daemon, "label", result.scan_id, "genuine" if source == "genuine" else "counterfeit")
            assert done.returncode == 0, done.stderr
        assert client.get_scan(result.scan_id).label is ScanLabel.COUNTERFEIT
    out = tmp_path / "labelled"
    summary = cli_json(sim_daemon, "export", "--out", str(out), "--since", since.isoformat())
    assert (summary["scans"], summary["items"]) == (6, 18)

    bundle = tmp_path / "bundle"
    done = subprocess.run(
        [sys.executable, "-m", "veriscope.training", "train", "--data", str(out), "--bundle", str(bundle), "--smoke"],
        capture_output=True,
        text=True,
        timeout=600,
    )
    assert done.returncode == 0, done.stdout[-3000:] + done.stderr[-3000:]
    manifest = json.loads((bundle / "manifest.json").read_text())
    assert manifest["training"]["split"]["train"]["items"] == 6  # one genuine, one counterfeit per material
    assert {key.split("/")[1] for key in manifest["metrics"]["int8"]["test"]["per_source"]} == {
        "genuine",
        "counterfeit",
    }
    assert load_bundle(bundle).name == "veriscope-demo"
