"""Combines per-image analyses into an item verdict: AUTHENTIC, or UNVERIFIED with a reason.

Rules, applied by :func:`decide` in this order:

1. A region any of whose analysed images is unfamiliar (not the expected
   material, or unlike anything in training) makes the item UNVERIFIED with
   ``UNFAMILIAR_MATERIAL``; such an item is never AUTHENTIC.
2. Scores combine image -> region -> item: a region's logit is the mean of its
   images' calibrated logits, judged against its own material's threshold; the
   item takes the region nearest to (or furthest below) its threshold, since
   one counterfeit part makes a counterfeit item. A region whose mean embedding,
   or whose mean whole-frame texture measurement (:mod:`~veriscope.device.pipeline.texture`),
   lies beyond the bundle's genuine limit (the distance from genuine references
   that genuine regions stay within) has its logit capped below the abstain
   band's upper edge (and below the threshold once well beyond the limit),
   however genuine its tiles score: an unseen kind of counterfeit may fool the
   authenticity head but still look unlike genuine. A region with its full set
   of images scoring below its abstain band's upper edge makes the item
   UNVERIFIED with ``COUNTERFEIT_INDICATORS`` (below the threshold, or too close
   to call).
3. A region with fewer quality-passing images than it needs makes the item
   UNVERIFIED with ``INSUFFICIENT_QUALITY`` when its failed images would have
   made up the shortfall, else ``INSUFFICIENT_COVERAGE``.
4. Otherwise the item is AUTHENTIC.
"""

from __future__ import annotations

import enum
import math
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from typing import NamedTuple

import numpy as np

from veriscope.device.errors import InvalidArgument
from veriscope.device.inference.bundle import ItemTypeSpec, ModelBundle, RegionSpec, ScoreThreshold
from veriscope.device.pipeline.inference import ImageAnalysis
from veriscope.device.pipeline.scoring import genuine_distance, sigmoid
from veriscope.device.pipeline.texture import furthest_group, texture_distance


class Verdict(enum.StrEnum):
    """The outcome of a scan."""

    AUTHENTIC = "AUTHENTIC"
    UNVERIFIED = "UNVERIFIED"


class Reason(enum.StrEnum):
    """Why an item is UNVERIFIED."""

    COUNTERFEIT_INDICATORS = "COUNTERFEIT_INDICATORS"
    UNFAMILIAR_MATERIAL = "UNFAMILIAR_MATERIAL"
    INSUFFICIENT_QUALITY = "INSUFFICIENT_QUALITY"
    INSUFFICIENT_COVERAGE = "INSUFFICIENT_COVERAGE"


class ImageEntry(NamedTuple):
    """One image of a region as :func:`decide` takes it; a plain 3-tuple works too."""

    image_id: str
    quality_ok: bool
    """False when the image failed the quality gate."""
    analysis: ImageAnalysis | None
    """None when the image was not analysed (it failed the quality gate)."""


@dataclass(frozen=True)
class ImageDecision:
    """One image's part in the verdict."""

    image_id: str
    score: float | None
    """Calibrated authenticity score 0..1, None when not analysed."""
    familiarity: float | None
    """Familiarity 0..1 to the region's material, None when not analysed."""
    quality_ok: bool


@dataclass(frozen=True)
class RegionDecision:
    """One region's part in the verdict."""

    region: str
    material: str
    score: float | None
    """Region score 0..1 (sigmoid of the mean image logit), None when no image was analysed."""
    familiarity: float | None
    """Least familiarity among the region's analysed images, None when none was analysed."""
    explanations: list[str]
    """Short human-readable notes."""
    images: list[ImageDecision]


@dataclass(frozen=True)
class ItemDecision:
    """The verdict on an item."""

    verdict: str
    """"AUTHENTIC" or "UNVERIFIED" (a :class:`Verdict`)."""
    reason: str | None
    """None when AUTHENTIC, else a :class:`Reason` value."""
    score: float
    """Item score 0..1: the score of the deciding region (the one nearest to, or furthest below, its
    material's threshold), 0 when nothing was analysed."""
    threshold: float
    """The deciding region's material threshold, chosen for the bundle's target false-accept rate."""
    summary: str
    """One sentence for the person holding the scanner."""
    regions: list[RegionDecision]


@dataclass(frozen=True)
class _RegionState:
    decision: RegionDecision
    threshold: ScoreThreshold
    margin: float | None
    """Region logit minus the logit of its material's AUTHENTIC edge; None when nothing was analysed."""
    unfamiliar: bool
    shortfall: int
    failed: int


def decide(
    bundle: ModelBundle,
    item_type: ItemTypeSpec | str,
    images_by_region: Mapping[str, Sequence[ImageEntry | tuple[str, bool, ImageAnalysis | None]]],
) -> ItemDecision:
    """Decide the verdict on an item from its images, grouped by region name.

    ``item_type`` is a spec or the name of one of the bundle's item types.
    Regions absent from ``images_by_region`` count as having no images.
    Raises :class:`InvalidArgument` for a region the item type does not have or
    an analysis made for a material other than its region's, and
    :class:`~veriscope.device.errors.NotFound` for an unknown item type name.
    """
    spec = bundle.item_type(item_type) if isinstance(item_type, str) else item_type
    known = {r.name for r in spec.regions}
    unknown = sorted(set(images_by_region) - known)
    if unknown:
        raise InvalidArgument(f"item type {spec.name!r} has no region {unknown[0]!r}; its regions: {', '.join(known)}")
    states = [
        _region(region, [ImageEntry(*e) for e in images_by_region.get(region.name, ())], bundle)
        for region in spec.regions
    ]
    regions = [s.decision for s in states]
    scored = [s for s in states if s.margin is not None]
    # The item stands or falls with the region nearest (or furthest below) its own material's threshold.
    deciding = min(scored, key=lambda s: s.margin or 0.0) if scored else None
    score = deciding.decision.score or 0.0 if deciding else 0.0
    threshold = (deciding.threshold if deciding else bundle.thresholds.for_material(spec.regions[0].material)).item

    def names(selected: list[_RegionState]) -> str:
        return ", ".join(s.decision.region for s in selected)

    def verdict(reason: Reason | None, summary: str) -> ItemDecision:
        outcome = Verdict.AUTHENTIC if reason is None else Verdict.UNVERIFIED
        return ItemDecision(outcome, reason, score, threshold, summary, regions)

    unfamiliar = [s for s in states if s.unfamiliar]
    if unfamiliar:
        return verdict(
            Reason.UNFAMILIAR_MATERIAL,
            f"Region {names(unfamiliar)} does not look like the expected material, "
            f"so the model cannot judge this {spec.display_name}.",
        )
    low = [s for s in scored if s.shortfall == 0 and (s.margin or 0.0) < 0.0]
    if low:
        worst = min(low, key=lambda s: s.margin or 0.0)
        value, t = worst.decision.score or 0.0, worst.threshold
        how = "too close to call" if value >= t.abstain_low else "below the threshold"
        return verdict(
            Reason.COUNTERFEIT_INDICATORS,
            f"Counterfeit indicators in region {names(low)}: score {value:.2f} is {how} "
            f"({t.item:.2f}; AUTHENTIC needs {t.abstain_high:.2f}).",
        )
    short = [s for s in states if s.shortfall > 0]
    if short:
        needed = ", ".join(f"{s.decision.region} ({s.shortfall} more)" for s in short)
        if any(s.failed >= s.shortfall for s in short):
            return verdict(
                Reason.INSUFFICIENT_QUALITY, f"Not enough sharp, well-exposed images: retake images of {needed}."
            )
        return verdict(Reason.INSUFFICIENT_COVERAGE, f"Not every region is covered yet: capture {needed}.")
    return verdict(
        None,
        f"All {len(states)} regions match genuine {spec.display_name} references "
        f"(score {score:.2f}, threshold {threshold:.2f}).",
    )


_ATYPICAL_SLOPE = 4.0
"""Calibrated logits by which a region's score drops per unit its genuine distance exceeds the reference."""


def _evidence(analyses: list[ImageAnalysis], image_ids: list[str], threshold: ScoreThreshold) -> list[str]:
    """What the score rests on: how many tiles look counterfeit, and whether the images agree."""
    tiles = np.concatenate([a.tile_scores.ravel() for a in analyses])
    low = int(np.sum(tiles < threshold.item))
    notes = []
    if low:
        notes.append(f"{low} of {tiles.size} tiles across {len(analyses)} images score below the threshold")
    else:
        notes.append(f"all {tiles.size} tiles across {len(analyses)} images score above the threshold")
    if len(analyses) > 1:
        logits = [a.logit for a in analyses]
        worst = int(np.argmin(logits))
        # Images of one surface should agree; one far below the rest points at a patch, repair or a bad capture.
        if float(np.median(logits)) - logits[worst] > 2.0:
            notes.append(f"image {image_ids[worst]} scores far below the others ({analyses[worst].score:.2f})")
    return notes


def _region(region: RegionSpec, entries: list[ImageEntry], bundle: ModelBundle) -> _RegionState:
    images: list[ImageDecision] = []
    analyses: list[ImageAnalysis] = []
    analysed_ids: list[str] = []
    failed = 0
    for entry in entries:
        analysis = entry.analysis if entry.quality_ok else None
        if analysis is not None and analysis.material != region.material:
            raise InvalidArgument(
                f"image {entry.image_id!r} of region {region.name!r} was analysed as {analysis.material}, "
                f"not {region.material}"
            )
        failed += 0 if entry.quality_ok else 1
        if analysis is not None:
            analyses.append(analysis)
            analysed_ids.append(entry.image_id)
        images.append(
            ImageDecision(
                image_id=entry.image_id,
                score=None if analysis is None else analysis.score,
                familiarity=None if analysis is None else analysis.familiarity,
                quality_ok=bool(entry.quality_ok),
            )
        )
    shortfall = max(0, region.min_images - len(analyses))
    threshold = bundle.thresholds.for_material(region.material)
    explanations: list[str] = []
    logit: float | None = None
    familiarity: float | None = None
    score: float | None = None
    unfamiliar = False
    atypical: float | None = None
    unlike: str | None = None  # what about the whole-frame texture is unlike genuine, when it is
    if analyses:
        logit = float(np.mean([a.logit for a in analyses]))
        embeddings = [a.embedding_mean for a in analyses if a.embedding_mean is not None]
        if len(embeddings) == len(analyses):
            atypical = genuine_distance(np.stack(embeddings), bundle.open_set[region.material])
        textures = [a.texture for a in analyses if a.texture is not None]
        texture_stats = bundle.open_set[region.material].texture
        if texture_stats is not None and textures and len(textures) == len(analyses):
            off_texture = texture_distance(np.stack(textures), texture_stats)
            if off_texture > 1.0:
                unlike = furthest_group(np.stack(textures), texture_stats)
            atypical = off_texture if atypical is None else max(atypical, off_texture)
        if atypical is not None and atypical > 1.0:
            # Unlike every genuine reference: never AUTHENTIC; too close to call just beyond the limit, below the
            # threshold further out.
            logit = min(logit, _logit(threshold.abstain_high) - _ATYPICAL_SLOPE * (atypical - 1.0) - 1e-6)
        score = float(sigmoid(logit))
        familiarity = min(a.familiarity for a in analyses)
        strange = [a for a in analyses if not a.familiar]
        unfamiliar = bool(strange)
        if strange:
            explanations.append(f"{len(strange)} of {len(analyses)} images: {strange[0].reasons[0]}")
        else:
            if score >= threshold.abstain_high:
                explanations.append(f"texture consistent with genuine {region.material} (score {score:.2f})")
            elif score >= threshold.abstain_low:
                explanations.append(f"texture too close to call (score {score:.2f})")
            else:
                explanations.append(f"counterfeit indicators in the {region.material} texture (score {score:.2f})")
            if atypical is not None and atypical > 1.0:
                explanations.append(
                    f"texture statistics lie outside every genuine reference ({atypical:.2f} times the "
                    "distance genuine regions stay within)"
                )
            if unlike is not None:
                explanations.append(f"the surface differs from genuine {region.material} most in {unlike}")
            explanations.extend(_evidence(analyses, analysed_ids, threshold))
    if failed:
        explanations.append(f"{failed} image{'s' if failed != 1 else ''} failed the quality check")
    if shortfall:
        explanations.append(
            f"needs {shortfall} more usable image{'s' if shortfall != 1 else ''} ({region.hint})".replace(" ()", "")
        )
    decision = RegionDecision(region.name, region.material, score, familiarity, explanations, images)
    margin = None if logit is None else logit - _logit(threshold.abstain_high)
    return _RegionState(decision, threshold, margin, unfamiliar, shortfall, failed)


def _logit(p: float) -> float:
    q = min(max(p, 1e-9), 1.0 - 1e-9)
    return math.log(q / (1.0 - q))
