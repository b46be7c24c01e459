"""Turns the model's raw tile outputs into calibrated authenticity scores and familiarity.

Pure numpy, shared by the device and by training (which fits the calibration
and open-set statistics with these same functions).

Familiarity of a tile to its expected material is the lesser of two signals:
the material head's probability for that material, and an embedding signal
``1 / (1 + (d / distance_ref)^4)`` where ``d`` is the root-mean-square of the
embedding's per-dimension z-scores against the material's training statistics.
The first catches other known materials, the second inputs unlike anything seen
in training (blank frames, noise, unknown surfaces). When the bundle has them,
an image's familiarity is further capped by :func:`texture_familiarity`: its
whole-frame texture against every image of the material seen in training.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass

import numpy as np
import numpy.typing as npt

from veriscope.device.inference.bundle import Calibration, OpenSetStats
from veriscope.device.pipeline.texture import TextureStats, material_distance

FloatArray = npt.NDArray[np.float32]

_EMBEDDING_FALLOFF = 4.0
"""Exponent of the embedding familiarity's fall-off: steep, so only clear outliers lose familiarity."""


@dataclass(frozen=True, eq=False)
class RawOutputs:
    """The model's dequantised outputs for N tiles."""

    material_logits: FloatArray
    """N x C logits over the material classes."""
    authenticity_logits: FloatArray
    """N x M genuine-vs-counterfeit logits, one column per material."""
    embedding: FloatArray
    """N x D tile embeddings."""


def sigmoid(x: npt.ArrayLike) -> FloatArray:
    """The logistic function, elementwise, without overflow."""
    z = np.asarray(x, dtype=np.float64)
    return (0.5 * (1.0 + np.tanh(0.5 * z))).astype(np.float32)


def softmax(logits: npt.ArrayLike) -> FloatArray:
    """Softmax over the last axis."""
    z = np.asarray(logits, dtype=np.float64)
    e: npt.NDArray[np.float64] = np.exp(z - z.max(axis=-1, keepdims=True))
    return np.asarray(e / e.sum(axis=-1, keepdims=True), dtype=np.float32)


def material_probability(material_logits: npt.ArrayLike, classes: Sequence[str], material: str) -> FloatArray:
    """Per-tile probability (0..1) that a tile shows ``material``."""
    return softmax(material_logits)[:, list(classes).index(material)]


def embedding_distance(embedding: npt.ArrayLike, stats: OpenSetStats) -> FloatArray:
    """Per-tile RMS z-score of the embedding against a material's statistics (dimensionless, >= 0)."""
    z: FloatArray = (np.asarray(embedding, dtype=np.float32) - stats.mean) / stats.std
    return np.asarray(np.sqrt(np.mean(z * z, axis=-1)), dtype=np.float32)


def embedding_familiarity(distance: npt.ArrayLike, distance_ref: float) -> FloatArray:
    """Map embedding distances to 0..1, one half at ``distance_ref``."""
    ratio = np.asarray(distance, dtype=np.float64) / distance_ref
    return (1.0 / (1.0 + ratio**_EMBEDDING_FALLOFF)).astype(np.float32)


def tile_familiarity(raw: RawOutputs, classes: Sequence[str], material: str, stats: OpenSetStats) -> FloatArray:
    """Per-tile familiarity (0..1) to ``material``: the lesser of material probability and embedding familiarity."""
    by_class = material_probability(raw.material_logits, classes, material)
    by_embedding = embedding_familiarity(embedding_distance(raw.embedding, stats), stats.distance_ref)
    return np.minimum(by_class, by_embedding)


def image_familiarity(
    tile_values: npt.ArrayLike, raw: RawOutputs | None = None, stats: OpenSetStats | None = None
) -> float:
    """An image's familiarity: the median over its tiles, so a stray tile neither makes nor breaks it.

    When ``stats`` carries image-level statistics, the familiarity of the image's mean tile
    embedding caps it: a photograph whose tiles each pass can still be unlike any image of the material.
    """
    value = float(np.median(np.asarray(tile_values, dtype=np.float32)))
    if raw is not None and stats is not None and stats.image is not None:
        mean = np.asarray(raw.embedding, dtype=np.float32).mean(axis=0, keepdims=True)
        whole = embedding_familiarity(embedding_distance(mean, stats.image), stats.image.distance_ref)
        value = min(value, float(whole[0]))
    return value


def texture_familiarity(features: npt.ArrayLike, stats: TextureStats) -> float:
    """One frame's familiarity (0..1) from its whole-frame texture against the material as a whole.

    The same fall-off as the embedding's, one half at the material's per-frame limit; 1.0 when ``stats``
    holds no material references.
    """
    distance = material_distance(features, stats)
    if distance is None:
        return 1.0
    return float(embedding_familiarity(np.float64(distance), 1.0))


def genuine_distance(image_embeddings: npt.ArrayLike, stats: OpenSetStats) -> float | None:
    """How far a region's mean embedding (over its images' mean tile embeddings) lies from genuine ones.

    In units of ``stats.genuine.distance_ref``: above 1 the region's texture is unlike every genuine
    reference, whatever the authenticity head says. None when the bundle has no genuine statistics.
    """
    if stats.genuine is None:
        return None
    mean = np.asarray(image_embeddings, dtype=np.float32).reshape(-1, stats.genuine.mean.size).mean(axis=0)
    return float(embedding_distance(mean[None, :], stats.genuine)[0]) / stats.genuine.distance_ref


def tile_logits(raw: RawOutputs, materials: Sequence[str], material: str, calibration: Calibration) -> FloatArray:
    """Per-tile calibrated authenticity logits for ``material``."""
    z = raw.authenticity_logits[:, list(materials).index(material)]
    return (calibration.slope * z + calibration.intercept).astype(np.float32)


def image_logit(raw: RawOutputs, materials: Sequence[str], material: str, calibration: Calibration) -> float:
    """An image's calibrated authenticity logit: the calibration applied to the mean tile logit."""
    z = float(np.mean(raw.authenticity_logits[:, list(materials).index(material)]))
    return calibration.slope * z + calibration.intercept
