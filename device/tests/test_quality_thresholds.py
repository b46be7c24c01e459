"""The quality gate's thresholds in the model bundle: global, per lighting channel and per material."""

from __future__ import annotations

import copy
from pathlib import Path
from typing import Any

import pytest
from test_inference_bundle import manifest, write

from veriscope.device.errors import ModelError
from veriscope.device.inference import load_bundle
from veriscope.device.pipeline import quality

SECTION = {
    "min_sharpness": 0.002,
    "max_motion_score": 12.0,
    "lighting": {"uv": {"min_mean_level": 0.08}, "raking": {"min_sharpness": 0.01}},
    "materials": {"woven-fabric": {"min_sharpness": 0.004}},
}


def bundle_with(tmp_path: Path, section: Any) -> Any:
    data = copy.deepcopy(manifest())
    data["quality"] = section
    return load_bundle(write(tmp_path / "bundle", data))


def test_sections_load_and_the_most_specific_wins(tmp_path: Path) -> None:
    bundle = bundle_with(tmp_path, SECTION)
    assert bundle.quality_thresholds == {"min_sharpness": 0.002, "max_motion_score": 12.0}
    assert bundle.quality_overrides() == {"min_sharpness": 0.002, "max_motion_score": 12.0}
    assert bundle.quality_overrides("coated-canvas") == {"min_sharpness": 0.002, "max_motion_score": 12.0}
    assert bundle.quality_overrides("woven-fabric")["min_sharpness"] == 0.004
    assert bundle.quality_overrides(lighting="raking")["min_sharpness"] == 0.01
    # Material beats lighting: a fine weave needs its sharpness under any light.
    assert bundle.quality_overrides("woven-fabric", "raking")["min_sharpness"] == 0.004
    assert bundle.quality_overrides("woven-fabric", "uv") == {
        "min_sharpness": 0.004,
        "max_motion_score": 12.0,
        "min_mean_level": 0.08,
    }


def test_overrides_reach_the_gate_over_the_lighting_defaults(tmp_path: Path) -> None:
    bundle = bundle_with(tmp_path, SECTION)
    merged = quality.thresholds_from(bundle.quality_overrides("woven-fabric", "raking"), lighting="raking")
    assert merged["min_sharpness"] == 0.004 and merged["max_motion_score"] == 12.0
    assert merged["min_focus_uniformity"] == quality.LIGHTING_DEFAULTS["raking"]["min_focus_uniformity"]


def test_a_bundle_without_a_quality_section_has_no_overrides(tmp_path: Path) -> None:
    data = copy.deepcopy(manifest())
    data.pop("quality", None)
    bundle = load_bundle(write(tmp_path / "bundle", data))
    assert bundle.quality_overrides("woven-fabric", "uv") == {}


@pytest.mark.parametrize(
    ("section", "message"),
    [
        ({"min_sharpnes": 0.1}, "quality.min_sharpnes' is not a quality threshold"),
        ({"min_sharpness": "high"}, "quality.min_sharpness' must be a number"),
        ({"lighting": {"infrared": {"min_sharpness": 0.1}}}, "quality.lighting.infrared' is not one of"),
        ({"lighting": {"off": {"min_sharpness": 0.1}}}, "quality.lighting.off' is not one of"),
        ({"lighting": {"uv": {"max_glare": 0.1}}}, "quality.lighting.uv.max_glare' is not a quality threshold"),
        ({"materials": {"suede": {"min_sharpness": 0.1}}}, "quality.materials.suede' is not one of"),
        ({"materials": {"woven-fabric": {"min_sharpness": None}}}, "quality.materials.woven-fabric.min_sharpness"),
        ({"materials": ["woven-fabric"]}, "quality.materials must be an object"),
    ],
)
def test_a_bad_quality_field_is_named(tmp_path: Path, section: Any, message: str) -> None:
    with pytest.raises(ModelError, match=message.replace(".", r"\.")):
        bundle_with(tmp_path, section)


def test_every_known_threshold_name_is_accepted(tmp_path: Path) -> None:
    section = {name: value for name, value in quality.DEFAULT_THRESHOLDS.items()}
    section["materials"] = {"coated-canvas": dict(quality.DEFAULT_THRESHOLDS)}
    bundle = bundle_with(tmp_path, section)
    assert bundle.quality_overrides("coated-canvas") == quality.DEFAULT_THRESHOLDS


def test_the_demo_bundle_documents_its_gate() -> None:
    demo = Path(__file__).resolve().parents[2] / "models" / "bundles" / "veriscope-demo"
    bundle = load_bundle(demo)
    merged = quality.thresholds_from(bundle.quality_overrides(bundle.materials[0], bundle.lighting[0]))
    assert set(merged) == set(quality.DEFAULT_THRESHOLDS)
