"""One training run, end to end: data, fit, int8 export, calibration, evaluation, bundle."""

from __future__ import annotations

import json
import platform
import shutil
import statistics
import tempfile
import time
from collections.abc import Callable, Iterator, Mapping, Sequence
from dataclasses import dataclass, replace
from pathlib import Path
from typing import Any

import numpy as np
from PIL import Image

from veriscope.device.inference.bundle import MAX_DISTANCE_REF, ModelBundle
from veriscope.device.inference.tiling import frame_to_tiles, to_work_scale
from veriscope.device.pipeline import scoring, texture
from veriscope.device.pipeline.inference import Analyzer
from veriscope.device.pipeline.scoring import RawOutputs
from veriscope.training import calibrate, card, evaluate
from veriscope.training.config import OUTLIER_CLASS, TrainConfig
from veriscope.training.data import Item, Split, load_image, scan, split_items
from veriscope.training.evaluate import ItemOutputs
from veriscope.training.macs import count_macs, pi4_estimate_ms
from veriscope.training.manifest import (
    MODEL_FILE,
    Sections,
    build_manifest,
    default_item_types,
    provisional_bundle,
    write_bundle,
)

Runner = Callable[[np.ndarray], RawOutputs]


class TextureCache:
    """Each image's whole-frame texture features (:mod:`veriscope.device.pipeline.texture`), measured once."""

    def __init__(self, config: TrainConfig) -> None:
        self._tiling = config.tiling
        self._cache: dict[Path, np.ndarray] = {}

    def __call__(self, path: Path) -> np.ndarray:
        """The features of the image at ``path``, at the bundle's working scale."""
        if path not in self._cache:
            self._cache[path] = texture.texture_features(to_work_scale(load_image(path), self._tiling))
        return self._cache[path]


MIN_REFERENCE_IMAGES = 32
"""Fewest images of a material that image-level and genuine references are fitted from: each is a mean and a
standard deviation per embedding dimension, and from fewer images those deviations are too unsteady to measure
distances by (a small export trains without them; its tile statistics stand alone)."""


@dataclass(frozen=True)
class TrainResult:
    """What a run produced."""

    bundle: ModelBundle
    metrics: dict[str, Any]
    train_seconds: float


def _log(message: str) -> None:
    print(f"[train {time.strftime('%H:%M:%S')}] {message}", flush=True)


def _configure_tensorflow(config: TrainConfig) -> Any:
    from veriscope.training._tf import tf

    try:
        tf.config.threading.set_intra_op_parallelism_threads(config.threads)
        tf.config.threading.set_inter_op_parallelism_threads(config.threads)
    except RuntimeError:
        pass  # Already initialised by an earlier run in this process; the first setting stands.
    tf.keras.utils.set_random_seed(config.seed)
    return tf


def _spread(items: Sequence[Item], count: int, seed: int) -> list[Path]:
    """About ``count`` image paths spread evenly over items and materials."""
    paths = [p for item in items for p in item.images]
    rng = np.random.default_rng(seed)
    picked = rng.choice(len(paths), size=min(count, len(paths)), replace=False)
    return [paths[i] for i in sorted(picked)]


def outlier_frames(count: int, seed: int, *, width_px: int = 640, height_px: int = 480) -> list[np.ndarray]:
    """Full frames that show no material: flat colours, noise, gradients and smooth blobs."""
    rng = np.random.default_rng(seed)
    frames: list[np.ndarray] = []
    for i in range(count):
        colour = rng.uniform(20, 235, size=3)
        kind = i % 4
        if kind == 0:
            frame = np.broadcast_to(colour, (height_px, width_px, 3)).copy()
        elif kind == 1:
            frame = colour + rng.normal(0, rng.uniform(15, 60), size=(height_px, width_px, 3))
        elif kind == 2:
            ramp = np.linspace(0, 1, width_px)[None, :, None]
            frame = colour * (1 - ramp) + rng.uniform(0, 255, size=3) * ramp + np.zeros((height_px, 1, 1))
        else:
            coarse = rng.uniform(0, 255, size=(6, 8, 3)).astype(np.uint8)
            frame = np.asarray(Image.fromarray(coarse).resize((width_px, height_px), Image.Resampling.BICUBIC))
        frames.append(np.clip(frame, 0, 255).astype(np.uint8))
    return frames


def scan_images(config: TrainConfig) -> dict[str, int]:
    """Images an evaluation item of each material is judged on: the fewest any region of that material needs.

    A scan may stop at a region's minimum, so that is where the device's
    false-accept rate must hold; items with fewer images are judged on all they have.
    """
    return {m: counts[0] for m, counts in region_image_counts(config).items()}


def texture_z(config: TrainConfig) -> float:
    """The quantile, in standard deviations, of every texture limit: ``texture_distance_z``, else the share of
    ``texture_item_budget`` that one family of one region of the catalog's largest item type may spend."""
    if config.texture_distance_z is not None:
        return config.texture_distance_z
    types = [dict(t) for t in config.item_types] or default_item_types(config.materials)
    regions = max(len(t["regions"]) for t in types)  # type: ignore[arg-type]
    return statistics.NormalDist().inv_cdf(1.0 - config.texture_item_budget / (regions * len(texture.FAMILIES)))


def region_image_counts(config: TrainConfig) -> dict[str, list[int]]:
    """Per material, ascending, every number of images a region of that material needs ([2] when none names it):
    the region sizes its texture limits are calibrated for."""
    types = [dict(t) for t in config.item_types] or default_item_types(config.materials)
    counts: dict[str, set[int]] = {m: set() for m in config.materials}
    for spec in types:
        regions: list[dict[str, Any]] = spec["regions"]  # type: ignore[assignment]
        for region in regions:
            counts.setdefault(str(region["material"]), set()).add(int(region["min_images"]))
    return {m: sorted(counts[m] or {2}) for m in config.materials}


def _outputs(items: Sequence[Item], runner: Runner, config: TrainConfig, textures: TextureCache) -> list[ItemOutputs]:
    per_item = scan_images(config)
    entries = []
    for item in items:
        paths = item.images[: per_item[item.material]]
        raw = tuple(runner(frame_to_tiles(load_image(p), config.tiling)) for p in paths)
        entries.append(ItemOutputs(item, raw, tuple(textures(p) for p in paths)))
    return entries


def fit_sections(
    config: TrainConfig,
    bundle_dir: Path,
    base_manifest: dict[str, Any],
    val: Sequence[ItemOutputs],
    open_set_raw: dict[str, list[RawOutputs]],
    genuine_raw: dict[str, list[RawOutputs]],
    texture_train: Mapping[str, TextureData] | None = None,
) -> Sections:
    """Fit calibration, open-set statistics and thresholds from one model variant's outputs.

    ``open_set_raw`` holds training images of every source per material, ``genuine_raw`` genuine
    training images only, and ``texture_train`` per material the texture features of training
    images; without it the bundle gets no texture references.
    """
    materials = config.materials
    calibration: dict[str, dict[str, float]] = {}
    open_set: dict[str, dict[str, Any]] = {}
    textures = {m: fit_texture(config, m, val, (texture_train or {}).get(m)) for m in materials}
    for m in materials:
        col = materials.index(m)
        own = [e for e in val if e.item.material == m]
        z = [float(np.mean(raw.authenticity_logits[:, col])) for e in own for raw in e.raw]
        y = [1.0 if e.item.genuine else 0.0 for e in own for _ in e.raw]
        fitted_texture = textures[m]
        head = fitted_texture.head if fitted_texture is not None else None
        if head is not None and all(len(e.texture) == len(e.raw) for e in own) and 0 < sum(y) < len(y):
            # The network's logit and the whole-frame texture score, weighed together on validation images.
            t = [texture.head_logit(f, head) for e in own for f in e.texture]
            (slope, texture_slope), intercept = calibrate.fit_logistic(
                np.column_stack([z, t]), y, l2=1e-2, nonnegative=True
            )
            calibration[m] = {
                "slope": float(min(max(slope, 1e-3), 1e4)),
                "texture_slope": float(min(texture_slope, 1e4)),
                "intercept": intercept,
            }
        else:
            slope, intercept = calibrate.fit_platt(z, y)
            calibration[m] = {"slope": slope, "intercept": intercept}
        mean, std = calibrate.embedding_stats(np.concatenate([r.embedding for r in open_set_raw[m]]))
        stats = _stats(mean, std, 1.0)
        distances = np.concatenate([scoring.embedding_distance(raw.embedding, stats) for e in own for raw in e.raw])
        open_set[m] = {
            "mean": mean.tolist(),
            "std": std.tolist(),
            "distance_ref": calibrate.distance_ref(distances, config.familiar_quantile),
        }
        if fitted_texture is not None:
            open_set[m]["texture"] = texture_section(fitted_texture)
        if (
            len(open_set_raw[m]) < MIN_REFERENCE_IMAGES
            or len(genuine_raw[m]) < MIN_REFERENCE_IMAGES
            or not any(e.item.genuine for e in own)
        ):
            continue  # Too little data for image-level and genuine references; the tile statistics stand alone.
        # Whole images: their mean tile embeddings against those of the material's training images.
        img_mean, img_std = calibrate.embedding_stats(np.stack([r.embedding.mean(axis=0) for r in open_set_raw[m]]))
        img_stats = _stats(img_mean, img_std, 1.0)
        img_d = [
            float(scoring.embedding_distance(raw.embedding.mean(axis=0)[None], img_stats)[0])
            for e in own
            for raw in e.raw
        ]
        open_set[m]["image"] = {
            "mean": img_mean.tolist(),
            "std": img_std.tolist(),
            "distance_ref": config.image_familiar_margin * calibrate.lognormal_quantile(img_d, 3.09),
        }
        # Genuine references: where a genuine region's mean embedding may lie, from genuine training images.
        g_mean, g_std = calibrate.embedding_stats(np.stack([r.embedding.mean(axis=0) for r in genuine_raw[m]]))
        g_stats = _stats(g_mean, g_std, 1.0)
        region_d = [
            float(
                scoring.embedding_distance(np.mean([r.embedding.mean(axis=0) for r in e.raw], axis=0)[None], g_stats)[0]
            )
            for e in own
            if e.item.genuine
        ]
        open_set[m]["genuine"] = {
            "mean": g_mean.tolist(),
            "std": g_std.tolist(),
            "distance_ref": calibrate.lognormal_quantile(region_d, config.genuine_distance_z),
        }
    neutral = Sections.placeholder(materials, config.embedding_size).thresholds
    draft = provisional_bundle(
        bundle_dir, {**base_manifest, "calibration": calibration, "open_set": open_set, "thresholds": neutral}
    )
    per_material: dict[str, dict[str, Any]] = {}
    for m in materials:
        scores = [(evaluate.judge(draft, e).score, e.item.genuine) for e in val if e.item.material == m]
        item = calibrate.choose_threshold(
            [score for score, genuine in scores if not genuine],
            [score for score, genuine in scores if genuine],
            target_far=config.target_far,
            genuine_quantile=config.genuine_quantile,
            margin_logit=config.abstain_margin_logit,
        )
        per_material[m] = {
            "item": item,
            "abstain_band": [item, calibrate.abstain_high(item, config.abstain_margin_logit)],
        }
    # The default (for materials without their own) is the strictest of them.
    strictest = max(per_material.values(), key=lambda t: t["item"])
    thresholds = {
        **strictest,
        "materials": per_material,
        "familiarity": config.familiarity_threshold,
        "target_far": config.target_far,
    }
    return Sections(calibration, open_set, thresholds)


@dataclass(frozen=True)
class TextureData:
    """One material's training images' whole-frame texture features, for :func:`fit_texture`."""

    features: np.ndarray
    """N x :data:`~veriscope.device.pipeline.texture.FEATURE_SIZE`."""
    genuine: np.ndarray
    """N labels: 1.0 genuine, 0.0 counterfeit."""
    item: np.ndarray
    """N integers: which item each image shows."""


_LEAST_REGIONS_PER_LIMIT = 8
"""Fewest genuine regions of a larger image count that set their own texture limit."""


def fit_texture(
    config: TrainConfig, material: str, val: Sequence[ItemOutputs], data: TextureData | None
) -> texture.TextureStats | None:
    """A material's texture references, fitted on its genuine training images; each family's limit; whole-material
    references (:func:`fit_material_texture`); and a supervised head fitted on every training image. None with too
    little data.

    A limit is a high quantile of genuine regions' distances that the references never saw: validation items', and
    training items' against references refitted without them (``texture_folds`` folds). Twenty validation items
    alone set the tail too tight. There is one limit per number of images a region of the material needs
    (:func:`region_image_counts`): the mean of three frames strays less than that of two, and a limit set for two
    lets a three-image superfake through. Validation items carry only the fewest, so larger counts come from the
    folds.
    """
    if data is None:
        return None
    genuine = data.genuine > 0.5
    genuine_val = [e for e in val if e.item.material == material and e.item.genuine and len(e.texture) == len(e.raw)]
    if np.count_nonzero(genuine) < max(config.texture_min_images, 2) or not genuine_val:
        return None
    fitted = texture.fit_texture_stats(data.features[genuine], components=config.texture_components)
    counts = region_image_counts(config)[material]
    fewest = counts[0]
    # Per region size n: distances of genuine regions of n images the references never saw (for the fewest, of
    # items with fewer too, judged on all they have).
    distances: dict[int, list[tuple[float, ...]]] = {
        n: [
            texture.raw_distances(np.stack(e.texture[:n]), fitted)
            for e in genuine_val
            if len(e.texture) >= n or n == fewest
        ]
        for n in counts
    }
    items = np.unique(data.item[genuine])
    if len(items) >= 2 * config.texture_folds:
        for fold in range(config.texture_folds):
            left_out = items[fold :: config.texture_folds]
            kept = genuine & ~np.isin(data.item, left_out)
            refitted = texture.fit_texture_stats(data.features[kept], components=config.texture_components)
            for i in left_out:
                own = data.features[data.item == i]
                for n in counts:
                    # Each run of n of the item's images is a region (an item of four gives two of two).
                    last = len(own) - n if len(own) >= n or n != fewest else 0
                    for start in range(0, last + 1, n):
                        distances[n].append(texture.raw_distances(own[start : start + n], refitted))
    # From a handful of images a family's spread can be enormous; past the largest limit a bundle holds it rules
    # nothing out either way, so the limit stops there and the bundle still loads. A larger region's limit never
    # exceeds a smaller one's: more frames never make a region look less genuine.
    by_count: dict[int, list[float]] = {}
    z = texture_z(config)
    for n in counts:
        if n > fewest and len(distances[n]) < _LEAST_REGIONS_PER_LIMIT:
            continue  # too few to set it: regions of n images keep the looser limit of fewer
        quantiles = [min(calibrate.lognormal_quantile(d, z), MAX_DISTANCE_REF) for d in np.array(distances[n]).T]
        previous = by_count[max(by_count)] if by_count else quantiles
        by_count[n] = [min(q, p) for q, p in zip(quantiles, previous, strict=True)]
    extra = [{n: by_count[n][i] for n in by_count if n > fewest} for i in range(len(fitted.blocks))]
    fitted = fitted.with_limits(by_count[fewest], extra)
    fitted = replace(fitted, material=fit_material_texture(config, data))
    if genuine.all() or not genuine.any():
        return fitted
    weights, bias = calibrate.fit_logistic(data.features, data.genuine, l2=config.texture_head_l2)
    # Stored on standardised features, so the weights read as each feature's pull.
    centre, scale = data.features.mean(axis=0), np.maximum(data.features.std(axis=0), 1e-6)
    head = texture.TextureHead(
        mean=centre.astype(np.float32),
        std=scale.astype(np.float32),
        weights=(weights * scale).astype(np.float32),
        bias=float(bias + weights @ centre),
    )
    return replace(fitted, head=head)


def fit_material_texture(config: TrainConfig, data: TextureData) -> tuple[texture.TextureBlock, ...]:
    """A material's whole-material texture references: fitted on every training image of it, genuine and counterfeit,
    each family's limit the distance one frame stays within. Empty with too few items for the folds.

    A limit is ``material_texture_margin`` times a high quantile (``material_texture_quantile``, log-normal fit) of
    single frames' distances from references refitted without their item (``texture_folds`` folds by item). The
    references learn what the material's surfaces, every maker's, look like to the texture measurements, so a frame
    beyond a limit shows something else: a printed page, another material.
    """
    items = np.unique(data.item)
    if len(items) < 2 * config.texture_folds:
        return ()
    whole = texture.fit_texture_stats(data.features, components=config.texture_components)
    distances: list[tuple[float, ...]] = []
    for fold in range(config.texture_folds):
        left_out = np.isin(data.item, items[fold :: config.texture_folds])
        refitted = texture.fit_texture_stats(data.features[~left_out], components=config.texture_components)
        distances.extend(texture.raw_distances(f, refitted) for f in data.features[left_out])
    z = statistics.NormalDist().inv_cdf(config.material_texture_quantile)
    limits = [
        min(config.material_texture_margin * calibrate.lognormal_quantile(d, z), MAX_DISTANCE_REF)
        for d in np.array(distances).T
    ]
    return whole.with_limits(limits).blocks


def texture_section(stats: texture.TextureStats) -> dict[str, Any]:
    """The manifest's ``open_set.<material>.texture`` object for ``stats``."""

    def rounded(values: np.ndarray) -> list[Any]:
        # Six significant digits: far finer than the features' own noise, and a third of the manifest's size.
        result: list[Any] = np.vectorize(lambda v: float(f"{v:.6g}"), otypes=[float])(values).tolist()
        return result

    def block(b: texture.TextureBlock) -> dict[str, Any]:
        return {
            "mean": rounded(b.mean),
            "std": rounded(b.std),
            "components": rounded(b.components),
            "variances": rounded(b.variances),
            "shrinkage": b.shrinkage,
            "distance_ref": b.distance_ref,
            **({"limits_by_images": {str(n): v for n, v in b.limits_by_images}} if b.limits_by_images else {}),
        }

    return {
        "features": stats.features,
        "blocks": {b.name: block(b) for b in stats.blocks},
        **({"material": {b.name: block(b) for b in stats.material}} if stats.material else {}),
        **(
            {}
            if stats.head is None
            else {
                "head": {
                    "mean": rounded(stats.head.mean),
                    "std": rounded(stats.head.std),
                    "weights": rounded(stats.head.weights),
                    "bias": stats.head.bias,
                }
            }
        ),
    }


def _stats(mean: np.ndarray, std: np.ndarray, ref: float) -> Any:
    from veriscope.device.inference.bundle import OpenSetStats

    return OpenSetStats(mean=mean, std=std, distance_ref=ref)


def _evaluate_variant(
    config: TrainConfig,
    bundle: ModelBundle,
    val: Sequence[ItemOutputs],
    test: Sequence[ItemOutputs],
    held_out: Sequence[ItemOutputs],
    outliers: Sequence[RawOutputs],
) -> dict[str, Any]:
    return {
        "validation": evaluate.item_metrics(bundle, val, config.held_out_sources),
        "test": evaluate.item_metrics(bundle, [*test, *held_out], config.held_out_sources),
        "open_set": evaluate.familiarity_metrics(bundle, test, outliers),
    }


def run(config: TrainConfig) -> TrainResult:
    """Train, export, calibrate, evaluate and write the bundle to ``config.bundle_dir``.

    Raises ``FileNotFoundError`` when the data set is missing and
    :class:`~veriscope.device.errors.ModelError` if the written bundle fails the
    device's own checks.
    """
    tf = _configure_tensorflow(config)
    from veriscope.training import export

    materials = list(config.materials)
    classes = (*config.materials, OUTLIER_CLASS)
    items = scan(config.data_root, materials)
    split: Split = split_items(
        items,
        held_out_sources=config.held_out_sources,
        val_fraction=config.val_fraction,
        test_fraction=config.test_fraction,
        seed=config.seed,
    )
    _log(f"items: {split.counts()}")
    if config.reuse_checkpoint and config.checkpoint is not None and config.checkpoint.exists():
        net = tf.keras.models.load_model(config.checkpoint, compile=False)
        record = json.loads(config.checkpoint.with_suffix(".json").read_text())
        train_seconds, final_loss = float(record["train_seconds"]), float(record["final_loss"])
        _log(f"loaded the trained network from {config.checkpoint}")
    else:
        net, train_seconds, final_loss = _fit(config, split, materials, classes)
        if config.checkpoint is not None:
            config.checkpoint.parent.mkdir(parents=True, exist_ok=True)
            net.save(config.checkpoint)
            record = {"train_seconds": train_seconds, "final_loss": final_loss}
            config.checkpoint.with_suffix(".json").write_text(json.dumps(record))

    def representative() -> Iterator[np.ndarray]:
        for path in _spread(split.train, config.representative_images, config.seed):
            yield frame_to_tiles(load_image(path), config.tiling)

    model_bytes = export.to_tflite_int8(net, representative(), config.tiling.tile_px)
    _log(f"int8 model: {len(model_bytes)} bytes")

    work = Path(tempfile.mkdtemp(prefix="veriscope-bundle-"))
    try:
        (work / MODEL_FILE).write_bytes(model_bytes)
        placeholder = Sections.placeholder(materials, config.embedding_size)
        quantisation = export.input_quantisation(work / MODEL_FILE)
        base = build_manifest(
            config, model_bytes=model_bytes, input_quantisation=quantisation, classes=classes, sections=placeholder
        )
        analyzer = Analyzer(provisional_bundle(work, base), num_threads=config.threads)

        t = config.tiling.tile_px
        # One traced graph: calling the Keras model eagerly costs far more than the model itself.
        predict = tf.function(
            lambda x: net(x, training=False), input_signature=[tf.TensorSpec([None, t, t, 3], tf.float32)]
        )

        def float_runner(tiles: np.ndarray) -> RawOutputs:
            m, a, e = (np.asarray(v, dtype=np.float32) for v in predict(tiles.astype(np.float32)))
            return RawOutputs(m, a, e)

        runners: dict[str, Runner] = {"float": float_runner, "int8": analyzer.run_tiles}
        open_paths = _spread(split.train, config.open_set_images, config.seed + 1)
        by_path = {p: item.material for item in split.train for p in item.images}
        genuine_paths = _spread([i for i in split.train if i.genuine], config.genuine_images, config.seed + 2)
        frames = outlier_frames(8 if config.smoke else 24, config.seed)
        textures = TextureCache(config)
        _log("measuring whole-frame texture of the training images")
        texture_train = {}
        for m in materials:
            own = [i for i in split.train if i.material == m]
            texture_train[m] = TextureData(
                features=np.stack([textures(p) for i in own for p in i.images]),
                genuine=np.array([1.0 if i.genuine else 0.0 for i in own for _ in i.images]),
                item=np.array([n for n, i in enumerate(own) for _ in i.images]),
            )
        variants: dict[str, dict[str, Any]] = {}
        sections: dict[str, Sections] = {}
        judged: dict[str, tuple[ModelBundle, list[ItemOutputs]]] = {}
        for variant, runner in runners.items():
            _log(f"evaluating the {variant} model")
            open_raw: dict[str, list[RawOutputs]] = {m: [] for m in materials}
            for path in open_paths:
                open_raw[by_path[path]].append(runner(frame_to_tiles(load_image(path), config.tiling)))
            val = _outputs(split.val, runner, config, textures)
            test = _outputs(split.test, runner, config, textures)
            held = _outputs(split.held_out, runner, config, textures)
            genuine_raw: dict[str, list[RawOutputs]] = {m: [] for m in materials}
            for path in genuine_paths:
                genuine_raw[by_path[path]].append(runner(frame_to_tiles(load_image(path), config.tiling)))
            fitted = fit_sections(config, work, base, val, open_raw, genuine_raw, texture_train)
            bundle = provisional_bundle(work, {**base, **_section_fields(fitted)})
            outliers = [runner(frame_to_tiles(f, config.tiling)) for f in frames]
            variants[variant] = _evaluate_variant(config, bundle, val, test, held, outliers)
            variants[variant]["thresholds"] = fitted.thresholds
            sections[variant] = fitted
            judged[variant] = (bundle, [*test, *held])

        _log("plotting")
        plot_files = _plots(work, judged, config)
        macs = count_macs(work / MODEL_FILE)
        macs_per_image = macs.total * config.tiling.tile_count

        seconds_per_image, texture_seconds = _time_inference(analyzer, config)
        training = {
            "data": _dataset_info(config.data_root),
            "split": split.counts(),
            "epochs": config.epochs,
            "steps_per_epoch": config.steps_per_epoch,
            "batch_size": config.batch_size,
            "parameters": int(net.count_params()),
            "final_loss": round(final_loss, 4),
            "train_seconds": round(train_seconds, 1),
            "seed": config.seed,
            "smoke": config.smoke,
            "images_per_evaluation_item": scan_images(config),
            "genuine_limits": {
                "embedding_quantile": round(statistics.NormalDist().cdf(config.genuine_distance_z), 3),
                "texture_quantile": round(statistics.NormalDist().cdf(texture_z(config)), 4),
                "texture_item_budget": None if config.texture_distance_z is not None else config.texture_item_budget,
                "texture_region_images": region_image_counts(config),
                "texture_families": [name for name, _ in texture.FAMILIES],
            },
            "material_texture_quantile": config.material_texture_quantile,
            "material_texture_margin": config.material_texture_margin,
            "machine": f"{platform.machine()} ({config.threads} threads)",
            "tensorflow": tf.__version__,
        }
        metrics = {
            "float": variants["float"],
            "int8": variants["int8"],
            "model_bytes": len(model_bytes),
            "inference_ms_per_2028x1520_frame": round(seconds_per_image * 1000.0, 2),
            "texture_ms_per_2028x1520_frame": round(texture_seconds * 1000.0, 2),
            "macs_per_tile": macs.total,
            "macs_per_image": macs_per_image,
            "pi4_estimate_ms_per_image": round(pi4_estimate_ms(macs_per_image), 2),
        }
        manifest = build_manifest(
            config,
            model_bytes=model_bytes,
            input_quantisation=quantisation,
            classes=classes,
            sections=sections["int8"],
            training=training,
            metrics=metrics,
        )
        config.bundle_dir.mkdir(parents=True, exist_ok=True)
        for stale in config.bundle_dir.glob("*.png"):
            stale.unlink()
        for name in plot_files:
            shutil.copyfile(work / name, config.bundle_dir / name)
    finally:
        shutil.rmtree(work, ignore_errors=True)
    text = card.render(manifest, plots=plot_files)
    bundle = write_bundle(config.bundle_dir, manifest, model_bytes, text)
    _log(f"wrote {config.bundle_dir}")
    return TrainResult(bundle=bundle, metrics=metrics, train_seconds=train_seconds)


def _fit(config: TrainConfig, split: Split, materials: list[str], classes: tuple[str, ...]) -> tuple[Any, float, float]:
    """Build and train the network; returns it, the seconds taken and the final loss."""
    from veriscope.training import data, model
    from veriscope.training._tf import tf

    n_genuine = sum(len(i.images) for i in split.train if i.genuine)
    n_fake = sum(len(i.images) for i in split.train if not i.genuine)
    net = model.build(
        config.tiling.tile_px,
        len(classes),
        len(materials),
        embedding_size=config.embedding_size,
        width=config.width_multiplier,
    )
    trainable = model.trainable_view(net)
    total_steps = config.epochs * config.steps_per_epoch
    schedule = tf.keras.optimizers.schedules.CosineDecay(config.learning_rate, total_steps, alpha=0.05)
    trainable.compile(
        optimizer=tf.keras.optimizers.Adam(schedule),
        loss={
            "material_logits": tf.keras.losses.SparseCategoricalCrossentropy(from_logits=True),
            "authenticity_logits": model.masked_binary_crossentropy(n_fake / max(n_genuine, 1)),
        },
    )
    stream = data.training_dataset(split.train, materials, config)
    _log(f"training {net.count_params()} parameters for {config.epochs} x {config.steps_per_epoch} steps")
    started = time.perf_counter()
    history = trainable.fit(stream, epochs=config.epochs, steps_per_epoch=config.steps_per_epoch, verbose=2)
    seconds = time.perf_counter() - started
    _log(f"trained in {seconds:.0f} s")
    return net, seconds, float(history.history["loss"][-1])


def _plots(
    out: Path, judged: Mapping[str, tuple[ModelBundle, list[ItemOutputs]]], config: TrainConfig
) -> dict[str, str]:
    """Write the model card's PNG plots into ``out``; returns {file name: caption}."""
    from veriscope.training import plots

    files: dict[str, str] = {}
    bundle, entries = judged["int8"]
    scores = evaluate.item_scores(bundle, entries)
    curves = []
    for m in config.materials:
        mine = [x for x in scores if x.material == m]
        if any(x.genuine for x in mine) and any(not x.genuine for x in mine):
            high = bundle.thresholds.for_material(m).abstain_high
            curves.append(plots.RocCurve(m, [x.score for x in mine], [x.genuine for x in mine], high))
    if curves:
        plots.roc_curves_png(out / "roc.png", curves, title="Per item, int8: test and held-out items")
        files["roc.png"] = (
            "ROC per material (int8, test and held-out items): genuine items verified against counterfeits "
            "accepted; the dot is the operating point, the top of the abstain band."
        )
    for m in config.materials:
        by_source: dict[str, list[float]] = {}
        for x in scores:
            if x.material == m:
                by_source.setdefault(x.source, []).append(x.score)
        if by_source:
            t = bundle.thresholds.for_material(m)
            name = f"scores-{m}.png"
            plots.score_histograms_png(
                out / name,
                dict(sorted(by_source.items())),
                threshold=t.item,
                abstain_high=t.abstain_high,
                title=f"{m}: item scores per source (int8, test and held-out)",
            )
            files[name] = f"Item scores of {m} per source, with the threshold and the abstain band."
    images = [
        (analysis.score, entry.item.genuine)
        for entry, item_analyses in zip(entries, evaluate.analyses(bundle, entries), strict=True)
        for analysis in item_analyses
    ]
    if images:
        plots.reliability_png(
            out / "reliability.png",
            [p for p, _ in images],
            [g for _, g in images],
            title="Image scores against the share of genuine images (int8, test and held-out)",
        )
        files["reliability.png"] = (
            "Reliability of calibrated image scores: predicted probability of genuine against the observed share."
        )
    return files


def _dataset_info(root: Path) -> dict[str, Any]:
    """Where the data came from: the simulator's dataset.json summary when there is one."""
    info: dict[str, Any] = {"root": root.name}
    for name, keys in (
        ("dataset.json", ("generator", "jpeg_quality_range")),
        ("training-data.json", ("simulator_sha256", "seed", "image_width", "genuine_items", "counterfeit_items")),
    ):
        try:
            summary = json.loads((root / name).read_text())
        except (OSError, ValueError):
            continue
        info.update({key: summary[key] for key in keys if key in summary})
    return info


def _section_fields(sections: Sections) -> dict[str, Any]:
    return {"calibration": sections.calibration, "open_set": sections.open_set, "thresholds": sections.thresholds}


def _time_inference(analyzer: Analyzer, config: TrainConfig) -> tuple[float, float]:
    """Median seconds to tile and run one full 2028 x 1520 frame (single call, the device's path), and to measure
    the same frame's whole-frame texture at the working scale."""
    rng = np.random.default_rng(config.seed)
    frame = rng.integers(0, 256, size=(1520, 2028, 3), dtype=np.uint8)
    model, measure = [], []
    for _ in range(3 if config.smoke else 15):
        started = time.perf_counter()
        analyzer.run_tiles(analyzer.tiles(frame))
        between = time.perf_counter()
        texture.texture_features(to_work_scale(frame, config.tiling))
        model.append(between - started)
        measure.append(time.perf_counter() - between)
    return float(np.median(model)), float(np.median(measure))
