"""decide(): the verdict rules, on hand-made analyses (no model involved)."""

from __future__ import annotations

import math
from pathlib import Path
from typing import Any

import numpy as np
import pytest

from veriscope.device.errors import InvalidArgument, ModelError, NotFound
from veriscope.device.inference.bundle import ModelBundle, bundle_from_manifest
from veriscope.device.pipeline.inference import ImageAnalysis
from veriscope.device.pipeline.verdict import ImageEntry, ItemDecision, Reason, Verdict, decide

MATERIALS = ["coated-canvas", "grained-leather", "woven-fabric"]
THRESHOLD = 0.6
HIGH = 0.7


@pytest.fixture(scope="module")
def bundle() -> ModelBundle:
    manifest: dict[str, Any] = {
        "format_version": 1,
        "name": "verdict-test",
        "version": "0.0.1",
        "created": "2026-01-01T00:00:00+00:00",
        "model": {"file": "model.tflite", "sha256": "0" * 64, "size_bytes": 1},
        "input": {"name": "tiles", "tile_px": 32, "channels": 3, "dtype": "uint8", "scale": 1.0, "zero_point": 0},
        "preprocessing": {"work_width_px": 128, "tile_px": 32, "grid_rows": 1, "grid_cols": 2},
        "outputs": {
            "signature": "serving_default",
            "material_logits": {"classes": [*MATERIALS, "other"]},
            "authenticity_logits": {"materials": MATERIALS},
            "embedding": {"size": 2},
        },
        "materials": MATERIALS,
        "lighting": ["white_ring"],
        "calibration": {m: {"slope": 1.0, "intercept": 0.0} for m in MATERIALS},
        "open_set": {m: {"mean": [0.0, 0.0], "std": [1.0, 1.0], "distance_ref": 1.0} for m in MATERIALS},
        "thresholds": {"item": THRESHOLD, "abstain_band": [THRESHOLD, HIGH], "familiarity": 0.5, "target_far": 0.01},
        "item_types": [
            {
                "name": "tote-classic",
                "display_name": "Classic tote",
                "regions": [
                    {"name": "canvas", "material": "coated-canvas", "min_images": 2, "hint": "side panel"},
                    {"name": "trim", "material": "grained-leather", "min_images": 2, "hint": "top edge"},
                ],
            }
        ],
    }
    return bundle_from_manifest(Path("."), manifest)


def analysis(material: str, score: float, familiarity: float = 0.9) -> ImageAnalysis:
    logit = math.log(score / (1.0 - score))
    return ImageAnalysis(
        material=material,
        score=score,
        logit=logit,
        familiarity=familiarity,
        familiar=familiarity >= 0.5,
        predicted_material=material if familiarity >= 0.5 else "other",
        tile_scores=np.full((1, 2), score, np.float32),
        tile_familiarity=np.full((1, 2), familiarity, np.float32),
        reasons=("test",),
    )


def images(material: str, *scores: float, prefix: str = "img") -> list[ImageEntry]:
    return [ImageEntry(f"{prefix}{i}", True, analysis(material, s)) for i, s in enumerate(scores)]


def good_item() -> dict[str, list[ImageEntry]]:
    return {"canvas": images("coated-canvas", 0.95, 0.9), "trim": images("grained-leather", 0.92, 0.97, prefix="t")}


def test_all_regions_genuine_is_authentic(bundle: ModelBundle) -> None:
    decision = decide(bundle, "tote-classic", good_item())
    assert isinstance(decision, ItemDecision)
    assert decision.verdict == Verdict.AUTHENTIC == "AUTHENTIC"
    assert decision.reason is None
    assert decision.threshold == THRESHOLD
    assert [r.region for r in decision.regions] == ["canvas", "trim"]
    # Region score is the sigmoid of the mean image logit; the item takes the weakest region.
    canvas = decision.regions[0]
    expected = 1.0 / (1.0 + math.exp(-(math.log(0.95 / 0.05) + math.log(0.9 / 0.1)) / 2.0))
    assert canvas.score == pytest.approx(expected)
    assert decision.score == pytest.approx(min(r.score or 0.0 for r in decision.regions))
    assert canvas.familiarity == pytest.approx(0.9)
    assert [(i.image_id, i.quality_ok) for i in canvas.images] == [("img0", True), ("img1", True)]
    assert "Classic tote" in decision.summary


def test_spec_object_and_plain_tuples_are_accepted(bundle: ModelBundle) -> None:
    plain = {
        region: [(e.image_id, e.quality_ok, e.analysis) for e in entries] for region, entries in good_item().items()
    }
    decision = decide(bundle, bundle.item_type("tote-classic"), plain)
    assert decision.verdict == "AUTHENTIC"


def test_one_counterfeit_region_makes_the_item_unverified(bundle: ModelBundle) -> None:
    item = good_item()
    item["trim"] = images("grained-leather", 0.2, 0.3)
    decision = decide(bundle, "tote-classic", item)
    assert (decision.verdict, decision.reason) == ("UNVERIFIED", Reason.COUNTERFEIT_INDICATORS)
    assert decision.score < THRESHOLD
    assert "trim" in decision.summary


def test_score_inside_the_abstain_band_is_not_authentic(bundle: ModelBundle) -> None:
    item = good_item()
    item["canvas"] = images("coated-canvas", 0.65, 0.66)
    decision = decide(bundle, "tote-classic", item)
    assert THRESHOLD <= decision.score < HIGH
    assert (decision.verdict, decision.reason) == ("UNVERIFIED", "COUNTERFEIT_INDICATORS")
    assert "too close to call" in decision.summary


def test_unfamiliar_image_is_never_authentic(bundle: ModelBundle) -> None:
    item = good_item()
    item["canvas"] = [
        *images("coated-canvas", 0.99, 0.99),
        ImageEntry("odd", True, analysis("coated-canvas", 0.99, 0.1)),
    ]
    decision = decide(bundle, "tote-classic", item)
    assert (decision.verdict, decision.reason) == ("UNVERIFIED", "UNFAMILIAR_MATERIAL")
    assert decision.regions[0].familiarity == pytest.approx(0.1)


def test_unfamiliar_outranks_counterfeit(bundle: ModelBundle) -> None:
    item = {
        "canvas": [ImageEntry("odd", True, analysis("coated-canvas", 0.5, 0.1)), *images("coated-canvas", 0.9)],
        "trim": images("grained-leather", 0.1, 0.1),
    }
    assert decide(bundle, "tote-classic", item).reason == "UNFAMILIAR_MATERIAL"


def test_missing_region_is_insufficient_coverage(bundle: ModelBundle) -> None:
    item = good_item()
    del item["trim"]
    decision = decide(bundle, "tote-classic", item)
    assert (decision.verdict, decision.reason) == ("UNVERIFIED", "INSUFFICIENT_COVERAGE")
    assert decision.regions[1].score is None and decision.regions[1].images == []
    assert "trim (2 more)" in decision.summary


def test_failed_images_that_would_cover_the_shortfall_are_insufficient_quality(bundle: ModelBundle) -> None:
    item = good_item()
    item["trim"] = [*images("grained-leather", 0.95), ImageEntry("blurred", False, None)]
    decision = decide(bundle, "tote-classic", item)
    assert (decision.verdict, decision.reason) == ("UNVERIFIED", "INSUFFICIENT_QUALITY")
    trim = decision.regions[1]
    assert [(i.image_id, i.quality_ok, i.score) for i in trim.images][1] == ("blurred", False, None)
    assert any("quality" in e for e in trim.explanations)


def test_too_few_failed_images_is_coverage_not_quality(bundle: ModelBundle) -> None:
    item = good_item()
    item["trim"] = [ImageEntry("blurred", False, None)]  # Short by two, only one failed.
    assert decide(bundle, "tote-classic", item).reason == "INSUFFICIENT_COVERAGE"


def test_analysis_of_a_failed_image_is_ignored(bundle: ModelBundle) -> None:
    item = good_item()
    item["trim"] = [*images("grained-leather", 0.95), ImageEntry("glare", False, analysis("grained-leather", 0.01))]
    decision = decide(bundle, "tote-classic", item)
    assert decision.reason == "INSUFFICIENT_QUALITY"
    assert decision.regions[1].score == pytest.approx(0.95)


def test_counterfeit_in_a_complete_region_outranks_a_missing_region(bundle: ModelBundle) -> None:
    decision = decide(bundle, "tote-classic", {"canvas": images("coated-canvas", 0.1, 0.2)})
    assert decision.reason == "COUNTERFEIT_INDICATORS"


def test_nothing_analysed_scores_zero(bundle: ModelBundle) -> None:
    decision = decide(bundle, "tote-classic", {})
    assert (decision.reason, decision.score) == ("INSUFFICIENT_COVERAGE", 0.0)


def test_bad_inputs_are_rejected(bundle: ModelBundle) -> None:
    with pytest.raises(InvalidArgument, match="lining"):
        decide(bundle, "tote-classic", {"lining": []})
    with pytest.raises(InvalidArgument, match="analysed as woven-fabric"):
        decide(bundle, "tote-classic", {"canvas": images("woven-fabric", 0.9)})
    with pytest.raises(NotFound):
        decide(bundle, "scarf-twill", {})


def test_each_material_is_judged_against_its_own_threshold(bundle: ModelBundle) -> None:
    manifest = dict(bundle.manifest)
    manifest["thresholds"] = {
        **manifest["thresholds"],
        "materials": {"grained-leather": {"item": 0.2, "abstain_band": [0.2, 0.3]}},
    }
    strict_canvas = bundle_from_manifest(Path("."), manifest)
    assert strict_canvas.thresholds.for_material("coated-canvas").abstain_high == HIGH
    item = {"canvas": images("coated-canvas", 0.9, 0.9), "trim": images("grained-leather", 0.5, 0.5, prefix="t")}
    # 0.5 fails the default 0.7 edge but passes leather's own 0.3.
    assert decide(bundle, "tote-classic", item).reason == "COUNTERFEIT_INDICATORS"
    decision = decide(strict_canvas, "tote-classic", item)
    assert decision.verdict == "AUTHENTIC"
    # The item reports its deciding region, the one nearest its edge in logits: trim (0.5 vs 0.3), not canvas
    # (0.9 vs 0.7), though canvas has the higher threshold.
    assert decision.score == pytest.approx(0.5) and decision.threshold == 0.2
    item["trim"] = images("grained-leather", 0.25, 0.25, prefix="t")
    decision = decide(strict_canvas, "tote-classic", item)
    assert (decision.reason, decision.threshold) == ("COUNTERFEIT_INDICATORS", 0.2)
    assert "too close to call" in decision.summary


def test_per_material_thresholds_must_name_known_materials(bundle: ModelBundle) -> None:
    manifest = dict(bundle.manifest)
    manifest["thresholds"] = {
        **manifest["thresholds"],
        "materials": {"suede": {"item": 0.2, "abstain_band": [0.2, 0.3]}},
    }
    with pytest.raises(ModelError, match=r"thresholds\.materials\.suede"):
        bundle_from_manifest(Path("."), manifest)


def test_region_explanations_name_the_evidence(bundle: ModelBundle) -> None:
    item = good_item()
    # Three images of the canvas; one, a patch or repair, scores far below the other two.
    item["canvas"] = [*images("coated-canvas", 0.95, 0.93), ImageEntry("patch", True, analysis("coated-canvas", 0.05))]
    canvas = decide(bundle, "tote-classic", item).regions[0]
    assert canvas.explanations[1] == "2 of 6 tiles across 3 images score below the threshold"
    assert canvas.explanations[2] == "image patch scores far below the others (0.05)"
    trim = decide(bundle, "tote-classic", good_item()).regions[1]
    assert trim.explanations[1:] == ["all 4 tiles across 2 images score above the threshold"]


def test_region_far_from_genuine_references_is_not_authentic(bundle: ModelBundle) -> None:
    from dataclasses import replace

    from veriscope.device.inference.bundle import OpenSetStats

    genuine = OpenSetStats(mean=np.zeros(2, np.float32), std=np.ones(2, np.float32), distance_ref=1.0)
    open_set = {m: replace(s, genuine=genuine) for m, s in bundle.open_set.items()}
    refs = replace(bundle, open_set=open_set)

    def at(position: float, score: float, image_id: str) -> ImageEntry:
        a = replace(analysis("coated-canvas", score), embedding_mean=np.full(2, position, np.float32))
        return ImageEntry(image_id, True, a)

    item = good_item()
    item["trim"] = [
        ImageEntry(e.image_id, True, replace(e.analysis, embedding_mean=np.zeros(2, np.float32)))
        for e in item["trim"]
        if e.analysis is not None
    ]
    item["canvas"] = [at(0.2, 0.95, "a"), at(0.4, 0.93, "b")]
    assert decide(refs, "tote-classic", item).verdict == "AUTHENTIC"
    # The authenticity head is fooled (scores 0.95), but the texture lies 3x beyond every genuine region.
    item["canvas"] = [at(3.0, 0.95, "a"), at(3.0, 0.93, "b")]
    decision = decide(refs, "tote-classic", item)
    assert (decision.verdict, decision.reason) == ("UNVERIFIED", "COUNTERFEIT_INDICATORS")
    canvas = decision.regions[0]
    assert canvas.score is not None and canvas.score < THRESHOLD
    assert "outside every genuine reference (3.00 times" in canvas.explanations[1]


def test_region_whose_whole_frame_texture_is_unlike_genuine_is_not_authentic(bundle: ModelBundle) -> None:
    from dataclasses import replace

    from veriscope.device.pipeline import texture

    rng = np.random.default_rng(3)
    references = rng.normal(0.0, 1.0, (64, texture.FEATURE_SIZE)).astype(np.float32)
    stats = texture.fit_texture_stats(references)
    limits = np.max([texture.raw_distances(references[i : i + 2], stats) for i in range(0, 64, 2)], axis=0)
    stats = stats.with_limits(limits.tolist())
    refs = replace(bundle, open_set={m: replace(s, texture=stats) for m, s in bundle.open_set.items()})

    def shot(features: np.ndarray, image_id: str) -> ImageEntry:
        return ImageEntry(image_id, True, replace(analysis("coated-canvas", 0.95), texture=features))

    item = good_item()
    item["canvas"] = [shot(references[0], "a"), shot(references[1], "b")]
    assert decide(refs, "tote-classic", item).verdict == "AUTHENTIC"  # texture checked only where measured
    # Same genuine-looking tiles, but the weave's spacing is off: every radial feature moves by 4 spreads.
    off = references[:2].copy()
    off[:, texture.GROUPS[0][1]] += 4.0 * stats.blocks[0].std[texture.GROUPS[0][1]]
    item["canvas"] = [shot(off[0], "a"), shot(off[1], "b")]
    decision = decide(refs, "tote-classic", item)
    assert (decision.verdict, decision.reason) == ("UNVERIFIED", "COUNTERFEIT_INDICATORS")
    canvas = decision.regions[0]
    assert canvas.score is not None and canvas.score < THRESHOLD
    assert any("outside every genuine reference" in e for e in canvas.explanations)
    assert "differs from genuine coated-canvas most in the spacing of its repeating structures" in " ".join(
        canvas.explanations
    )


def test_the_texture_score_weighs_into_an_images_logit_as_calibrated(bundle: ModelBundle) -> None:
    from dataclasses import replace

    from veriscope.device.inference.bundle import Calibration
    from veriscope.device.pipeline import texture
    from veriscope.device.pipeline.inference import analyze_outputs
    from veriscope.device.pipeline.scoring import RawOutputs

    size = texture.FEATURE_SIZE
    head = texture.TextureHead(
        np.zeros(size, np.float32), np.ones(size, np.float32), np.full(size, 0.5, np.float32), -1.0
    )
    stats = texture.fit_texture_stats(np.random.default_rng(5).normal(size=(16, size)))
    stats = texture.TextureStats(stats.features, stats.blocks, head)
    calibrated = replace(
        bundle,
        open_set={m: replace(s, texture=stats) for m, s in bundle.open_set.items()},
        calibration={m: Calibration(slope=1.0, intercept=0.0, texture_slope=2.0) for m in bundle.materials},
    )
    raw = RawOutputs(
        material_logits=np.tile(np.array([5.0, 0.0, 0.0, 0.0], np.float32), (2, 1)),
        authenticity_logits=np.tile(np.array([0.3, 0.0, 0.0], np.float32), (2, 1)),
        embedding=np.zeros((2, 2), np.float32),
    )
    features = np.full(size, 0.01, np.float32)
    plain = analyze_outputs(calibrated, raw, "coated-canvas")
    weighed = analyze_outputs(calibrated, raw, "coated-canvas", features)
    assert plain.logit == pytest.approx(0.3)  # no texture measured: the network alone
    assert weighed.logit == pytest.approx(0.3 + 2.0 * (0.5 * 0.01 * size - 1.0), rel=1e-5)
    tiles = weighed.tile_scores.astype(np.float64)
    assert float(np.mean(np.log(tiles / (1.0 - tiles)))) == pytest.approx(weighed.logit, abs=1e-4)  # tiles shift alike
    np.testing.assert_array_equal(weighed.texture, features)
