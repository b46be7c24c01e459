"""The training pipeline: splits, calibration maths, preprocessing shared with the device, and a smoke run.

Tests that need TensorFlow skip when it is not installed (the runtime venv has
no TensorFlow; `make install-train` adds it), except under CI, where they must run.
"""

from __future__ import annotations

import asyncio
import json
import math
import os
from dataclasses import replace
from pathlib import Path
from typing import Any

import numpy as np
import pytest
from PIL import Image

from veriscope.device.inference import load_bundle
from veriscope.device.inference.tiling import Tiling, to_work_scale
from veriscope.device.pipeline.inference import Analyzer
from veriscope.device.pipeline.texture import FEATURE_SET
from veriscope.training import calibrate
from veriscope.training.config import TrainConfig
from veriscope.training.data import Item, load_image, scan, split_items

TF_REASON = "TensorFlow is not installed (make install-train)"


def _need_tensorflow() -> None:
    try:
        import tensorflow  # noqa: F401
    except ImportError:
        if os.environ.get("CI"):
            pytest.fail(f"CI must run the training tests: {TF_REASON}")
        pytest.skip(TF_REASON)


def _items(material: str, source: str, n: int) -> list[Item]:
    return [Item(material, source, f"{source}-{i}", (Path(f"{source}-{i}/0.png"),)) for i in range(n)]


def test_split_is_by_item_and_keeps_held_out_sources_apart() -> None:
    items = _items("m", "genuine", 12) + _items("m", "counterfeit-a", 8) + _items("m", "counterfeit-e", 5)
    split = split_items(items, held_out_sources=("counterfeit-e",), val_fraction=0.25, test_fraction=0.25, seed=3)
    ids = [{i.item_id for i in part} for part in (split.train, split.val, split.test, split.held_out)]
    assert sum(len(s) for s in ids) == 25
    assert all(not (a & b) for n, a in enumerate(ids) for b in ids[n + 1 :])
    assert {i.source for i in split.held_out} == {"counterfeit-e"} and len(split.held_out) == 5
    assert not any(i.source == "counterfeit-e" for i in (*split.train, *split.val, *split.test))
    assert (len(ids[1]), len(ids[2])) == (5, 5)  # 3 + 2 of each per (material, source) group
    again = split_items(items, held_out_sources=("counterfeit-e",), val_fraction=0.25, test_fraction=0.25, seed=3)
    assert again == split


def test_scan_reads_the_dataset_layout(tmp_path: Path) -> None:
    for source, item in (("genuine", "g1"), ("counterfeit-a", "a1")):
        folder = tmp_path / "woven-fabric" / source / item
        folder.mkdir(parents=True)
        for n in range(2):
            Image.new("RGB", (8, 8)).save(folder / f"{n:03d}.png")
    items = scan(tmp_path, ["woven-fabric"])
    assert [(i.source, i.item_id, len(i.images), i.genuine) for i in items] == [
        ("counterfeit-a", "a1", 2, False),
        ("genuine", "g1", 2, True),
    ]
    with pytest.raises(FileNotFoundError, match="coated-canvas"):
        scan(tmp_path, ["coated-canvas"])


def test_platt_fit_is_monotone_and_calibrated() -> None:
    rng = np.random.default_rng(0)
    z = np.concatenate([rng.normal(2.0, 1.0, 500), rng.normal(-2.0, 1.0, 500)])
    y = np.concatenate([np.ones(500), np.zeros(500)])
    slope, intercept = calibrate.fit_platt(z, y)
    assert slope > 0
    p = 1.0 / (1.0 + np.exp(-(slope * z + intercept)))
    # Two unit Gaussians 4 apart: the true log-odds are 4z, so a good fit has slope near 4 and intercept near 0.
    assert slope == pytest.approx(4.0, rel=0.25) and abs(intercept) < 0.5
    assert abs(float(p[y == 1].mean()) - 0.98) < 0.03
    separated = calibrate.fit_platt([3.0, 4.0, -3.0, -4.0], [1, 1, 0, 0])
    assert math.isfinite(separated[0]) and separated[0] > 0


def test_logistic_fit_weighs_informative_features_and_keeps_weights_nonnegative() -> None:
    rng = np.random.default_rng(4)
    y = np.repeat([1.0, 0.0], 200)
    informative = y * 2.0 + rng.normal(0.0, 1.0, 400)
    noise = rng.normal(0.0, 1.0, 400)
    misleading = -y * 0.5 + rng.normal(0.0, 1.0, 400)
    x = np.column_stack([informative, noise, misleading])
    weights, intercept = calibrate.fit_logistic(x, y)
    assert weights[0] > 1.0 and abs(weights[1]) < 0.3 and weights[2] < 0.0
    p = 1.0 / (1.0 + np.exp(-(x @ weights + intercept)))
    assert float(np.mean((p > 0.5) == (y > 0.5))) > 0.8  # about the best a 2-sigma separation allows
    kept, _ = calibrate.fit_logistic(x, y, nonnegative=True)
    assert kept[2] == 0.0 and kept[0] > 1.0
    with pytest.raises(ValueError, match="genuine and counterfeit"):
        calibrate.fit_logistic(x, np.ones(400))


def test_far_threshold_meets_the_target() -> None:
    fakes = np.linspace(0.0, 0.9, 200)
    t = calibrate.far_threshold(fakes, 0.05)
    assert float(np.mean(fakes >= t)) <= 0.05
    assert float(np.mean(fakes >= t - 0.01)) > 0.05  # and is the lowest that does
    assert calibrate.far_threshold([0.2, 0.4], 0.01) > 0.4
    high = calibrate.abstain_high(0.5, 0.5)
    assert high == pytest.approx(1.0 / (1.0 + math.exp(-0.5)))


def test_embedding_stats_floor_constant_dimensions() -> None:
    mean, std = calibrate.embedding_stats([[1.0, 5.0], [3.0, 5.0]])
    np.testing.assert_allclose(mean, [2.0, 5.0])
    assert std[0] == pytest.approx(1.0) and std[1] > 0


def test_material_weights_set_each_materials_share_of_training_tiles() -> None:
    from veriscope.training.data import material_shares

    materials = ["coated-canvas", "grained-leather", "woven-fabric"]
    assert material_shares(materials, [0, 1, 2], (("woven-fabric", 2.0),)) == {0: 0.25, 1: 0.25, 2: 0.5}
    assert material_shares(materials, [0, 2], ()) == {0: 0.5, 2: 0.5}  # absent materials take no share
    with pytest.raises(ValueError, match="'suede'"):
        material_shares(materials, [0], (("suede", 1.0),))
    with pytest.raises(ValueError, match="positive"):
        material_shares(materials, [0], (("coated-canvas", 0.0),))


def test_texture_limits_hold_for_genuine_items_the_references_never_saw() -> None:
    from veriscope.device.pipeline import texture
    from veriscope.device.pipeline.scoring import RawOutputs
    from veriscope.training.evaluate import ItemOutputs
    from veriscope.training.train import TextureData, fit_texture

    rng = np.random.default_rng(6)
    size = texture.FEATURE_SIZE

    def genuine_item() -> np.ndarray:
        # Items differ a little from each other; their images a little more.
        return rng.normal(0.0, 0.3, size) + rng.normal(0.0, 1.0, (2, size))

    train_items = [genuine_item() for _ in range(40)] + [genuine_item() + 0.8 for _ in range(40)]
    data = TextureData(
        features=np.concatenate(train_items),
        genuine=np.repeat([1.0] * 40 + [0.0] * 40, 2),
        item=np.repeat(np.arange(80), 2),
    )
    raw = RawOutputs(np.zeros((1, 4), np.float32), np.zeros((1, 3), np.float32), np.zeros((1, 4), np.float32))
    val = [
        ItemOutputs(Item("woven-fabric", "genuine", f"v{i}", ()), (raw, raw), tuple(genuine_item())) for i in range(10)
    ]
    config = TrainConfig(data_root=Path("."), bundle_dir=Path("."))
    stats = fit_texture(config, "woven-fabric", val, data)
    assert stats is not None and stats.head is not None
    fresh = [genuine_item() for _ in range(200)]
    inside = np.mean([texture.texture_distance(f, stats) <= 1.0 for f in fresh])
    assert inside >= 0.9  # each family is set at its 99 % quantile
    fakes = [genuine_item() + 0.8 for _ in range(50)]
    assert min(texture.texture_distance(f, stats) for f in fakes) > 1.0
    assert np.mean([texture.head_logit(f[0], stats.head) for f in fresh]) > np.mean(
        [texture.head_logit(f[0], stats.head) for f in fakes]
    )
    assert fit_texture(config, "woven-fabric", [], data) is None  # no genuine validation region to check against


def test_material_references_hold_every_maker_and_turn_away_another_surface() -> None:
    from veriscope.device.pipeline import scoring, texture
    from veriscope.training.train import TextureData, fit_material_texture, texture_section

    rng = np.random.default_rng(12)
    size = texture.FEATURE_SIZE
    spectrum = dict(texture.FAMILIES)["spectrum"]

    def item(shift: float) -> np.ndarray:
        return rng.normal(shift, 0.3, size) + rng.normal(0.0, 1.0, (2, size))

    # Genuine items and a counterfeit maker's, which lie well apart: both are the material.
    makers = (0.0, 1.5)
    data = TextureData(
        features=np.concatenate([item(shift) for shift in makers for _ in range(30)]),
        genuine=np.repeat([1.0, 0.0], 60),
        item=np.repeat(np.arange(60), 2),
    )
    config = TrainConfig(data_root=Path("."), bundle_dir=Path("."))
    blocks = fit_material_texture(config, data)
    assert [b.name for b in blocks] == [name for name, _ in texture.FAMILIES]
    stats = replace(texture.fit_texture_stats(data.features[:60]), material=blocks)
    fresh = [f for shift in makers for _ in range(100) for f in item(shift)]
    assert max(texture.material_distance(f, stats) or 0.0 for f in fresh) < 1.0
    # A surface whose spectrum differs in a way no maker's does (not along genuine-to-counterfeit).
    other = item(0.0)[0]
    other[spectrum] += np.where(np.arange(spectrum.stop) % 2, 4.0, -4.0)
    assert (texture.material_distance(other, stats) or 0.0) > 1.0 and scoring.texture_familiarity(other, stats) < 0.5
    assert set(texture_section(stats)["material"]) == {name for name, _ in texture.FAMILIES}
    # Too few items to leave folds out of: no references, so the device judges by the network alone.
    few = TextureData(features=data.features[:8], genuine=np.ones(8), item=data.item[:8])
    assert fit_material_texture(config, few) == ()
    assert "material" not in texture_section(replace(stats, material=()))


def test_training_decodes_and_scales_exactly_as_the_device(tmp_path: Path) -> None:
    _need_tensorflow()
    from veriscope.training.data import decode_to_work_scale

    rng = np.random.default_rng(1)
    frame = rng.integers(0, 256, size=(300, 401, 3), dtype=np.uint8)
    path = tmp_path / "frame.png"
    Image.fromarray(frame).save(path)
    tiling = Tiling(work_width_px=128, tile_px=32, grid_rows=2, grid_cols=2)
    trained = np.asarray(decode_to_work_scale(str(path), tiling))
    np.testing.assert_array_equal(trained, to_work_scale(load_image(path), tiling))


@pytest.mark.slow
def test_smoke_run_writes_a_bundle_the_device_loads_and_runs(tmp_path: Path) -> None:
    _need_tensorflow()
    from veriscope.device.specimen import generate_dataset
    from veriscope.training import train

    data = tmp_path / "data"
    for sources, count in ((["genuine"], 4), (["counterfeit-a", "counterfeit-e"], 3)):
        generate_dataset(data, sources=sources, items_per_source=count, images_per_item=1, image_width=256, seed=2)
    config = replace(TrainConfig(data_root=data, bundle_dir=tmp_path / "bundle", name="smoke"), threads=1)
    result = train.run(config.smoke_variant())

    bundle = load_bundle(tmp_path / "bundle")
    assert bundle.name == "smoke" and bundle.sha256 == result.bundle.sha256
    assert bundle.size_bytes < 2 * 1024 * 1024
    assert (tmp_path / "bundle" / "MODEL_CARD.md").read_text().startswith("# Model card: smoke")
    manifest = json.loads((tmp_path / "bundle" / "manifest.json").read_text())
    assert manifest["held_out_sources"] == ["counterfeit-e", "counterfeit-f"]
    assert set(manifest["metrics"]) >= {"float", "int8"}
    assert manifest["metrics"]["int8"]["test"]["items"]["held_out"] == 3 * 3
    assert manifest["training"]["split"]["held_out"]["items"] == 9
    # Genuine whole-frame texture references, in the layout the device reads (load_bundle checked them).
    assert bundle.open_set["coated-canvas"].texture is not None
    assert manifest["open_set"]["coated-canvas"]["texture"]["features"] == FEATURE_SET
    assert bundle.open_set["coated-canvas"].texture.head is not None  # genuine and counterfeit images to fit on
    analysis = Analyzer(bundle).analyze_image(load_image(next(data.rglob("*.png"))), "coated-canvas")
    assert 0.0 <= analysis.score <= 1.0 and analysis.tile_scores.shape == (2, 2)

    # The daemon serves the new bundle: a scan uploaded through the SDK gets a verdict from it.
    images = sorted((data / "coated-canvas" / "genuine").rglob("*.png"))[:2]
    verdict = asyncio.run(_scan_with_daemon(tmp_path, tmp_path / "bundle", "coated-canvas-swatch", images))
    assert verdict.model.name == "smoke" and verdict.verdict in ("AUTHENTIC", "UNVERIFIED")
    assert [r.region for r in verdict.regions] == ["surface"] and len(verdict.regions[0].images) == 2


async def _scan_with_daemon(tmp_path: Path, bundle: Path, item_type: str, images: list[Path]) -> Any:
    from veriscope.device.config import Config
    from veriscope.device.server import build_daemon
    from veriscope.sdk import AsyncClient

    config = Config().with_overrides(
        server={"listen": "127.0.0.1:0"}, device={"data_dir": str(tmp_path / "unit")}, model={"bundle": str(bundle)}
    )
    daemon = build_daemon(config)
    await daemon.start()
    try:
        async with AsyncClient(daemon.address) as client:
            return await client.analyze(item_type, [("surface", p) for p in images])
    finally:
        await daemon.stop(0)


def test_a_texture_limit_from_a_few_wild_images_stays_one_a_bundle_can_hold(monkeypatch: pytest.MonkeyPatch) -> None:
    from veriscope.device.inference.bundle import MAX_DISTANCE_REF
    from veriscope.device.pipeline import texture
    from veriscope.device.pipeline.scoring import RawOutputs
    from veriscope.training.evaluate import ItemOutputs
    from veriscope.training.train import TextureData, fit_texture

    rng = np.random.default_rng(7)
    size = texture.FEATURE_SIZE
    features = rng.normal(0.0, 1.0, (8, size))
    features[0, dict(texture.FAMILIES)["sizes"]] = 1e4  # one image whose speck sizes could not be read
    data = TextureData(features=features, genuine=np.ones(8), item=np.repeat(np.arange(4), 2))
    raw = RawOutputs(np.zeros((1, 4), np.float32), np.zeros((1, 3), np.float32), np.zeros((1, 4), np.float32))
    val = [ItemOutputs(Item("woven-fabric", "genuine", "v0", ()), (raw, raw), tuple(features[:2]))]
    config = replace(TrainConfig(data_root=Path("."), bundle_dir=Path(".")), texture_min_images=2)
    real = calibrate.lognormal_quantile
    monkeypatch.setattr(calibrate, "lognormal_quantile", lambda d, z: 1e3 * MAX_DISTANCE_REF + real(d, z))
    stats = fit_texture(config, "woven-fabric", val, data)
    assert stats is not None
    assert [b.distance_ref for b in stats.blocks] == [MAX_DISTANCE_REF] * len(texture.FAMILIES)


def test_a_material_some_regions_judge_on_more_images_gets_a_tighter_limit_for_them() -> None:
    from veriscope.device.pipeline import texture
    from veriscope.device.pipeline.scoring import RawOutputs
    from veriscope.training.evaluate import ItemOutputs
    from veriscope.training.train import TextureData, fit_texture, region_image_counts, texture_section

    rng = np.random.default_rng(11)
    items, per_item = 12, 4
    features = rng.normal(0.0, 1.0, (items * per_item, texture.FEATURE_SIZE))
    data = TextureData(features=features, genuine=np.ones(len(features)), item=np.repeat(np.arange(items), per_item))
    raw = RawOutputs(np.zeros((1, 4), np.float32), np.zeros((1, 3), np.float32), np.zeros((1, 4), np.float32))
    val = [
        ItemOutputs(Item(m, "genuine", f"v{k}", ()), (raw, raw), tuple(rng.normal(0.0, 1.0, (2, texture.FEATURE_SIZE))))
        for m in ("woven-fabric", "coated-canvas")
        for k in range(4)
    ]
    region = {"hint": ""}
    catalog = (
        {
            "name": "tote",
            "display_name": "Tote",
            "regions": [{**region, "name": "lining", "material": "woven-fabric", "min_images": 2}],
        },
        {
            "name": "scarf",
            "display_name": "Scarf",
            "regions": [{**region, "name": "twill", "material": "woven-fabric", "min_images": 3}],
        },
    )
    config = replace(
        TrainConfig(data_root=Path("."), bundle_dir=Path("."), materials=("coated-canvas", "woven-fabric")),
        texture_min_images=2,
        item_types=catalog,
    )
    assert region_image_counts(config) == {"coated-canvas": [2], "woven-fabric": [2, 3]}
    fabric = fit_texture(config, "woven-fabric", val, data)
    assert fabric is not None
    for block in fabric.blocks:
        # The mean of three frames strays less than that of two, so its limit is tighter.
        (count, limit), *rest = block.limits_by_images
        assert count == 3 and not rest and 0.0 < limit < block.distance_ref
        assert block.limit(2) == block.distance_ref and block.limit(4) == limit
    canvas = fit_texture(config, "coated-canvas", val, data)
    assert canvas is not None and all(b.limits_by_images == () for b in canvas.blocks)
    section = texture_section(fabric)
    assert section["blocks"]["spectrum"]["limits_by_images"] == {"3": fabric.blocks[0].limits_by_images[0][1]}
    assert "limits_by_images" not in texture_section(canvas)["blocks"]["spectrum"]


def test_texture_limits_share_the_genuine_item_budget_among_the_largest_item_types_limits() -> None:
    import statistics

    from veriscope.training.train import texture_z

    region = {"material": "coated-canvas", "min_images": 2, "hint": ""}
    tote = {"name": "tote", "display_name": "Tote", "regions": [{**region, "name": f"r{k}"} for k in range(3)]}
    config = replace(TrainConfig(data_root=Path("."), bundle_dir=Path(".")), item_types=(tote,))
    # Three regions of four families: twelve limits share 2.5 % of genuine items.
    assert statistics.NormalDist().cdf(texture_z(config)) == pytest.approx(1.0 - 0.025 / 12)
    assert texture_z(replace(config, texture_distance_z=2.58)) == 2.58
