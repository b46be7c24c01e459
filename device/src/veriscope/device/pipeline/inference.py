"""Runs a model bundle on frames: tiles in, calibrated authenticity and familiarity out.

:class:`Analyzer` loads the TFLite model once and keeps one interpreter per
calling thread (interpreters are not thread-safe), so the scan service may call
:meth:`Analyzer.analyze_image` from several worker threads at once.
"""

from __future__ import annotations

import contextlib
import threading
from collections.abc import Iterator
from dataclasses import dataclass
from typing import Any

import numpy as np
import numpy.typing as npt

from veriscope.device.errors import InvalidArgument, ModelError
from veriscope.device.inference import _runtime
from veriscope.device.inference.bundle import ModelBundle
from veriscope.device.inference.tiling import TileBatch, frame_to_tiles, to_work_scale
from veriscope.device.pipeline import scoring
from veriscope.device.pipeline.scoring import RawOutputs
from veriscope.device.pipeline.texture import head_logit, texture_features
from veriscope.device.types import RGBImage

OUTPUT_NAMES = ("material_logits", "authenticity_logits", "embedding")
"""Signature output names every bundle's model provides."""


@dataclass(frozen=True, eq=False)
class ImageAnalysis:
    """What the model makes of one image, judged as the material it is expected to show."""

    material: str
    """The expected material."""
    score: float
    """Calibrated probability (0..1) that the image shows genuine ``material``."""
    logit: float
    """The calibrated logit behind ``score``; the verdict averages these."""
    familiarity: float
    """How much the image looks like ``material`` as seen in training (0..1); low means unfamiliar."""
    familiar: bool
    """True when ``familiarity`` reaches the bundle's threshold."""
    predicted_material: str
    """The material class the tiles favour on average (may be an outlier class such as "other")."""
    tile_scores: npt.NDArray[np.float32]
    """grid_rows x grid_cols calibrated per-tile scores (0..1), for heat-maps: each tile's network logit plus the
    frame's texture term, so their mean logit is the image's."""
    tile_familiarity: npt.NDArray[np.float32]
    """grid_rows x grid_cols per-tile familiarity (0..1), for heat-maps."""
    reasons: tuple[str, ...]
    """Short human-readable notes on the result."""
    embedding_mean: npt.NDArray[np.float32] | None = None
    """The image's mean tile embedding, which the verdict compares with genuine references; None if unknown."""
    texture: npt.NDArray[np.float32] | None = None
    """The frame's whole-frame texture features (:mod:`~veriscope.device.pipeline.texture`), which the verdict
    compares with genuine texture references; None when the bundle has none for the material."""


class Analyzer:
    """Runs one model bundle. Create once per bundle; share between threads.

    Raises :class:`ModelError` when no TFLite runtime is installed, the model
    cannot be loaded, or its signature disagrees with the manifest.
    """

    def __init__(self, bundle: ModelBundle, *, num_threads: int | None = None) -> None:
        self.bundle = bundle
        self._num_threads = num_threads
        # Idle interpreters, each with its signature runner. One interpreter serves one call at a time, so there
        # are as many as calls ever ran at once (the scan manager bounds that), not one per thread that ever ran.
        self._idle: list[tuple[Any, Any]] = []
        self._idle_lock = threading.Lock()
        # Load once here so a broken model fails at start-up, not on the first scan.
        self._idle.append(self._new_runner())

    def _new_runner(self) -> tuple[Any, Any]:
        interpreter = _runtime.make_interpreter(self.bundle.model_path, num_threads=self._num_threads)
        return interpreter, self._checked_runner(interpreter)

    @contextlib.contextmanager
    def _leased_runner(self) -> Iterator[Any]:
        """An idle interpreter's signature runner for one call (a new interpreter when all are busy)."""
        with self._idle_lock:
            pair = self._idle.pop() if self._idle else None
        if pair is None:
            pair = self._new_runner()
        try:
            yield pair[1]
        finally:
            with self._idle_lock:
                self._idle.append(pair)

    def _checked_runner(self, interpreter: Any) -> Any:
        bundle = self.bundle
        signature = bundle.outputs.signature
        signatures = interpreter.get_signature_list()
        if signature not in signatures:
            raise ModelError(f"{bundle.model_path} has no signature {signature!r}; it has {sorted(signatures)}")
        runner = interpreter.get_signature_runner(signature)
        inputs = runner.get_input_details()
        outputs = runner.get_output_details()
        if set(inputs) != {bundle.input.name}:
            raise ModelError(f"{bundle.model_path} inputs are {sorted(inputs)}, manifest says [{bundle.input.name!r}]")
        detail = inputs[bundle.input.name]
        t = bundle.input.tile_px
        if list(detail["shape"][1:]) != [t, t, bundle.input.channels]:
            raise ModelError(f"{bundle.model_path} input shape {list(detail['shape'])} does not match tile_px {t}")
        if np.dtype(detail["dtype"]) != np.dtype(bundle.input.numpy_dtype):
            raise ModelError(f"{bundle.model_path} input dtype {np.dtype(detail['dtype'])} is not {bundle.input.dtype}")
        scale, zero_point = detail["quantization"]
        if not np.isclose(scale, bundle.input.scale, rtol=1e-5) or zero_point != bundle.input.zero_point:
            raise ModelError(
                f"{bundle.model_path} input quantisation ({scale}, {zero_point}) does not match the manifest "
                f"({bundle.input.scale}, {bundle.input.zero_point})"
            )
        if set(outputs) != set(OUTPUT_NAMES):
            raise ModelError(f"{bundle.model_path} outputs are {sorted(outputs)}, expected {sorted(OUTPUT_NAMES)}")
        widths = {
            "material_logits": len(bundle.outputs.material_classes),
            "authenticity_logits": len(bundle.outputs.authenticity_materials),
            "embedding": bundle.outputs.embedding_size,
        }
        for name, width in widths.items():
            if int(outputs[name]["shape"][-1]) != width:
                raise ModelError(f"{bundle.model_path} output {name} is {outputs[name]['shape'][-1]} wide, not {width}")
        return runner

    def tiles(self, pixels: RGBImage) -> TileBatch:
        """The input tiles of a frame. Raises :class:`InvalidArgument` for a frame that cannot be tiled."""
        return frame_to_tiles(pixels, self.bundle.tiling)

    def run_tiles(self, tiles: TileBatch) -> RawOutputs:
        """Run the model on an N x tile x tile x 3 uint8 batch and return dequantised outputs.

        Raises :class:`InvalidArgument` for a batch of the wrong shape or type and
        :class:`ModelError` when the runtime fails.
        """
        spec = self.bundle.input
        expected = (spec.tile_px, spec.tile_px, spec.channels)
        if tiles.ndim != 4 or tiles.shape[1:] != expected or tiles.dtype != np.uint8 or len(tiles) == 0:
            raise InvalidArgument(f"tiles must be N x {expected} uint8, got {tiles.shape} {tiles.dtype}")
        if spec.dtype == "uint8" and spec.scale == 1.0 and spec.zero_point == 0:
            quantised: npt.NDArray[Any] = np.ascontiguousarray(tiles)
        else:
            info = np.iinfo(spec.numpy_dtype)
            q = np.round(tiles.astype(np.float32) / spec.scale + spec.zero_point)
            quantised = np.clip(q, info.min, info.max).astype(spec.numpy_dtype)
        with self._leased_runner() as runner:
            try:
                result = runner(**{spec.name: quantised})
                details = runner.get_output_details()
            except (ValueError, RuntimeError) as exc:
                raise ModelError(f"inference failed on {self.bundle.model_path}: {exc}") from exc
            # Copied out before the interpreter serves another call.
            arrays = {name: _dequantise(result[name], details[name]) for name in OUTPUT_NAMES}
        return RawOutputs(**arrays)

    def analyze_image(self, pixels: RGBImage, material: str) -> ImageAnalysis:
        """Judge one frame as an image of ``material``.

        Raises :class:`InvalidArgument` when ``material`` is not one of the
        bundle's materials or the frame is not an HxWx3 uint8 array large enough
        to tile, and :class:`ModelError` when the runtime fails.
        """
        if material not in self.bundle.materials:
            raise InvalidArgument(
                f"material {material!r} is not one the model knows: {', '.join(self.bundle.materials)}"
            )
        work = to_work_scale(pixels, self.bundle.tiling)
        texture = texture_features(work) if self.bundle.open_set[material].texture is not None else None
        return analyze_outputs(self.bundle, self.run_tiles(self.tiles(work)), material, texture)


def analyze_outputs(
    bundle: ModelBundle, raw: RawOutputs, material: str, texture: npt.NDArray[np.float32] | None = None
) -> ImageAnalysis:
    """Turn one frame's raw tile outputs into an :class:`ImageAnalysis` (pure; runs no model).

    ``texture`` is the frame's :func:`~veriscope.device.pipeline.texture.texture_features`
    at the working scale, if measured. Raises :class:`InvalidArgument` when
    ``material`` is not one of the bundle's materials or ``raw`` does not hold
    one frame's grid of tiles.
    """
    if material not in bundle.materials:
        raise InvalidArgument(f"material {material!r} is not one the model knows: {', '.join(bundle.materials)}")
    grid = (bundle.tiling.grid_rows, bundle.tiling.grid_cols)
    if len(raw.material_logits) != bundle.tiling.tile_count:
        raise InvalidArgument(f"expected outputs for {bundle.tiling.tile_count} tiles, got {len(raw.material_logits)}")
    classes = bundle.outputs.material_classes
    calibration = bundle.calibration[material]
    stats = bundle.open_set[material].texture
    # The whole frame's supervised texture score, weighed by the calibration fitted with it. It has no tiles, so it
    # shifts every tile alike: the tiles' mean logit stays the image's, and the heat-map agrees with the verdict.
    frame_term = 0.0
    if texture is not None and stats is not None and stats.head is not None and calibration.texture_slope:
        frame_term = calibration.texture_slope * head_logit(texture, stats.head)
    logit = scoring.image_logit(raw, bundle.materials, material, calibration) + frame_term
    tile_scores = scoring.sigmoid(scoring.tile_logits(raw, bundle.materials, material, calibration) + frame_term)
    tile_fam = scoring.tile_familiarity(raw, classes, material, bundle.open_set[material])
    familiarity = scoring.image_familiarity(tile_fam, raw, bundle.open_set[material])
    if texture is not None and stats is not None:
        # The network's embedding is one view of "is this the material"; the whole frame's texture, against every
        # source of the material seen in training, is another that a retrain cannot move.
        familiarity = min(familiarity, scoring.texture_familiarity(texture, stats))
    predicted = classes[int(np.argmax(scoring.softmax(raw.material_logits).mean(axis=0)))]
    score = float(scoring.sigmoid(logit))
    familiar = familiarity >= bundle.thresholds.familiarity
    return ImageAnalysis(
        material=material,
        score=score,
        logit=logit,
        familiarity=familiarity,
        familiar=familiar,
        predicted_material=predicted,
        tile_scores=tile_scores.reshape(grid),
        tile_familiarity=tile_fam.reshape(grid),
        reasons=tuple(_reasons(bundle, material, score, familiar, predicted, tile_scores)),
        embedding_mean=np.asarray(raw.embedding, dtype=np.float32).mean(axis=0),
        texture=texture,
    )


def _reasons(
    bundle: ModelBundle,
    material: str,
    score: float,
    familiar: bool,
    predicted: str,
    tile_scores: npt.NDArray[np.float32],
) -> list[str]:
    thresholds = bundle.thresholds.for_material(material)
    if not familiar:
        if predicted != material and predicted in bundle.materials:
            return [f"looks like {predicted}, not {material}"]
        return [f"does not look like {material} or any material the model knows"]
    suspicious = int(np.sum(tile_scores < thresholds.item))
    reasons: list[str] = []
    if suspicious:
        reasons.append(f"{suspicious} of {tile_scores.size} tiles show counterfeit indicators")
    if score >= thresholds.abstain_high:
        reasons.append(f"texture consistent with genuine {material}")
    elif score >= thresholds.abstain_low:
        reasons.append(f"texture too close to call for {material}")
    else:
        reasons.append(f"texture inconsistent with genuine {material}")
    return reasons


def _dequantise(values: npt.NDArray[Any], detail: dict[str, Any]) -> npt.NDArray[np.float32]:
    scale, zero_point = detail["quantization"]
    if scale == 0.0:
        return np.asarray(values, dtype=np.float32)
    return ((values.astype(np.float32) - np.float32(zero_point)) * np.float32(scale)).astype(np.float32)
