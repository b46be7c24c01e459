"""The dataset writer: layout, manifest, determinism and the command line."""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import pytest
from PIL import Image

from veriscope.device.specimen import generate_dataset, item_for
from veriscope.device.specimen.dataset import main


def test_tiny_dataset_has_the_layout_and_manifest(tmp_path: Path) -> None:
    calls: list[tuple[int, int]] = []
    summary = generate_dataset(
        tmp_path / "ds",
        materials=["woven-fabric"],
        sources=["genuine", "counterfeit-a"],
        items_per_source=1,
        images_per_item=3,
        image_width=128,
        seed=3,
        progress=lambda done, total: calls.append((done, total)),
    )
    root = tmp_path / "ds"
    assert summary.images == 6 and summary.items == 2
    assert summary.counts == {"woven-fabric": {"genuine": 3, "counterfeit-a": 3}}
    pngs = sorted(root.glob("*/*/*/*.png"))
    assert len(pngs) == 6
    for png in pngs:
        material, source, item_id, name = png.relative_to(root).parts
        assert material == "woven-fabric" and source in ("genuine", "counterfeit-a")
        assert source in item_id and name in ("000.png", "001.png", "002.png")
        with Image.open(png) as im:
            assert im.size == (128, 96) and im.mode == "RGB"
    item_dirs = {p.parent for p in pngs}
    assert len(item_dirs) == 2, "item ids are unique per physical item"
    manifest = json.loads((root / "dataset.json").read_text())
    assert manifest["total_images"] == 6 and manifest["total_items"] == 2
    fake = manifest["materials"]["woven-fabric"]["counterfeit-a"]
    assert fake["images"] == 3 and fake["items"] == 1 and fake["description"] and fake["superfake"] is False
    assert calls[0] == (0, 6) and calls[-1] == (6, 6)
    # Two images of one item show the same surface at different places, so they differ.
    first, second = (np.asarray(Image.open(p)) for p in pngs[:2])
    assert np.abs(first.astype(int) - second).mean() > 3.0


def test_dataset_is_deterministic_for_a_seed(tmp_path: Path) -> None:
    kwargs = {
        "materials": ["grained-leather"],
        "sources": ["counterfeit-b"],
        "items_per_source": 1,
        "images_per_item": 2,
        "image_width": 96,
    }
    generate_dataset(tmp_path / "a", seed=1, **kwargs)  # type: ignore[arg-type]
    generate_dataset(tmp_path / "b", seed=1, **kwargs)  # type: ignore[arg-type]
    generate_dataset(tmp_path / "c", seed=2, **kwargs)  # type: ignore[arg-type]
    files_a = sorted(p.relative_to(tmp_path / "a") for p in (tmp_path / "a").rglob("*.png"))
    files_c = sorted(p.relative_to(tmp_path / "c") for p in (tmp_path / "c").rglob("*.png"))
    assert files_a == sorted(p.relative_to(tmp_path / "b") for p in (tmp_path / "b").rglob("*.png"))
    for rel in files_a:
        assert (tmp_path / "a" / rel).read_bytes() == (tmp_path / "b" / rel).read_bytes()
    assert files_a != files_c, "another seed makes other items"


def test_item_for_rotates_item_types_and_validates() -> None:
    first, region = item_for("grained-leather", "genuine", 0, seed=0)
    second, region2 = item_for("grained-leather", "genuine", 1, seed=0)
    assert first.item_type != second.item_type
    assert {region, region2} == {"trim", "interior"}
    assert item_for("coated-canvas", "genuine", 5, seed=2)[0].item_id.endswith("2000005")
    with pytest.raises(KeyError):
        item_for("suede", "genuine", 0, seed=0)
    with pytest.raises(ValueError):
        item_for("coated-canvas", "genuine", -1, seed=0)


def test_bad_arguments_are_rejected(tmp_path: Path) -> None:
    with pytest.raises(ValueError):
        generate_dataset(tmp_path, items_per_source=0, images_per_item=1)
    with pytest.raises(KeyError):
        generate_dataset(tmp_path, materials=["denim"], items_per_source=1, images_per_item=1)
    with pytest.raises(ValueError):
        generate_dataset(tmp_path, items_per_source=1, images_per_item=1, jpeg_quality_range=(90, 80))


def test_command_line_writes_a_dataset(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    status = main(
        [
            "--out",
            str(tmp_path / "cli"),
            "--items-per-source",
            "1",
            "--images-per-item",
            "1",
            "--materials",
            "coated-canvas",
            "--sources",
            "genuine",
            "--width",
            "64",
            "--no-jpeg",
        ]
    )
    assert status == 0
    assert len(list((tmp_path / "cli").rglob("*.png"))) == 1
    captured = capsys.readouterr()
    assert "wrote 1 images" in captured.out and "1/1 images" in captured.err
