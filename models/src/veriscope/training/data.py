"""Specimen images on disk: the item index, the split by item, and the streaming training input.

The layout is ``ROOT/<material>/<source>/<item_id>/*.png``: source ``genuine``
holds genuine items, and any other source name (a counterfeit maker such as
``counterfeit-a``, or ``counterfeit`` in an export of labelled scans) holds
counterfeits. Files other than ``*.png`` (a manifest) are ignored. Splits are by item,
never by image, so no item is seen in both training and evaluation; held-out
counterfeit sources go to a split of their own. The training input streams
images from disk through ``tf.data`` and never holds the data set in memory.
"""

from __future__ import annotations

import hashlib
from collections import defaultdict
from collections.abc import Iterable, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np
from PIL import Image

from veriscope.device.inference.tiling import Tiling, to_work_scale
from veriscope.device.types import RGBImage
from veriscope.training.config import GENUINE_SOURCE

IMAGE_SUFFIXES = (".png",)


@dataclass(frozen=True)
class Item:
    """One specimen and its images."""

    material: str
    source: str
    item_id: str
    images: tuple[Path, ...]

    @property
    def genuine(self) -> bool:
        """True for a genuine specimen."""
        return self.source == GENUINE_SOURCE


@dataclass(frozen=True)
class Split:
    """Items split for training, validation (calibration, thresholds), test, and held-out sources."""

    train: tuple[Item, ...]
    val: tuple[Item, ...]
    test: tuple[Item, ...]
    held_out: tuple[Item, ...]

    def counts(self) -> dict[str, dict[str, int]]:
        """Items and images per split."""
        return {
            name: {"items": len(items), "images": sum(len(i.images) for i in items)}
            for name, items in (
                ("train", self.train),
                ("val", self.val),
                ("test", self.test),
                ("held_out", self.held_out),
            )
        }


def scan(root: Path, materials: Sequence[str]) -> list[Item]:
    """Index the items under ``root`` for the given materials, in a stable order.

    Raises ``FileNotFoundError`` when ``root`` or a material folder is missing or holds no images.
    """
    if not root.is_dir():
        raise FileNotFoundError(f"no specimen data at {root}")
    items: list[Item] = []
    for material in materials:
        folder = root / material
        if not folder.is_dir():
            raise FileNotFoundError(f"no images of {material} under {root}")
        for source_dir in sorted(p for p in folder.iterdir() if p.is_dir()):
            for item_dir in sorted(p for p in source_dir.iterdir() if p.is_dir()):
                images = tuple(sorted(p for p in item_dir.iterdir() if p.suffix.lower() in IMAGE_SUFFIXES))
                if images:
                    items.append(Item(material, source_dir.name, item_dir.name, images))
    if not items:
        raise FileNotFoundError(f"no images under {root}")
    return items


def _rank(item: Item, seed: int) -> str:
    # A hash rank keeps each item's split stable when items are added to the data set.
    return hashlib.sha256(f"{seed}/{item.material}/{item.source}/{item.item_id}".encode()).hexdigest()


def split_items(
    items: Iterable[Item], *, held_out_sources: Sequence[str], val_fraction: float, test_fraction: float, seed: int
) -> Split:
    """Split items per (material, source) into train, val and test; held-out sources go whole to ``held_out``.

    Each group of three or more items gives at least one item to each of val and test.
    Raises ``ValueError`` when a material's validation items lack a genuine or a
    counterfeit item: calibration and thresholds are fitted on both.
    """
    groups: dict[tuple[str, str], list[Item]] = defaultdict(list)
    held_out: list[Item] = []
    for item in items:
        (held_out if item.source in held_out_sources else groups[(item.material, item.source)]).append(item)
    train: list[Item] = []
    val: list[Item] = []
    test: list[Item] = []
    for key in sorted(groups):
        group = sorted(groups[key], key=lambda i: _rank(i, seed))
        n = len(group)
        n_val = max(1 if n >= 3 else 0, round(n * val_fraction))
        n_test = max(1 if n >= 3 else 0, round(n * test_fraction))
        val += group[:n_val]
        test += group[n_val : n_val + n_test]
        train += group[n_val + n_test :]
    for material in sorted({m for m, _ in groups}):
        kinds = {item.genuine for item in val if item.material == material}
        if kinds != {True, False}:
            counts = ", ".join(f"{s} {len(groups[(m, s)])}" for m, s in sorted(groups) if m == material)
            raise ValueError(
                f"too few items of {material} to validate on ({counts}): validation needs a genuine and a "
                "counterfeit item of every material, and a source with fewer than 3 items gives it none"
            )
    return Split(tuple(train), tuple(val), tuple(test), tuple(held_out))


def load_image(path: Path) -> RGBImage:
    """Read an image file as HxWx3 uint8 RGB."""
    with Image.open(path) as image:
        return np.asarray(image.convert("RGB"), dtype=np.uint8)


def decode_to_work_scale(path: Any, tiling: Tiling) -> Any:
    """TensorFlow op: read an image file and bring it to the working scale with the device's own code."""
    from veriscope.training._tf import tf

    def work_scale(pixels: np.ndarray) -> np.ndarray:
        return to_work_scale(pixels, tiling)

    pixels = tf.io.decode_image(tf.io.read_file(path), channels=3, expand_animations=False)
    pixels = tf.numpy_function(work_scale, [pixels], tf.uint8, stateful=False)
    return tf.ensure_shape(pixels, [None, tiling.work_width_px, 3])


def material_shares(
    materials: Sequence[str], present: Sequence[int], weights: Sequence[tuple[str, float]]
) -> dict[int, float]:
    """Sampling share of each present material index, from ``(material, weight)`` pairs (others weigh 1.0).

    Raises :class:`ValueError` for a weight that is not positive or names a material the run does not train.
    """
    by_name = dict(weights)
    for name, weight in by_name.items():
        if name not in materials:
            raise ValueError(f"material weight for {name!r}: not one of the materials {', '.join(materials)}")
        if not weight > 0.0:
            raise ValueError(f"material weight for {name!r} must be positive, got {weight}")
    raw = {k: float(by_name.get(materials[k], 1.0)) for k in present}
    total = sum(raw.values())
    return {k: w / total for k, w in raw.items()}


def training_dataset(items: Sequence[Item], materials: Sequence[str], config: Any) -> Any:
    """An endless ``tf.data`` stream of (tiles, targets) batches for ``model.fit``.

    Images are decoded and brought to the working scale one at a time (with the
    device's own :func:`~veriscope.device.inference.tiling.to_work_scale`), then
    ``crops_per_image`` augmented random tiles are cut from each. A share
    ``outlier_fraction`` of tiles are synthetic outliers of class "other".
    Targets are ``material`` (class index) and ``authenticity`` (per-material
    column: 1 genuine, 0 counterfeit, -1 not this tile's material).
    """
    from veriscope.training import augment
    from veriscope.training._tf import tf

    tiling: Tiling = config.tiling
    paths = [str(p) for item in items for p in item.images]
    mat_idx = [materials.index(item.material) for item in items for _ in item.images]
    genuine = [1 if item.genuine else 0 for item in items for _ in item.images]
    n_materials = len(materials)

    def load(path: Any, material: Any, label: Any) -> Any:
        return decode_to_work_scale(path, tiling), material, label

    def crops(pixels: Any, material: Any, label: Any) -> Any:
        tiles = augment.random_tiles(pixels, config.crops_per_image, tiling.tile_px, config.scale_jitter)
        auth = tf.where(tf.range(n_materials) == material, tf.cast(label, tf.float32), -1.0)
        k = config.crops_per_image
        return tiles, tf.fill([k], material), tf.tile(auth[None, :], [k, 1])

    def stream(selected: list[int]) -> Any:
        return (
            tf.data.Dataset.from_tensor_slices(
                ([paths[i] for i in selected], [mat_idx[i] for i in selected], [genuine[i] for i in selected])
            )
            .repeat()
            .shuffle(len(selected), seed=config.seed, reshuffle_each_iteration=True)
            .map(load, num_parallel_calls=config.threads, deterministic=False)
            .map(crops, num_parallel_calls=config.threads, deterministic=False)
            .unbatch()
        )

    # One stream per material, mixed at the configured shares rather than in proportion to image counts.
    weights = material_shares(materials, sorted(set(mat_idx)), config.material_weights)
    per_material = [stream([i for i, m in enumerate(mat_idx) if m == k]) for k in weights]
    real = tf.data.Dataset.sample_from_datasets(per_material, weights=list(weights.values()), seed=config.seed).shuffle(
        1024, seed=config.seed
    )
    outliers = augment.outlier_dataset(
        tiling.tile_px, class_index=n_materials, n_materials=n_materials, seed=config.seed
    )
    mixed = tf.data.Dataset.sample_from_datasets(
        [real, outliers], weights=[1.0 - config.outlier_fraction, config.outlier_fraction], seed=config.seed
    )

    def to_targets(tiles: Any, material: Any, auth: Any) -> Any:
        return tiles, {"material_logits": material, "authenticity_logits": auth}

    return mixed.batch(config.batch_size, drop_remainder=True).map(to_targets).prefetch(2)
