"""models/scripts/eval_items.py: the demo bundle judges a fresh simulated data set item by item."""

from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path

from veriscope.device.specimen.dataset import generate_dataset

SCRIPT = Path(__file__).resolve().parents[1] / "scripts" / "eval_items.py"


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
    # Zero accepts among four items bounds the rate only loosely.
    assert result["far_all_upper95"] >= 0.4 if result["far_all"] == 0 else result["far_all_upper95"] > result["far_all"]


def test_a_folder_without_items_is_named(tmp_path: Path) -> None:
    run = subprocess.run([sys.executable, str(SCRIPT), "--data", str(tmp_path)], capture_output=True, text=True)
    assert run.returncode != 0 and str(tmp_path) in run.stderr
