"""Model bundles: a directory holding ``model.tflite``, ``manifest.json`` and ``MODEL_CARD.md``.

:func:`load_bundle` reads and checks a bundle: the manifest's schema and types,
the cross-references between its sections, and the model file's size and
SHA-256. Any fault raises :class:`ModelError` naming the bad field or file.

The manifest (``format_version`` 1) holds:

- ``name``, ``version`` (semver), ``created`` (ISO 8601).
- ``model``: ``file``, ``sha256``, ``size_bytes`` of the TFLite file.
- ``input``: the signature input ``name``, ``tile_px``, ``channels``, ``dtype``
  (``uint8`` or ``int8``) and its quantisation ``scale`` and ``zero_point``
  (real pixel value 0..255 = scale * (q - zero_point)).
- ``preprocessing``: ``work_width_px``, ``tile_px``, ``grid_rows``, ``grid_cols``
  (see :mod:`veriscope.device.inference.tiling`).
- ``outputs``: the ``signature`` and the layout of its three outputs:
  ``material_logits.classes`` (the materials, then any outlier classes),
  ``authenticity_logits.materials`` (one genuine-vs-counterfeit logit per material)
  and ``embedding.size``.
- ``materials``, ``lighting`` (channels the model was trained under).
- ``calibration``: per material, ``slope`` and ``intercept`` mapping the mean tile
  authenticity logit of an image to a calibrated logit.
- ``open_set``: per material, embedding ``mean`` and ``std`` and the normalised
  distance ``distance_ref`` at which embedding familiarity falls to one half;
  optionally ``image`` (the same for images' mean tile embeddings) and
  ``genuine`` (genuine images' mean embeddings, with the farthest distance a
  genuine region reaches) and ``texture`` (genuine whole-frame texture
  references, see :mod:`veriscope.device.pipeline.texture`: the ``features``
  layout and ``blocks``, one per family of measurements, each with ``mean``,
  ``std``, ``components``, ``variances``, ``shrinkage`` and its genuine limit
  ``distance_ref``, with optional tighter ``limits_by_images`` for regions of
  more images, such as ``{"3": 1.4}``; optionally a supervised ``head`` with
  ``mean``, ``std``, ``weights`` and ``bias``, whose score ``calibration.<material>.texture_slope``
  weighs into each image's calibrated logit; optionally ``material``, blocks of
  the same form per family fitted on every training image of the material,
  genuine and counterfeit, whose ``distance_ref`` is the distance one frame of
  the material stays within: beyond it a frame is unfamiliar).
- ``thresholds``: ``item`` (calibrated score chosen for ``target_far``),
  ``abstain_band`` ``[low, high]`` around it (AUTHENTIC needs a score at or
  above ``high``), optional ``materials`` with an ``item`` and ``abstain_band``
  per material that overrides them, and ``familiarity`` (the least image
  familiarity accepted).
- ``quality`` (optional): overrides of the quality gate's thresholds (names as
  in :data:`veriscope.device.pipeline.quality.DEFAULT_THRESHOLDS`), for example
  ``{"min_sharpness": 0.0015, "lighting": {"uv": {"min_mean_level": 0.1}},
  "materials": {"woven-fabric": {"min_sharpness": 0.003}}}``: numbers at the top
  apply to every frame, ``lighting`` per channel (``white_ring``, ``raking``,
  ``uv``) and ``materials`` per material of the bundle, the most specific
  winning (see :meth:`ModelBundle.quality_overrides`).
- ``item_types``: what the model can authenticate, each with ``name``,
  ``display_name`` and ``regions`` (``name``, ``material``, ``min_images``, ``hint``).
- ``training``, ``held_out_sources``, ``metrics``: provenance, kept as given.
"""

from __future__ import annotations

import hashlib
import json
import re
from collections.abc import Callable, Mapping
from dataclasses import dataclass, field
from datetime import datetime
from pathlib import Path
from typing import Any, TypeVar

import numpy as np
import numpy.typing as npt

from veriscope.device.errors import InvalidArgument, ModelError, NotFound
from veriscope.device.inference._fields import Fields, as_float
from veriscope.device.inference.tiling import Tiling
from veriscope.device.pipeline.quality import DEFAULT_THRESHOLDS
from veriscope.device.pipeline.texture import (
    FAMILIES,
    FEATURE_SET,
    FEATURE_SIZE,
    TextureBlock,
    TextureHead,
    TextureStats,
)
from veriscope.device.types import Lighting

FORMAT_VERSION = 1
"""The manifest format this loader reads."""

MANIFEST_FILE = "manifest.json"
MAX_MANIFEST_BYTES = 4 * 1024 * 1024
MAX_MODEL_BYTES = 64 * 1024 * 1024

_SEMVER = re.compile(r"^(0|[1-9]\d*)\.(0|[1-9]\d*)\.(0|[1-9]\d*)(?:-[0-9A-Za-z.-]+)?(?:\+[0-9A-Za-z.-]+)?$")
_SHA256 = re.compile(r"^[0-9a-f]{64}$")
_NAME = re.compile(r"^[a-z0-9][a-z0-9._-]{0,63}$")
_INPUT_DTYPES = {"uint8": np.uint8, "int8": np.int8}
_T = TypeVar("_T")


MAX_DISTANCE_REF = 1e6
"""Largest genuine-distance limit a bundle may hold; a family this loose rules nothing out."""

_MAX_REGION_IMAGES = 100
"""Most images a region of an item type may require (and largest image count a texture limit may name)."""


@dataclass(frozen=True)
class RegionSpec:
    """One region of an item type that a scan must image."""

    name: str
    """Stable region name, for example "canvas"."""
    material: str
    """The material the region is made of; one of the bundle's materials."""
    min_images: int
    """Quality-passing images the region needs before a verdict."""
    hint: str
    """Where to place the scanner, for the person holding it."""


@dataclass(frozen=True)
class ItemTypeSpec:
    """An item type the model can authenticate, with the regions a scan covers."""

    name: str
    """Stable item type name, for example "tote-classic"."""
    display_name: str
    """Human-readable name."""
    regions: tuple[RegionSpec, ...]
    """The regions to image, in scan order."""

    def region(self, name: str) -> RegionSpec:
        """The region called ``name``. Raises :class:`InvalidArgument` when there is none."""
        for region in self.regions:
            if region.name == name:
                return region
        known = ", ".join(r.name for r in self.regions)
        raise InvalidArgument(f"item type {self.name!r} has no region {name!r}; its regions: {known}")


@dataclass(frozen=True)
class InputSpec:
    """The model's input tensor."""

    name: str
    """Input name in the signature."""
    tile_px: int
    """Tile side in pixels."""
    channels: int
    """Colour channels (3, RGB)."""
    dtype: str
    """"uint8" or "int8"."""
    scale: float
    """Quantisation scale: pixel value = scale * (q - zero_point)."""
    zero_point: int
    """Quantisation zero point."""

    @property
    def numpy_dtype(self) -> type[np.integer[Any]]:
        """The numpy type of the input tensor."""
        return _INPUT_DTYPES[self.dtype]


@dataclass(frozen=True)
class OutputSpec:
    """Names and layout of the model's signature outputs."""

    signature: str
    """Signature key of the model, for example "serving_default"."""
    material_classes: tuple[str, ...]
    """Classes of the ``material_logits`` output: the materials, then outlier classes."""
    authenticity_materials: tuple[str, ...]
    """Material of each column of ``authenticity_logits``."""
    embedding_size: int
    """Width of the ``embedding`` output."""


@dataclass(frozen=True)
class Calibration:
    """Maps an image's mean tile authenticity logit z (and its texture score t) to a calibrated logit:
    slope * z + texture_slope * t + intercept."""

    slope: float
    intercept: float
    texture_slope: float = 0.0
    """Weight of the supervised texture score (:class:`~veriscope.device.pipeline.texture.TextureHead`); 0 without
    one."""


@dataclass(frozen=True)
class OpenSetStats:
    """Embedding statistics of one material's training tiles, for the familiarity score."""

    mean: npt.NDArray[np.float32]
    """Per-dimension mean embedding."""
    std: npt.NDArray[np.float32]
    """Per-dimension standard deviation, > 0."""
    distance_ref: float
    """Normalised distance at which embedding familiarity is one half."""
    image: OpenSetStats | None = None
    """Statistics of whole images' mean tile embeddings of the material: an image whose mean lies far out
    is unfamiliar even when its tiles one by one are not. None in bundles without them."""
    genuine: OpenSetStats | None = None
    """Statistics of genuine images' mean tile embeddings; ``distance_ref`` is the genuine limit: the distance
    from them that genuine regions' mean embeddings stay within (a high quantile). None in bundles without them."""
    texture: TextureStats | None = None
    """Genuine whole-frame texture references; None in bundles without them."""


@dataclass(frozen=True)
class ScoreThreshold:
    """Where scores of one material stop counting as genuine, on the 0..1 scale."""

    item: float
    """Calibrated score chosen for the bundle's target false-accept rate on validation items."""
    abstain_low: float
    """Lower edge of the abstain band (<= item)."""
    abstain_high: float
    """Upper edge of the abstain band (>= item); AUTHENTIC needs a score at or above it."""


@dataclass(frozen=True)
class Thresholds:
    """Decision thresholds, all on the 0..1 scale."""

    item: float
    """Default calibrated score threshold, chosen for ``target_far`` on validation items."""
    abstain_low: float
    """Lower edge of the default abstain band (<= item)."""
    abstain_high: float
    """Upper edge of the default abstain band (>= item); AUTHENTIC needs a score at or above it."""
    familiarity: float
    """The least image familiarity accepted as the expected material."""
    target_far: float
    """False-accept rate the item thresholds were chosen for."""
    per_material: Mapping[str, ScoreThreshold] = field(default_factory=dict)
    """Thresholds of materials whose counterfeits need their own (from ``thresholds.materials``)."""

    def for_material(self, material: str) -> ScoreThreshold:
        """The score threshold that applies to regions of ``material``."""
        return self.per_material.get(material) or ScoreThreshold(self.item, self.abstain_low, self.abstain_high)


@dataclass(frozen=True)
class ModelBundle:
    """A loaded, checked model bundle. Build it with :func:`load_bundle`."""

    path: Path
    """The bundle directory."""
    manifest: Mapping[str, Any]
    """The parsed manifest, as read."""
    name: str
    version: str
    created: datetime
    model_path: Path
    """The ``.tflite`` file."""
    sha256: str
    """Hex SHA-256 of the model file."""
    size_bytes: int
    """Size of the model file in bytes."""
    input: InputSpec
    tiling: Tiling
    outputs: OutputSpec
    materials: tuple[str, ...]
    lighting: tuple[str, ...]
    """Lighting channel names the model needs, for example ("white_ring",)."""
    calibration: Mapping[str, Calibration]
    open_set: Mapping[str, OpenSetStats]
    thresholds: Thresholds
    item_types: tuple[ItemTypeSpec, ...]
    quality_thresholds: Mapping[str, float] = field(default_factory=dict)
    """Overrides of the quality gate's thresholds for every frame; may be empty."""
    quality_lighting: Mapping[str, Mapping[str, float]] = field(default_factory=dict)
    """Overrides per lighting channel name ("white_ring", "raking", "uv"); may be empty."""
    quality_materials: Mapping[str, Mapping[str, float]] = field(default_factory=dict)
    """Overrides per material, for example a stricter ``min_sharpness`` for a fine weave; may be empty."""
    held_out_sources: tuple[str, ...] = ()
    """Counterfeit sources kept out of training, reported separately in ``metrics``."""

    def quality_overrides(self, material: str | None = None, lighting: str | None = None) -> dict[str, float]:
        """The quality gate overrides for a frame of ``material`` under ``lighting`` (either None: not known).

        The bundle's global overrides, then those of the lighting channel, then
        those of the material; pass the result to
        :func:`veriscope.device.pipeline.quality.assess` with the same lighting.
        """
        merged = dict(self.quality_thresholds)
        if lighting is not None:
            merged.update(self.quality_lighting.get(str(lighting), {}))
        if material is not None:
            merged.update(self.quality_materials.get(material, {}))
        return merged

    def item_type(self, name: str) -> ItemTypeSpec:
        """The item type called ``name``. Raises :class:`NotFound` when the bundle has none."""
        for spec in self.item_types:
            if spec.name == name:
                return spec
        raise NotFound(f"model {self.name} {self.version} knows no item type {name!r}")


def sha256_file(path: Path) -> str:
    """Hex SHA-256 of a file's contents."""
    digest = hashlib.sha256()
    with path.open("rb") as f:
        for chunk in iter(lambda: f.read(1 << 20), b""):
            digest.update(chunk)
    return digest.hexdigest()


def load_bundle(path: str | Path) -> ModelBundle:
    """Read and check the bundle in directory ``path``.

    Raises :class:`ModelError` naming the field or file when the directory or
    manifest is missing or unreadable, a field is missing or of the wrong type
    or range, sections disagree (an unknown material, mismatched sizes), or the
    model file's size or SHA-256 differs from the manifest.
    """
    directory = Path(path)
    manifest_path = directory / MANIFEST_FILE
    try:
        if not directory.is_dir():
            raise ModelError(f"model bundle {directory} is not a directory")
        if manifest_path.stat().st_size > MAX_MANIFEST_BYTES:
            raise ModelError(f"{manifest_path} is larger than {MAX_MANIFEST_BYTES} bytes")
        text = manifest_path.read_text(encoding="utf-8")
    except OSError as exc:
        raise ModelError(f"cannot read {manifest_path}: {exc.strerror or exc}") from exc
    except UnicodeDecodeError as exc:
        raise ModelError(f"{manifest_path} is not UTF-8: {exc}") from exc
    manifest = parse_manifest(text, source=str(manifest_path))
    bundle = _build(directory, manifest, source=str(manifest_path))
    _check_model_file(bundle)
    return bundle


def parse_manifest(text: str, *, source: str = MANIFEST_FILE) -> dict[str, Any]:
    """Parse manifest JSON text into a dict, checking only that it is a JSON object.

    Raises :class:`ModelError` for invalid JSON (including NaN and infinities).
    """

    def reject_constant(name: str) -> None:
        raise ValueError(f"{name} is not allowed")

    try:
        value = json.loads(text, parse_constant=reject_constant)
    except (ValueError, RecursionError) as exc:
        raise ModelError(f"{source} is not valid JSON: {exc}") from None
    if not isinstance(value, dict):
        raise ModelError(f"{source} must hold a JSON object, got {type(value).__name__}")
    return value


def bundle_from_manifest(directory: Path, manifest: Mapping[str, Any]) -> ModelBundle:
    """Check a manifest's fields and build the bundle, without touching the model file.

    Used by :func:`load_bundle` and by tools that write bundles. Raises
    :class:`ModelError` naming the first bad field.
    """
    return _build(directory, manifest, source=str(directory / MANIFEST_FILE))


def _build(directory: Path, manifest: Mapping[str, Any], *, source: str) -> ModelBundle:
    top = Fields(manifest, "", source=source)
    version = top.integer("format_version")
    if version != FORMAT_VERSION:
        raise top.fail("format_version", f"is {version}; this device reads format {FORMAT_VERSION}")
    name = top.text("name")
    if not _NAME.match(name):
        raise top.fail("name", "must be lower-case letters, digits, '.', '_' or '-', at most 64 long")
    semver = top.text("version")
    if not _SEMVER.match(semver):
        raise top.fail("version", f"must be a semantic version like 1.2.3, got {semver!r:.80}")
    try:
        created = datetime.fromisoformat(top.text("created"))
    except ValueError:
        raise top.fail("created", "must be an ISO 8601 date-time") from None

    model = top.obj("model")
    model_file = model.text("file")
    if Path(model_file).name != model_file or model_file in (".", ".."):
        raise model.fail("file", f"must be a file name inside the bundle, got {model_file!r:.80}")
    sha = model.text("sha256")
    if not _SHA256.match(sha):
        raise model.fail("sha256", "must be 64 lower-case hex digits")
    size_bytes = model.integer("size_bytes", lo=1, hi=MAX_MODEL_BYTES)

    materials = tuple(top.texts("materials"))
    lighting = tuple(top.texts("lighting"))
    input_spec, tiling = _input_and_tiling(top)
    outputs = _outputs(top, materials)
    calibration = _per_material(top, "calibration", materials, _calibration)
    open_set = _per_material(top, "open_set", materials, lambda f: _open_set(f, outputs.embedding_size))
    thresholds = _thresholds(top.obj("thresholds"), materials)
    item_types = _item_types(top, set(materials))
    quality, quality_lighting, quality_materials = _quality(top, materials)
    held_out = tuple(top.texts("held_out_sources", min_len=0)) if top.has("held_out_sources") else ()
    for optional in ("training", "metrics"):
        if top.has(optional):
            top.obj(optional)
    return ModelBundle(
        path=directory,
        manifest=manifest,
        name=name,
        version=semver,
        created=created,
        model_path=directory / model_file,
        sha256=sha,
        size_bytes=size_bytes,
        input=input_spec,
        tiling=tiling,
        outputs=outputs,
        materials=materials,
        lighting=lighting,
        calibration=calibration,
        open_set=open_set,
        thresholds=thresholds,
        item_types=item_types,
        quality_thresholds=quality,
        quality_lighting=quality_lighting,
        quality_materials=quality_materials,
        held_out_sources=held_out,
    )


def _input_and_tiling(top: Fields) -> tuple[InputSpec, Tiling]:
    inp = top.obj("input")
    dtype = inp.text("dtype")
    if dtype not in _INPUT_DTYPES:
        raise inp.fail("dtype", f"must be one of {sorted(_INPUT_DTYPES)}, got {dtype!r:.80}")
    limits = np.iinfo(_INPUT_DTYPES[dtype])
    spec = InputSpec(
        name=inp.text("name"),
        tile_px=inp.integer("tile_px", lo=8, hi=1024),
        channels=inp.integer("channels", lo=3, hi=3),
        dtype=dtype,
        scale=inp.number("scale", lo=1e-6, hi=1e6),
        zero_point=inp.integer("zero_point", lo=int(limits.min), hi=int(limits.max)),
    )
    pre = top.obj("preprocessing")
    tile_px = pre.integer("tile_px", lo=8, hi=1024)
    if tile_px != spec.tile_px:
        raise pre.fail("tile_px", f"is {tile_px} but input.tile_px is {spec.tile_px}")
    try:
        tiling = Tiling(
            work_width_px=pre.integer("work_width_px", lo=8, hi=16384),
            tile_px=tile_px,
            grid_rows=pre.integer("grid_rows", lo=1, hi=32),
            grid_cols=pre.integer("grid_cols", lo=1, hi=32),
        )
    except InvalidArgument as exc:
        raise ModelError(f"{top.source}: preprocessing: {exc}") from None
    return spec, tiling


def _outputs(top: Fields, materials: tuple[str, ...]) -> OutputSpec:
    out = top.obj("outputs")
    classes = tuple(out.obj("material_logits").texts("classes"))
    if classes[: len(materials)] != materials:
        raise out.fail("material_logits.classes", f"must start with the materials {list(materials)}")
    auth = tuple(out.obj("authenticity_logits").texts("materials"))
    if auth != materials:
        raise out.fail("authenticity_logits.materials", f"must equal the materials {list(materials)}")
    return OutputSpec(
        signature=out.text("signature"),
        material_classes=classes,
        authenticity_materials=auth,
        embedding_size=out.obj("embedding").integer("size", lo=1, hi=4096),
    )


def _per_material(top: Fields, key: str, materials: tuple[str, ...], read: Callable[[Fields], _T]) -> dict[str, _T]:
    section = top.obj(key)
    extra = sorted(set(section.data) - set(materials))
    if extra:
        raise section.fail(extra[0], "names a material the bundle does not have")
    return {m: read(section.obj(m)) for m in materials}


def _calibration(f: Fields) -> Calibration:
    texture_slope = f.number("texture_slope", lo=0.0, hi=1e6) if f.has("texture_slope") else 0.0
    return Calibration(
        slope=f.number("slope", lo=1e-6, hi=1e6),
        intercept=f.number("intercept", lo=-1e6, hi=1e6),
        texture_slope=texture_slope,
    )


def _open_set(f: Fields, size: int) -> OpenSetStats:
    mean = np.asarray(f.numbers("mean", length=size), dtype=np.float32)
    std = np.asarray(f.numbers("std", length=size), dtype=np.float32)
    if not np.all(std > 0) or not np.all(np.isfinite(std)) or not np.all(np.isfinite(mean)):
        raise f.fail("std", "must hold positive numbers within float32 range")
    image = _open_set(f.obj("image"), size) if f.has("image") else None
    genuine = _open_set(f.obj("genuine"), size) if f.has("genuine") else None
    texture = _texture(f.obj("texture")) if f.has("texture") else None
    ref = f.number("distance_ref", lo=1e-6, hi=MAX_DISTANCE_REF)
    return OpenSetStats(mean=mean, std=std, distance_ref=ref, image=image, genuine=genuine, texture=texture)


def _texture(f: Fields) -> TextureStats:
    name = f.text("features")
    if name != FEATURE_SET:
        raise f.fail("features", f"is {name!r}; this device measures texture as {FEATURE_SET!r}")
    blocks = f.obj("blocks")
    names = [family for family, _ in FAMILIES]
    if sorted(blocks.data) != sorted(names):
        raise f.fail("blocks", f"must hold exactly {', '.join(names)}, got {', '.join(sorted(blocks.data)) or 'none'}")
    head = _texture_head(f.obj("head")) if f.has("head") else None
    material: tuple[TextureBlock, ...] = ()
    if f.has("material"):
        whole = f.obj("material")
        if sorted(whole.data) != sorted(names):
            raise f.fail(
                "material", f"must hold exactly {', '.join(names)}, got {', '.join(sorted(whole.data)) or 'none'}"
            )
        material = tuple(_texture_block(whole.obj(family), family, part.stop - part.start) for family, part in FAMILIES)
        if any(b.limits_by_images for b in material):
            raise f.fail("material", "limits are per frame: its blocks take no limits_by_images")
    return TextureStats(
        name,
        tuple(_texture_block(blocks.obj(family), family, part.stop - part.start) for family, part in FAMILIES),
        head,
        material,
    )


def _texture_head(f: Fields) -> TextureHead:
    mean = np.asarray(f.numbers("mean", length=FEATURE_SIZE), dtype=np.float32)
    std = np.asarray(f.numbers("std", length=FEATURE_SIZE), dtype=np.float32)
    weights = np.asarray(f.numbers("weights", length=FEATURE_SIZE), dtype=np.float32)
    if not (
        np.all(std > 0) and np.all(np.isfinite(std)) and np.all(np.isfinite(mean)) and np.all(np.isfinite(weights))
    ):
        raise f.fail("std", "must hold positive numbers, and mean and weights finite ones, within float32 range")
    return TextureHead(mean=mean, std=std, weights=weights, bias=f.number("bias", lo=-1e6, hi=1e6))


def _texture_block(f: Fields, name: str, size: int) -> TextureBlock:
    mean = np.asarray(f.numbers("mean", length=size), dtype=np.float32)
    std = np.asarray(f.numbers("std", length=size), dtype=np.float32)
    if not (np.all(std > 0) and np.all(np.isfinite(std)) and np.all(np.isfinite(mean))):
        raise f.fail("std", "must hold positive numbers within float32 range")
    rows = f.items("components", min_len=1, max_len=size)
    components = np.asarray(
        [
            [as_float(v, f"{f.where('components')}[{i}][{j}]", f.source) for j, v in enumerate(_row(f, i, row, size))]
            for i, row in enumerate(rows)
        ],
        dtype=np.float32,
    )
    variances = np.asarray(f.numbers("variances", length=len(rows)), dtype=np.float32)
    if not (np.all(np.isfinite(components)) and np.all(np.isfinite(variances)) and np.all(variances >= 0)):
        raise f.fail("variances", "must hold non-negative numbers within float32 range")
    return TextureBlock(
        name=name,
        mean=mean,
        std=std,
        components=components,
        variances=variances,
        shrinkage=f.number("shrinkage", lo=1e-6, hi=1.0),
        distance_ref=f.number("distance_ref", lo=1e-6, hi=MAX_DISTANCE_REF),
        limits_by_images=_limits_by_images(f),
    )


def _limits_by_images(f: Fields) -> tuple[tuple[int, float], ...]:
    """The optional ``limits_by_images`` object: image counts ("3") to limits."""
    if not f.has("limits_by_images"):
        return ()
    limits = f.obj("limits_by_images")
    pairs = []
    for key in limits.data:
        if not (isinstance(key, str) and key.isascii() and key.isdigit() and 1 <= int(key) <= _MAX_REGION_IMAGES):
            raise f.fail("limits_by_images", f"keys must be image counts 1..{_MAX_REGION_IMAGES}, got {key!r:.40}")
        pairs.append((int(key), limits.number(key, lo=1e-6, hi=MAX_DISTANCE_REF)))
    return tuple(sorted(pairs))


def _row(f: Fields, index: int, row: object, size: int) -> list[Any]:
    if not isinstance(row, list) or len(row) != size:
        got = f"{len(row)} values" if isinstance(row, list) else type(row).__name__
        raise f.fail(f"components[{index}]", f"must be a list of {size} numbers, got {got}")
    return row


def _score_threshold(f: Fields) -> ScoreThreshold:
    item = f.number("item", lo=0.0, hi=1.0)
    band = f.items("abstain_band", min_len=2, max_len=2)
    edges = Fields({"low": band[0], "high": band[1]}, f.where("abstain_band"), source=f.source)
    low_value, high_value = edges.number("low", lo=0.0, hi=1.0), edges.number("high", lo=0.0, hi=1.0)
    if not low_value <= item <= high_value:
        raise f.fail("abstain_band", f"must be [low, high] with low <= item ({item}) <= high")
    return ScoreThreshold(item, low_value, high_value)


def _thresholds(f: Fields, materials: tuple[str, ...]) -> Thresholds:
    default = _score_threshold(f)
    per_material: dict[str, ScoreThreshold] = {}
    if f.has("materials"):
        section = f.obj("materials")
        for material in section.data:
            if material not in materials:
                raise section.fail(material, "names a material the bundle does not have")
            per_material[material] = _score_threshold(section.obj(material))
    return Thresholds(
        item=default.item,
        abstain_low=default.abstain_low,
        abstain_high=default.abstain_high,
        familiarity=f.number("familiarity", lo=0.0, hi=1.0),
        target_far=f.number("target_far", lo=0.0, hi=1.0),
        per_material=per_material,
    )


def _quality(
    top: Fields, materials: tuple[str, ...]
) -> tuple[dict[str, float], dict[str, dict[str, float]], dict[str, dict[str, float]]]:
    """The ``quality`` section: global, per-lighting and per-material overrides of the gate's thresholds."""
    if not top.has("quality"):
        return {}, {}, {}
    section = top.obj("quality")
    sections = {"lighting": {c.value for c in Lighting if c is not Lighting.OFF}, "materials": set(materials)}

    def overrides(f: Fields) -> dict[str, float]:
        values: dict[str, float] = {}
        for key in f.data:
            if key not in DEFAULT_THRESHOLDS:
                raise f.fail(key, f"is not a quality threshold; known: {', '.join(DEFAULT_THRESHOLDS)}")
            values[key] = f.number(key)
        return values

    flat = overrides(Fields({k: v for k, v in section.data.items() if k not in sections}, "quality", source=top.source))
    nested: dict[str, dict[str, dict[str, float]]] = {}
    for name, allowed in sections.items():
        nested[name] = {}
        if section.has(name):
            group = section.obj(name)
            for key in group.data:
                if key not in allowed:
                    raise group.fail(key, f"is not one of {sorted(allowed)}")
                nested[name][key] = overrides(group.obj(key))
    return flat, nested["lighting"], nested["materials"]


def _item_types(top: Fields, materials: set[str]) -> tuple[ItemTypeSpec, ...]:
    specs: list[ItemTypeSpec] = []
    for i, raw in enumerate(top.items("item_types", min_len=1)):
        spec = Fields(raw, f"item_types[{i}]", source=top.source)
        regions: list[RegionSpec] = []
        for j, raw_region in enumerate(spec.items("regions", min_len=1)):
            region = Fields(raw_region, f"{spec.where('regions')}[{j}]", source=top.source)
            material = region.text("material")
            if material not in materials:
                raise region.fail("material", f"is {material!r:.80}, not one of the bundle's materials")
            regions.append(
                RegionSpec(
                    name=region.text("name"),
                    material=material,
                    min_images=region.integer("min_images", lo=1, hi=_MAX_REGION_IMAGES),
                    hint=region.text("hint", allow_empty=True),
                )
            )
        if len({r.name for r in regions}) != len(regions):
            raise spec.fail("regions", "repeats a region name")
        specs.append(
            ItemTypeSpec(name=spec.text("name"), display_name=spec.text("display_name"), regions=tuple(regions))
        )
    if len({s.name for s in specs}) != len(specs):
        raise top.fail("item_types", "repeats an item type name")
    return tuple(specs)


def _check_model_file(bundle: ModelBundle) -> None:
    path = bundle.model_path
    try:
        size = path.stat().st_size
    except (OSError, ValueError) as exc:
        raise ModelError(f"model file {path} is missing or unreadable: {exc}") from exc
    if size != bundle.size_bytes:
        raise ModelError(f"model file {path} is {size} bytes, but model.size_bytes says {bundle.size_bytes}")
    try:
        digest = sha256_file(path)
    except OSError as exc:
        raise ModelError(f"cannot read model file {path}: {exc.strerror or exc}") from exc
    if digest != bundle.sha256:
        raise ModelError(f"model file {path} has SHA-256 {digest}, but model.sha256 says {bundle.sha256}")
