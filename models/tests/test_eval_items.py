"""models/scripts/eval_items.py: the demo bundle judges a fresh simulated data set item by item."""

from __future__ import annotations

import json
import shutil
import subprocess
import sys
from pathlib import Path

from veriscope.device.inference import load_bundle
from veriscope.device.specimen.dataset import generate_dataset

SCRIPT = Path(__file__).resolve().parents[1] / "scripts" / "eval_items.py"
DEMO = Path(__file__).resolve().parents[1] / "bundles" / "veriscope-demo"


def test_counts_every_item_per_source_with_bounds(tmp_path: Path) -> None:
    for source in ("genuine", "counterfeit-a", "counterfeit-f"):
        generate_dataset(
            tmp_path, materials=["woven-fabric"], sources=[source], items_per_source=2, images_per_item=2, seed=9
        )
    run = subprocess.run(
        [sys.executable, str(SCRIPT), "--data", str(tmp_path), "--json"], capture_output=True, text=True, check=True
    )
    result = json.loads(run.stdout)
    assert result["bundle"].startswith("veriscope-demo ")
    assert {k: v["items"] for k, v in result["per_source"].items()} == {
        "woven-fabric/counterfeit-a": 2,
        "woven-fabric/counterfeit-f": 2,
        "woven-fabric/genuine": 2,
    }
    assert (result["genuine_items"], result["held_out_items"], result["counterfeit_items"]) == (2, 2, 4)
    assert result["per_source"]["woven-fabric/counterfeit-a"]["accepted"] == 0  # a blatant fake
    # A fake is still woven fabric: it is turned away for what it shows, not as another material.
    assert all(row["unfamiliar"] == 0 for row in result["per_source"].values()), result["per_source"]
    # Zero accepts among four items bounds the rate only loosely.
    assert result["far_all_upper95"] >= 0.4 if result["far_all"] == 0 else result["far_all_upper95"] > result["far_all"]


def test_a_folder_without_items_is_named(tmp_path: Path) -> None:
    run = subprocess.run([sys.executable, str(SCRIPT), "--data", str(tmp_path)], capture_output=True, text=True)
    assert run.returncode != 0 and str(tmp_path) in run.stderr


def test_whole_items_are_judged_on_every_region_of_their_type(tmp_path: Path) -> None:
    # Item 0 of each material is one tote (canvas, trim, lining); item 1 is a wallet (canvas, interior) in the canvas
    # and leather folders, and a scarf in the fabric folder, whose twill needs 3 images: it is skipped, not judged.
    generate_dataset(tmp_path, sources=["genuine", "counterfeit-a"], items_per_source=2, images_per_item=2, seed=9)
    run = subprocess.run(
        [sys.executable, str(SCRIPT), "--data", str(tmp_path), "--whole-items", "--json"],
        capture_output=True,
        text=True,
        check=True,
    )
    result = json.loads(run.stdout)
    rows = {k: (v["items"], v["skipped"]) for k, v in result["per_source"].items()}
    assert rows == {
        f"{item_type}/{source}": counts
        for source in ("counterfeit-a", "genuine")
        for item_type, counts in (("scarf-twill", (0, 1)), ("tote-classic", (1, 0)), ("wallet-compact", (1, 0)))
    }
    assert (result["genuine_items"], result["counterfeit_items"], result["skipped_items"]) == (2, 2, 2)
    assert result["per_source"]["tote-classic/counterfeit-a"]["accepted"] == 0  # blatant on every region


def test_whole_items_refuse_a_fixed_image_count(tmp_path: Path) -> None:
    run = subprocess.run(
        [sys.executable, str(SCRIPT), "--data", str(tmp_path), "--whole-items", "--images", "2"],
        capture_output=True,
        text=True,
    )
    assert run.returncode == 2 and "--images and --whole-items" in run.stderr


def test_recorded_whole_items_reach_the_manifest_and_the_model_card(tmp_path: Path) -> None:
    bundle = tmp_path / "bundle"
    shutil.copytree(DEMO, bundle)
    manifest = json.loads((bundle / "manifest.json").read_text())
    manifest["metrics"].pop("fresh_whole_items", None)
    (bundle / "manifest.json").write_text(json.dumps(manifest))
    data = tmp_path / "fresh-set"
    generate_dataset(data, sources=["genuine", "counterfeit-f"], items_per_source=2, images_per_item=2, seed=9)
    for _ in range(2):  # a second run on the same folder replaces its row
        subprocess.run(
            [sys.executable, str(SCRIPT), str(bundle), "--data", str(data), "--whole-items", "--record"],
            capture_output=True,
            text=True,
            check=True,
        )
    fresh = json.loads((bundle / "manifest.json").read_text())["metrics"]["fresh_whole_items"]
    assert [row["data"] for row in fresh["sets"]] == ["fresh-set"]
    # One tote and one wallet per source have every region; the scarf's twill needs 3 images.
    assert (fresh["total"]["genuine_items"], fresh["total"]["counterfeit_items"]) == (2, 2)
    assert fresh["total"]["held_out_items"] == 2 and fresh["total"]["held_out_upper95"] > 0.5
    assert load_bundle(bundle).manifest["metrics"]["fresh_whole_items"] == fresh
    text = (bundle / "MODEL_CARD.md").read_text()
    assert "## Targets on fresh whole items" in text and "(`fresh-set`)" in text
    assert "## Plots" in text and text.count("## Plots") == 1
    assert not list(bundle.glob(".*.tmp"))  # written through temporary files, none left behind
    refused = subprocess.run(
        [sys.executable, str(SCRIPT), str(bundle), "--data", str(data), "--record"], capture_output=True, text=True
    )
    assert refused.returncode == 2 and "--record keeps whole-item results only" in refused.stderr
