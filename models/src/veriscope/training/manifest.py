"""Builds a bundle manifest and writes bundles: model file, manifest.json and MODEL_CARD.md."""

from __future__ import annotations

import hashlib
import json
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

import numpy as np

from veriscope.device.inference.bundle import FORMAT_VERSION, MANIFEST_FILE, ModelBundle, bundle_from_manifest
from veriscope.training.config import TrainConfig

MODEL_FILE = "model.tflite"
CARD_FILE = "MODEL_CARD.md"


@dataclass(frozen=True)
class Sections:
    """The fitted parts of a manifest: calibration, open-set statistics and thresholds."""

    calibration: dict[str, dict[str, float]]
    open_set: dict[str, dict[str, Any]]
    thresholds: dict[str, Any]

    @staticmethod
    def placeholder(materials: Sequence[str], embedding_size: int) -> Sections:
        """Neutral sections, for running a model before anything is fitted."""
        return Sections(
            calibration={m: {"slope": 1.0, "intercept": 0.0} for m in materials},
            open_set={
                m: {"mean": [0.0] * embedding_size, "std": [1.0] * embedding_size, "distance_ref": 1.0}
                for m in materials
            },
            thresholds={"item": 0.5, "abstain_band": [0.5, 0.5], "familiarity": 0.0, "target_far": 0.0},
        )


def default_item_types(materials: Sequence[str]) -> list[dict[str, Any]]:
    """One single-region item type per material, when no catalog is given."""
    return [
        {
            "name": f"{m}-swatch",
            "display_name": f"{m.replace('-', ' ').capitalize()} swatch",
            "regions": [{"name": "surface", "material": m, "min_images": 2, "hint": "Any flat area of the surface."}],
        }
        for m in materials
    ]


def build_manifest(
    config: TrainConfig,
    *,
    model_bytes: bytes,
    input_quantisation: tuple[float, int],
    classes: Sequence[str],
    sections: Sections,
    training: Mapping[str, Any] | None = None,
    metrics: Mapping[str, Any] | None = None,
    quality: Mapping[str, float] | None = None,
) -> dict[str, Any]:
    """The manifest dict for a model; see :mod:`veriscope.device.inference.bundle` for the fields."""
    tiling = config.tiling
    manifest: dict[str, Any] = {
        "format_version": FORMAT_VERSION,
        "name": config.name,
        "version": config.version,
        "created": datetime.now(UTC).replace(microsecond=0).isoformat(),
        "model": {
            "file": MODEL_FILE,
            "sha256": hashlib.sha256(model_bytes).hexdigest(),
            "size_bytes": len(model_bytes),
        },
        "input": {
            "name": "tiles",
            "tile_px": tiling.tile_px,
            "channels": 3,
            "dtype": "uint8",
            "scale": float(input_quantisation[0]),
            "zero_point": int(input_quantisation[1]),
        },
        "preprocessing": {
            "work_width_px": tiling.work_width_px,
            "tile_px": tiling.tile_px,
            "grid_rows": tiling.grid_rows,
            "grid_cols": tiling.grid_cols,
            "resample": "box",
        },
        "outputs": {
            "signature": "serving_default",
            "material_logits": {"classes": list(classes)},
            "authenticity_logits": {"materials": list(config.materials)},
            "embedding": {"size": config.embedding_size},
        },
        "materials": list(config.materials),
        "lighting": list(config.lighting),
        "calibration": sections.calibration,
        "open_set": sections.open_set,
        "thresholds": sections.thresholds,
        "quality": dict(quality or {}),
        "item_types": [dict(t) for t in config.item_types] or default_item_types(config.materials),
        "held_out_sources": list(config.held_out_sources),
        "training": dict(training or {}),
        "metrics": dict(metrics or {}),
    }
    return manifest


def _plain(value: Any) -> Any:
    if isinstance(value, np.generic):
        return value.item()
    if isinstance(value, np.ndarray):
        return value.tolist()
    raise TypeError(f"cannot write {type(value).__name__} to JSON")


def write_bundle(directory: Path, manifest: Mapping[str, Any], model_bytes: bytes, card: str) -> ModelBundle:
    """Write a bundle directory and check it as the device would. Returns the bundle."""
    directory.mkdir(parents=True, exist_ok=True)
    (directory / MODEL_FILE).write_bytes(model_bytes)
    (directory / CARD_FILE).write_text(card, encoding="utf-8")
    text = json.dumps(manifest, indent=2, default=_plain, allow_nan=False) + "\n"
    (directory / MANIFEST_FILE).write_text(text, encoding="utf-8")
    from veriscope.device.inference.bundle import load_bundle

    return load_bundle(directory)


def provisional_bundle(directory: Path, manifest: Mapping[str, Any]) -> ModelBundle:
    """A bundle object from a manifest whose model file is already in place, skipping the digest check."""
    return bundle_from_manifest(directory, json.loads(json.dumps(manifest, default=_plain)))
