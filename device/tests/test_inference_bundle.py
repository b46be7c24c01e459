"""The bundle loader: a valid bundle loads; every kind of fault raises ModelError naming the field or file."""

from __future__ import annotations

import contextlib
import copy
import hashlib
import json
import subprocess
import sys
from pathlib import Path
from typing import Any

import numpy as np
import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from veriscope.device.errors import InvalidArgument, ModelError, NotFound
from veriscope.device.inference import ModelBundle, Tiling, frame_to_tiles, load_bundle
from veriscope.device.inference.bundle import bundle_from_manifest, parse_manifest
from veriscope.device.inference.tiling import tile_origins, to_work_scale
from veriscope.device.pipeline.texture import FAMILIES, FEATURE_SET, FEATURE_SIZE, head_logit

MATERIALS = ["coated-canvas", "grained-leather", "woven-fabric"]
TEXTURE = {
    "features": FEATURE_SET,
    "blocks": {
        name: {
            "mean": [0.0] * (part.stop - part.start),
            "std": [1.0] * (part.stop - part.start),
            "components": [[1.0] + [0.0] * (part.stop - part.start - 1)],
            "variances": [2.0],
            "shrinkage": 0.1,
            "distance_ref": 1.5,
            # Keys out of order on purpose: the loader sorts them.
            **({"limits_by_images": {"4": 1.0, "3": 1.25}} if name == FAMILIES[0][0] else {}),
        }
        for name, part in FAMILIES
    },
    "head": {"mean": [0.0] * FEATURE_SIZE, "std": [1.0] * FEATURE_SIZE, "weights": [0.01] * FEATURE_SIZE, "bias": 0.5},
    "material": {
        name: {
            "mean": [0.0] * (part.stop - part.start),
            "std": [2.0] * (part.stop - part.start),
            "components": [[1.0] + [0.0] * (part.stop - part.start - 1)],
            "variances": [3.0],
            "shrinkage": 0.2,
            "distance_ref": 4.0,
        }
        for name, part in FAMILIES
    },
}
MODEL_BYTES = b"not really a tflite model, but the loader only checks size and digest"


def manifest() -> dict[str, Any]:
    """A complete, valid manifest for MODEL_BYTES."""
    return {
        "format_version": 1,
        "name": "test-model",
        "version": "1.2.3",
        "created": "2026-01-02T03:04:05+00:00",
        "model": {
            "file": "model.tflite",
            "sha256": hashlib.sha256(MODEL_BYTES).hexdigest(),
            "size_bytes": len(MODEL_BYTES),
        },
        "input": {"name": "tiles", "tile_px": 32, "channels": 3, "dtype": "uint8", "scale": 1.0, "zero_point": 0},
        "preprocessing": {"work_width_px": 128, "tile_px": 32, "grid_rows": 2, "grid_cols": 3},
        "outputs": {
            "signature": "serving_default",
            "material_logits": {"classes": [*MATERIALS, "other"]},
            "authenticity_logits": {"materials": MATERIALS},
            "embedding": {"size": 4},
        },
        "materials": MATERIALS,
        "lighting": ["white_ring"],
        "calibration": {
            m: {"slope": 1.5, "intercept": -0.2, **({"texture_slope": 0.8} if m == "coated-canvas" else {})}
            for m in MATERIALS
        },
        "open_set": {
            m: {
                "mean": [0.0, 1.0, 2.0, 3.0],
                "std": [1.0] * 4,
                "distance_ref": 2.0,
                **({"texture": copy.deepcopy(TEXTURE)} if m == "coated-canvas" else {}),
            }
            for m in MATERIALS
        },
        "thresholds": {"item": 0.6, "abstain_band": [0.6, 0.7], "familiarity": 0.5, "target_far": 0.01},
        "quality": {"min_sharpness": 0.03},
        "item_types": [
            {
                "name": "tote-classic",
                "display_name": "Classic tote",
                "regions": [
                    {"name": "canvas", "material": "coated-canvas", "min_images": 2, "hint": "side panel"},
                    {"name": "trim", "material": "grained-leather", "min_images": 2, "hint": ""},
                ],
            }
        ],
        "held_out_sources": ["counterfeit-e", "counterfeit-f"],
        "training": {"epochs": 1},
        "metrics": {},
    }


def write(directory: Path, data: dict[str, Any], model: bytes = MODEL_BYTES) -> Path:
    directory.mkdir(parents=True, exist_ok=True)
    (directory / "model.tflite").write_bytes(model)
    (directory / "manifest.json").write_text(json.dumps(data))
    return directory


def test_valid_bundle_loads_with_every_field(tmp_path: Path) -> None:
    bundle = load_bundle(write(tmp_path / "b", manifest()))
    assert isinstance(bundle, ModelBundle)
    assert (bundle.name, bundle.version, bundle.size_bytes) == ("test-model", "1.2.3", len(MODEL_BYTES))
    assert bundle.sha256 == hashlib.sha256(MODEL_BYTES).hexdigest()
    assert bundle.path == tmp_path / "b"
    assert bundle.materials == tuple(MATERIALS)
    assert bundle.lighting == ("white_ring",)
    assert bundle.quality_thresholds == {"min_sharpness": 0.03}
    assert bundle.tiling == Tiling(work_width_px=128, tile_px=32, grid_rows=2, grid_cols=3)
    assert bundle.thresholds.abstain_high == 0.7
    tote = bundle.item_type("tote-classic")
    assert [(r.name, r.material, r.min_images, r.hint) for r in tote.regions] == [
        ("canvas", "coated-canvas", 2, "side panel"),
        ("trim", "grained-leather", 2, ""),
    ]
    assert tote.display_name == "Classic tote"
    assert bundle.manifest["training"] == {"epochs": 1}
    np.testing.assert_array_equal(bundle.open_set["woven-fabric"].mean, [0, 1, 2, 3])
    texture = bundle.open_set["coated-canvas"].texture
    assert texture is not None and bundle.open_set["woven-fabric"].texture is None
    assert texture.features == FEATURE_SET and [b.name for b in texture.blocks] == [n for n, _ in FAMILIES]
    spectrum = texture.blocks[0]
    assert (spectrum.components.shape, spectrum.shrinkage) == ((1, FAMILIES[0][1].stop), 0.1)
    assert (spectrum.variances.tolist(), spectrum.distance_ref) == ([2.0], 1.5)
    assert spectrum.limits_by_images == ((3, 1.25), (4, 1.0)) and spectrum.limit(3) == 1.25
    assert texture.blocks[1].limits_by_images == ()
    assert [b.name for b in texture.material] == [n for n, _ in FAMILIES]
    assert (texture.material[0].distance_ref, texture.material[0].shrinkage) == (4.0, 0.2)
    assert float(texture.material[0].std[0]) == 2.0
    assert texture.head is not None and head_logit(np.ones(FEATURE_SIZE), texture.head) == pytest.approx(
        0.5 + 0.01 * FEATURE_SIZE, rel=1e-5
    )
    assert (bundle.calibration["coated-canvas"].texture_slope, bundle.calibration["woven-fabric"].texture_slope) == (
        0.8,
        0.0,
    )


def test_unknown_item_type_and_region_are_reported(tmp_path: Path) -> None:
    bundle = load_bundle(write(tmp_path / "b", manifest()))
    with pytest.raises(NotFound, match="scarf"):
        bundle.item_type("scarf")
    with pytest.raises(InvalidArgument, match="lining"):
        bundle.item_type("tote-classic").region("lining")


def test_quality_section_is_optional(tmp_path: Path) -> None:
    data = manifest()
    del data["quality"]
    assert load_bundle(write(tmp_path / "b", data)).quality_thresholds == {}


def _set(data: dict[str, Any], path: str, value: Any) -> None:
    keys: list[Any] = [int(k) if k.isdigit() else k for k in path.split(".")]
    target: Any = data
    for key in keys[:-1]:
        target = target[key]
    if value is _DELETE:
        del target[keys[-1]]
    else:
        target[keys[-1]] = value


_DELETE = object()


@pytest.mark.parametrize(
    ("path", "value", "message"),
    [
        ("format_version", 2, "format_version"),
        ("name", "Bad Name!", "'name'"),
        ("version", "1.2", "'version'"),
        ("created", "yesterday", "'created'"),
        ("model.sha256", "abc", "model.sha256"),
        ("model.file", "../model.tflite", "model.file"),
        ("model.size_bytes", _DELETE, "model.size_bytes"),
        ("input.dtype", "float32", "input.dtype"),
        ("input.zero_point", 300, "input.zero_point"),
        ("preprocessing.tile_px", 48, "preprocessing.tile_px"),
        ("preprocessing.work_width_px", 16, "tile_px"),
        ("outputs.material_logits.classes", ["other", *MATERIALS], "material_logits.classes"),
        ("outputs.authenticity_logits.materials", MATERIALS[:2], "authenticity_logits.materials"),
        ("materials", [], "'materials'"),
        ("lighting", ["white_ring", "white_ring"], "'lighting'"),
        ("calibration.coated-canvas.slope", 0.0, "calibration.coated-canvas.slope"),
        ("calibration.suede", {"slope": 1.0, "intercept": 0.0}, "calibration.suede"),
        ("open_set.woven-fabric.mean", [0.0, 1.0], "open_set.woven-fabric.mean"),
        ("open_set.woven-fabric.std", [1.0, 0.0, 1.0, 1.0], "open_set.woven-fabric.std"),
        ("open_set.coated-canvas.texture.features", "spectrum-v0", "texture.features"),
        ("open_set.coated-canvas.texture.blocks.blobs", _DELETE, "texture.blocks"),
        ("open_set.coated-canvas.texture.head.weights", [1.0], "texture.head.weights"),
        ("open_set.coated-canvas.texture.head.std", [0.0] * FEATURE_SIZE, "texture.head.std"),
        ("calibration.coated-canvas.texture_slope", -1.0, "calibration.coated-canvas.texture_slope"),
        ("open_set.coated-canvas.texture.blocks.spectrum.mean", [0.0] * 3, "blocks.spectrum.mean"),
        ("open_set.coated-canvas.texture.blocks.blobs.components.0", [1.0], "blocks.blobs.components[0]"),
        ("open_set.coated-canvas.texture.blocks.blobs.components", [], "blocks.blobs.components"),
        ("open_set.coated-canvas.texture.blocks.spectrum.variances", [-1.0], "spectrum.variances"),
        ("open_set.coated-canvas.texture.blocks.spectrum.shrinkage", 0.0, "spectrum.shrinkage"),
        ("open_set.coated-canvas.texture.blocks.blobs.distance_ref", _DELETE, "blobs.distance_ref"),
        ("open_set.coated-canvas.texture.blocks.blobs.limits_by_images", {"three": 1.0}, "blobs.limits_by_images"),
        ("open_set.coated-canvas.texture.blocks.blobs.limits_by_images", {"0": 1.0}, "blobs.limits_by_images"),
        ("open_set.coated-canvas.texture.blocks.blobs.limits_by_images", {"\u00b3": 1.0}, "blobs.limits_by_images"),
        ("open_set.coated-canvas.texture.blocks.blobs.limits_by_images", {"3": 0.0}, "limits_by_images.3"),
        ("open_set.coated-canvas.texture.blocks.blobs.limits_by_images", [1.0], "blobs.limits_by_images"),
        ("open_set.coated-canvas.texture.material.sizes", _DELETE, "texture.material"),
        ("open_set.coated-canvas.texture.material", [], "texture.material"),
        ("open_set.coated-canvas.texture.material.blobs.std", [0.0] * 20, "material.blobs.std"),
        ("open_set.coated-canvas.texture.material.layers.distance_ref", -1.0, "layers.distance_ref"),
        ("open_set.coated-canvas.texture.material.blobs.limits_by_images", {"3": 1.0}, "texture.material"),
        ("thresholds.item", 1.5, "thresholds.item"),
        ("thresholds.abstain_band", [0.7, 0.8], "thresholds.abstain_band"),
        ("thresholds.familiarity", "high", "thresholds.familiarity"),
        ("quality.min_sharpness", True, "quality.min_sharpness"),
        ("item_types.0.regions.0.material", "suede", "item_types[0].regions[0].material"),
        ("item_types.0.regions.1.name", "canvas", "item_types[0].regions"),
        ("item_types.0.regions.0.min_images", 0, "item_types[0].regions[0].min_images"),
        ("item_types", [], "'item_types'"),
    ],
)
def test_bad_field_is_named(tmp_path: Path, path: str, value: Any, message: str) -> None:
    data = copy.deepcopy(manifest())
    _set(data, path, value)
    with pytest.raises(ModelError, match=message.replace("[", r"\[").replace("]", r"\]")):
        load_bundle(write(tmp_path / "b", data))


def test_model_file_faults_are_named(tmp_path: Path) -> None:
    with pytest.raises(ModelError, match="SHA-256"):
        load_bundle(write(tmp_path / "digest", manifest(), model=MODEL_BYTES[::-1]))
    with pytest.raises(ModelError, match="bytes"):
        load_bundle(write(tmp_path / "size", manifest(), model=MODEL_BYTES + b"x"))
    missing = write(tmp_path / "missing", manifest())
    (missing / "model.tflite").unlink()
    with pytest.raises(ModelError, match="missing"):
        load_bundle(missing)


def test_missing_or_broken_manifest(tmp_path: Path) -> None:
    with pytest.raises(ModelError, match="not a directory"):
        load_bundle(tmp_path / "nowhere")
    (tmp_path / "empty").mkdir()
    with pytest.raises(ModelError, match=r"manifest\.json"):
        load_bundle(tmp_path / "empty")
    broken = write(tmp_path / "broken", manifest())
    (broken / "manifest.json").write_text('{"format_version": NaN}')
    with pytest.raises(ModelError, match="not valid JSON"):
        load_bundle(broken)
    (broken / "manifest.json").write_bytes(b"\xff\xfe{")
    with pytest.raises(ModelError, match="UTF-8"):
        load_bundle(broken)


_json = st.recursive(
    st.none() | st.booleans() | st.integers() | st.floats(allow_nan=False) | st.text(max_size=12),
    lambda children: st.lists(children, max_size=4) | st.dictionaries(st.text(max_size=12), children, max_size=4),
    max_leaves=20,
)


def _paths(value: Any, prefix: tuple[Any, ...] = ()) -> list[tuple[Any, ...]]:
    found = [prefix] if prefix else []
    if isinstance(value, dict):
        for key, child in value.items():
            found += _paths(child, (*prefix, key))
    elif isinstance(value, list):
        for i, child in enumerate(value):
            found += _paths(child, (*prefix, i))
    return found


_ALL_PATHS = _paths(manifest())


@settings(max_examples=150, deadline=None, suppress_health_check=[HealthCheck.function_scoped_fixture])
@given(st.lists(st.tuples(st.sampled_from(_ALL_PATHS), _json | st.just(_DELETE)), min_size=1, max_size=4))
def test_mutated_manifests_only_raise_model_error(tmp_path: Path, mutations: list[tuple[tuple[Any, ...], Any]]) -> None:
    data: Any = copy.deepcopy(manifest())
    for path, value in mutations:
        target = data
        try:
            for key in path[:-1]:
                target = target[key]
            if value is _DELETE:
                del target[path[-1]]
            else:
                target[path[-1]] = value
        except (KeyError, IndexError, TypeError):
            continue  # An earlier mutation removed or replaced the parent.
    with contextlib.suppress(ModelError):
        bundle_from_manifest(tmp_path, data)


@settings(max_examples=100, deadline=None)
@given(_json | st.text(max_size=40))
def test_random_json_only_raises_model_error(value: Any) -> None:
    text = value if isinstance(value, str) else json.dumps(value)
    with contextlib.suppress(ModelError):
        bundle_from_manifest(Path("."), parse_manifest(text))


def test_tiles_cover_the_frame_edges_in_grid_order() -> None:
    tiling = Tiling(work_width_px=128, tile_px=32, grid_rows=2, grid_cols=3)
    frame = np.zeros((96, 128, 3), dtype=np.uint8)
    frame[:, :, 0] = np.arange(128, dtype=np.uint8)[None, :]
    frame[:, :, 1] = np.arange(96, dtype=np.uint8)[:, None]
    tiles = frame_to_tiles(frame, tiling)
    assert tiles.shape == (6, 32, 32, 3)
    assert tile_origins(128, 96, tiling) == [(0, 0), (48, 0), (96, 0), (0, 64), (48, 64), (96, 64)]
    assert tiles[2, 0, -1, 0] == 127 and tiles[5, -1, 0, 1] == 95
    assert tiles[3, 0, 0, 0] == 0 and tiles[3, 0, 0, 1] == 64


def test_frames_are_box_scaled_to_the_working_width() -> None:
    tiling = Tiling(work_width_px=128, tile_px=32, grid_rows=2, grid_cols=3)
    frame = np.zeros((384, 512, 3), dtype=np.uint8)
    frame[::2] = 200  # Alternate rows: a 4x box filter averages them to 100.
    work = to_work_scale(frame, tiling)
    assert work.shape == (96, 128, 3)
    assert np.all(np.abs(work.astype(int) - 100) <= 1)


@pytest.mark.parametrize(
    "frame",
    [np.zeros((20, 128, 3), np.uint8), np.zeros((96, 128), np.uint8), np.zeros((96, 128, 3), np.float32)],
)
def test_untileable_frames_are_invalid_arguments(frame: np.ndarray) -> None:
    with pytest.raises(InvalidArgument):
        frame_to_tiles(frame, Tiling(work_width_px=128, tile_px=32, grid_rows=2, grid_cols=3))


def test_device_inference_never_imports_tensorflow() -> None:
    code = (
        "import sys\n"
        "import veriscope.device.inference, veriscope.device.pipeline.inference, veriscope.device.pipeline.verdict\n"
        "sys.exit('tensorflow' in sys.modules)\n"
    )
    assert subprocess.run([sys.executable, "-c", code], check=False).returncode == 0
