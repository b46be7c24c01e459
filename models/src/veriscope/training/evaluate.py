"""Per-item metrics, computed with the device's own analysis and verdict code.

Each evaluation item is judged as a one-region item whose region needs all of
the item's images, through :func:`veriscope.device.pipeline.inference.analyze_outputs`
and :func:`veriscope.device.pipeline.verdict.decide`, so the numbers are the
ones the device would produce.
"""

from __future__ import annotations

import math
from collections import defaultdict
from collections.abc import Sequence
from dataclasses import dataclass
from typing import Any

import numpy as np

from veriscope.device.inference.bundle import ItemTypeSpec, ModelBundle, RegionSpec
from veriscope.device.pipeline.inference import ImageAnalysis, analyze_outputs
from veriscope.device.pipeline.scoring import RawOutputs
from veriscope.device.pipeline.verdict import ItemDecision, Verdict, decide
from veriscope.training.data import Item


@dataclass(frozen=True)
class ItemOutputs:
    """One item and the raw model outputs of each of its images."""

    item: Item
    raw: tuple[RawOutputs, ...]
    texture: tuple[np.ndarray, ...] = ()
    """Each image's whole-frame texture features, in ``raw``'s order; empty when not measured."""


def judge(bundle: ModelBundle, entry: ItemOutputs) -> ItemDecision:
    """The device's decision on one item, as a one-region item needing all its images."""
    region = RegionSpec("surface", entry.item.material, len(entry.raw), "")
    spec = ItemTypeSpec(f"eval-{entry.item.material}", "evaluation item", (region,))
    images = [(f"{entry.item.item_id}/{i}", True, a) for i, a in enumerate(_analyse(bundle, entry))]
    return decide(bundle, spec, {"surface": images})


def _rate(hits: int, total: int) -> float | None:
    return None if total == 0 else round(hits / total, 4)


def upper_bound_95(hits: int, total: int) -> float | None:
    """One-sided 95 % upper confidence bound on a rate seen as ``hits`` of ``total`` (Wilson score; None if empty).

    Zero false accepts in n items bounds the rate only to about 2.7 / n, which
    is what a small evaluation can honestly claim.
    """
    if total == 0:
        return None
    z = 1.6449
    p = hits / total
    centre = p + z * z / (2 * total)
    spread = z * math.sqrt(p * (1 - p) / total + z * z / (4 * total * total))
    return round(min(1.0, (centre + spread) / (1 + z * z / total)), 4)


@dataclass(frozen=True)
class ItemScore:
    """One evaluated item's outcome, for plots."""

    material: str
    source: str
    genuine: bool
    score: float
    """The item score 0..1 the verdict compared with the threshold."""
    accepted: bool
    """True when judged AUTHENTIC."""


def item_scores(bundle: ModelBundle, entries: Sequence[ItemOutputs]) -> list[ItemScore]:
    """Every item's score and verdict, judged as the device would."""
    out = []
    for entry in entries:
        decision = judge(bundle, entry)
        item = entry.item
        accepted = decision.verdict == Verdict.AUTHENTIC
        out.append(ItemScore(item.material, item.source, item.genuine, float(decision.score), accepted))
    return out


def _auc(genuine: Sequence[float], fake: Sequence[float]) -> float | None:
    if not genuine or not fake:
        return None
    g = np.asarray(genuine)[:, None]
    f = np.asarray(fake)[None, :]
    return round(float(np.mean((g > f) + 0.5 * (g == f))), 4)


def item_metrics(
    bundle: ModelBundle, entries: Sequence[ItemOutputs], held_out_sources: Sequence[str]
) -> dict[str, Any]:
    """Verification and false-accept rates over items.

    ``genuine_verification_rate`` is the share of genuine items judged AUTHENTIC;
    ``far_*`` the share of counterfeit items judged AUTHENTIC, over the trained
    sources, the held-out sources and all of them, with ``*_upper95`` the
    one-sided 95 % upper confidence bounds of the last two. ``per_source`` counts items
    and acceptances per material and source; ``item_auc`` ranks item scores.
    """
    per_source: dict[str, dict[str, int]] = defaultdict(lambda: {"items": 0, "accepted": 0, "unfamiliar": 0})
    genuine_scores: list[float] = []
    fake_scores: list[float] = []
    counts = {"genuine": [0, 0], "trained": [0, 0], "held_out": [0, 0]}
    for entry in entries:
        decision = judge(bundle, entry)
        accepted = decision.verdict == Verdict.AUTHENTIC
        item = entry.item
        row = per_source[f"{item.material}/{item.source}"]
        row["items"] += 1
        row["accepted"] += int(accepted)
        row["unfamiliar"] += int(decision.reason == "UNFAMILIAR_MATERIAL")
        group = "genuine" if item.genuine else "held_out" if item.source in held_out_sources else "trained"
        counts[group][0] += int(accepted)
        counts[group][1] += 1
        (genuine_scores if item.genuine else fake_scores).append(decision.score)
    fakes = [counts["trained"][0] + counts["held_out"][0], counts["trained"][1] + counts["held_out"][1]]
    return {
        "items": {k: v[1] for k, v in counts.items()},
        "genuine_verification_rate": _rate(*counts["genuine"]),
        "far_trained_sources": _rate(*counts["trained"]),
        "far_held_out_sources": _rate(*counts["held_out"]),
        "far_all_counterfeits": _rate(*fakes),
        "far_held_out_sources_upper95": upper_bound_95(*counts["held_out"]),
        "far_all_counterfeits_upper95": upper_bound_95(*fakes),
        "item_auc": _auc(genuine_scores, fake_scores),
        "per_source": dict(sorted(per_source.items())),
    }


def familiarity_metrics(
    bundle: ModelBundle,
    in_distribution: Sequence[ItemOutputs],
    outliers: Sequence[RawOutputs],
) -> dict[str, Any]:
    """Open-set behaviour on images.

    ``in_distribution_familiar_rate``: images accepted as their own material.
    ``cross_material_rejection_rate``: images judged unfamiliar when analysed as
    each other material. ``outlier_rejection_rate``: synthetic non-material
    frames judged unfamiliar under every material.
    """
    own = cross = cross_total = 0
    total = 0
    for entry in in_distribution:
        for raw in entry.raw:
            total += 1
            own += int(analyze_outputs(bundle, raw, entry.item.material).familiar)
            for other in bundle.materials:
                if other != entry.item.material:
                    cross_total += 1
                    cross += int(not analyze_outputs(bundle, raw, other).familiar)
    rejected = sum(all(not analyze_outputs(bundle, raw, m).familiar for m in bundle.materials) for raw in outliers)
    return {
        "in_distribution_familiar_rate": _rate(own, total),
        "cross_material_rejection_rate": _rate(cross, cross_total),
        "outlier_rejection_rate": _rate(rejected, len(outliers)),
    }


def analyses(bundle: ModelBundle, entries: Sequence[ItemOutputs]) -> list[list[ImageAnalysis]]:
    """Every image's analysis, per item."""
    return [_analyse(bundle, e) for e in entries]


def _analyse(bundle: ModelBundle, entry: ItemOutputs) -> list[ImageAnalysis]:
    """Each image's analysis, with its texture features when the entry has them for every image."""
    textures = entry.texture if len(entry.texture) == len(entry.raw) else (None,) * len(entry.raw)
    return [analyze_outputs(bundle, raw, entry.item.material, t) for raw, t in zip(entry.raw, textures, strict=True)]
