"""Renders MODEL_CARD.md from a bundle manifest."""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from typing import Any
from urllib.parse import quote


def _pct(value: Any) -> str:
    return "n/a" if value is None else f"{100.0 * float(value):.1f} %"


def _metric_rows(metrics: Mapping[str, Any]) -> list[str]:
    rows = [
        "| metric | float | int8 |",
        "| --- | --- | --- |",
    ]
    spec = [
        ("test", "genuine_verification_rate", "Genuine items verified (test)"),
        ("test", "far_trained_sources", "False accepts, trained counterfeit sources (test)"),
        ("test", "far_held_out_sources", "False accepts, held-out counterfeit sources"),
        ("test", "far_all_counterfeits", "False accepts, all counterfeits (test + held-out)"),
        ("validation", "genuine_verification_rate", "Genuine items verified (validation)"),
        ("validation", "far_trained_sources", "False accepts (validation, threshold fitted here)"),
        ("open_set", "in_distribution_familiar_rate", "Test images accepted as their material"),
        ("open_set", "cross_material_rejection_rate", "Test images rejected as another material"),
        ("open_set", "outlier_rejection_rate", "Non-material frames rejected"),
    ]
    for section, key, label in spec:
        values = [metrics.get(v, {}).get(section, {}).get(key) for v in ("float", "int8")]
        rows.append(f"| {label} | {_pct(values[0])} | {_pct(values[1])} |")
    auc = [metrics.get(v, {}).get("test", {}).get("item_auc") for v in ("float", "int8")]
    rows.append(f"| Item score AUC, genuine vs all counterfeits (test) | {auc[0]} | {auc[1]} |")
    return rows


TARGETS = {
    "genuine_verification_rate": 0.95,
    "far_held_out_sources": 0.005,
    "far_all_counterfeits": 0.001,
    "model_bytes": 2 * 1024 * 1024,
    "pi4_ms_per_image": 17.0 / 4.0,
}
"""The issue's targets: genuine items verified (at least), false-accept rates, model size and Pi 4 latency (at most)."""


def _mark(ok: bool | None) -> str:
    return "n/a" if ok is None else ("met" if ok else "**not met**")


def _rate_mark(value: float | None, bound: float | None, limit: float) -> str:
    """Met only when the 95 % upper bound is within the limit: a low rate measured on too few items shows nothing."""
    if value is None:
        return "n/a"
    if value > limit:
        return "**not met**"
    if bound is not None and bound > limit:
        return "**not shown**: too few items to bound the rate below the limit"
    return "met"


def _targets(manifest: Mapping[str, Any]) -> list[str]:
    """The targets table: what was asked, what the int8 model measured, and whether the bound holds."""
    metrics = manifest.get("metrics", {})
    test = metrics.get("int8", {}).get("test", {})
    items = test.get("items", {})
    rows = ["| target | measured (int8, test) | 95 % upper bound | |", "| --- | --- | --- | --- |"]
    genuine = test.get("genuine_verification_rate")
    ok = None if genuine is None else genuine >= TARGETS["genuine_verification_rate"]
    rows.append(f"| Genuine items verified >= 95 % | {_pct(genuine)} of {items.get('genuine', 0)} | | {_mark(ok)} |")
    for key, bound_key, label, limit in (
        ("far_held_out_sources", "far_held_out_sources_upper95", "False accepts, held-out sources <= 0.5 %", 0.005),
        ("far_all_counterfeits", "far_all_counterfeits_upper95", "False accepts, all counterfeits <= 0.1 %", 0.001),
    ):
        value, bound = test.get(key), test.get(bound_key)
        n = items.get("held_out", 0) if "held_out" in key else items.get("held_out", 0) + items.get("trained", 0)
        rows.append(f"| {label} | {_pct(value)} of {n} | {_pct(bound)} | {_rate_mark(value, bound, limit)} |")
    size = manifest["model"]["size_bytes"]
    rows.append(f"| Model <= 2 MB | {size / 1024:.0f} KiB | | {_mark(size <= TARGETS['model_bytes'])} |")
    pi4 = metrics.get("pi4_estimate_ms_per_image")
    if pi4 is not None:
        aim = TARGETS["pi4_ms_per_image"]
        rows.append(
            f"| Raspberry Pi 4 int8 latency, aim 17 / 4 = {aim:.2f} ms per image (estimate) | {pi4:.2f} ms | | "
            f"{_mark(pi4 <= aim)} |"
        )
    return rows


def _fresh_targets(metrics: Mapping[str, Any]) -> list[str]:
    """The targets on fresh whole items (``metrics.fresh_whole_items``, written by ``eval_items.py --record``)."""
    fresh = metrics.get("fresh_whole_items")
    if not fresh or not fresh.get("sets"):
        return []
    total = fresh["total"]

    def pct(value: float | None) -> str:
        # Two decimals: a bound of 0.098 % must not read as the 0.1 % limit.
        return "n/a" if value is None else f"{100.0 * value:.2f} %"

    sets = ", ".join(f"`{row['data']}`" for row in fresh["sets"])
    rows = [
        "## Targets on fresh whole items",
        "",
        f"Whole items of data sets training never saw ({sets}), each judged as the device judges a scan: every "
        "region of its item type on the images that region needs, one verdict per item "
        "(`models/scripts/eval_items.py --whole-items`; models/README.md gives how each set was made).",
        "",
        "| target | measured (int8) | 95 % bound | |",
        "| --- | --- | --- | --- |",
    ]
    genuine_n, genuine_ok = total["genuine_items"], total["genuine_verified"]
    rate = genuine_ok / genuine_n if genuine_n else None
    ok = None if rate is None else rate >= TARGETS["genuine_verification_rate"]
    rows.append(
        f"| Genuine items verified >= 95 % | {genuine_ok} of {genuine_n} ({pct(rate)}) | "
        f"{pct(total.get('genuine_verified_lower95'))} lower | {_mark(ok)} |"
    )
    for prefix, label, limit in (
        ("held_out", "False accepts, held-out sources <= 0.5 %", TARGETS["far_held_out_sources"]),
        ("counterfeit", "False accepts, all counterfeits <= 0.1 %", TARGETS["far_all_counterfeits"]),
    ):
        n, accepted = total[f"{prefix}_items"], total[f"{prefix}_accepted"]
        value = accepted / n if n else None
        bound = total.get(f"{prefix}_upper95")
        rows.append(
            f"| {label} | {accepted} of {n} ({pct(value)}) | {pct(bound)} | {_rate_mark(value, bound, limit)} |"
        )
    rows += [
        "",
        f"UNFAMILIAR_MATERIAL verdicts: {total.get('genuine_unfamiliar', 0)} genuine and "
        f"{total.get('counterfeit_unfamiliar', 0)} counterfeit items (UNVERIFIED either way).",
        "",
    ]
    return rows


def _per_source(metrics: Mapping[str, Any]) -> list[str]:
    rows = ["| material/source | items | accepted (int8) | unfamiliar (int8) |", "| --- | --- | --- | --- |"]
    for key, row in metrics.get("int8", {}).get("test", {}).get("per_source", {}).items():
        rows.append(f"| {key} | {row['items']} | {row['accepted']} | {row['unfamiliar']} |")
    return rows


def _weaknesses(metrics: Mapping[str, Any]) -> list[str]:
    """Plain statements of where the int8 model falls short on test and held-out items."""
    per_source = metrics.get("int8", {}).get("test", {}).get("per_source", {})
    lines = []
    for key, row in per_source.items():
        material, source = key.split("/", 1)
        if source == "genuine" and row["accepted"] < row["items"]:
            lines.append(f"- Genuine {material}: {row['accepted']} of {row['items']} test items verified.")
        elif source != "genuine" and row["accepted"]:
            lines.append(f"- {material} {source}: {row['accepted']} of {row['items']} items falsely accepted.")
    return lines or ["- None on the test and held-out items."]


def _unjudged(metrics: Mapping[str, Any]) -> list[str]:
    """A line for each material whose genuine test items are mostly not verified: the model cannot judge it."""
    lines = []
    for key, row in metrics.get("int8", {}).get("test", {}).get("per_source", {}).items():
        material, source = key.split("/", 1)
        if source == "genuine" and row["items"] and row["accepted"] < row["items"] / 2:
            lines.append(
                f"- This model cannot judge {material}: {row['accepted']} of {row['items']} genuine test items "
                f"verified, so a {material} region almost always ends UNVERIFIED."
            )
    return lines


def _quantile(fraction: float) -> str:
    return f"{100 * fraction:g} %"


def _millions(count: Any) -> str:
    return "?" if count is None else f"{count / 1e6:.1f} M"


def _images(training: Mapping[str, Any]) -> str:
    per = training.get("images_per_evaluation_item", {})
    return ", ".join(f"{n} for {m}" for m, n in per.items()) or "all of them"


def _per_count(counts: Mapping[str, Sequence[int]] | None) -> str:
    """How the texture limits depend on a region's image count, for materials with more than one count."""
    several = {m: list(c) for m, c in (counts or {}).items() if len(c) > 1}
    if not several:
        return ""
    named = "; ".join(f"{m}: {', '.join(str(n) for n in c)} images" for m, c in several.items())
    return f", each for regions of as many images as the catalog asks for ({named})"


def _budget(share: float | None) -> str:
    """The genuine-item budget the texture limits were set from, when they were."""
    if share is None:
        return ""
    return (
        f"; each quantile is the share of a {_quantile(share)} budget of genuine items that one family of one "
        "region of the largest item type may turn away, by that fit"
    )


SIMULATOR = "veriscope.device.specimen"
"""The ``generator`` that the specimen simulator writes into dataset.json."""


def _material_texture(manifest: Mapping[str, Any]) -> list[str]:
    """The familiarity line's second half when the bundle has whole-material texture references."""
    known = [m for m, o in manifest.get("open_set", {}).items() if "material" in o.get("texture", {})]
    if not known:
        return []
    training = manifest.get("training", {})
    quantile, margin = training.get("material_texture_quantile"), training.get("material_texture_margin")
    limit = f" ({margin} times the {100 * quantile:g} % quantile of single frames)" if quantile and margin else ""
    return [
        f"  The whole frame's texture caps it too ({', '.join(known)}): measured against every training image of the "
        f"material, genuine and counterfeit, a frame beyond a family's limit{limit} shows something else, whatever "
        "the network's embedding says."
    ]


def _data(training: Mapping[str, Any]) -> list[str]:
    """Where the images came from, and the split by item as a table."""
    data = training.get("data", {})
    if data.get("generator") == SIMULATOR:
        made = [f"`{data['generator']}`"]
        if "simulator_sha256" in data:
            made.append(f"simulator sha256 `{str(data['simulator_sha256'])[:12]}…`")
        made += [f"seed {data['seed']}"] if "seed" in data else []
        made += [f"{data['image_width']} px wide"] if "image_width" in data else []
        if "jpeg_quality_range" in data:
            low, high = data["jpeg_quality_range"]
            made.append(f"JPEG quality {low} to {high}")
        source = f"Simulated specimens from {', '.join(made)}"
        if "genuine_items" in data and "counterfeit_items" in data:
            source += (
                f": {data['genuine_items']} genuine items, and {data['counterfeit_items']} items of each "
                "counterfeit source, per material"
            )
    else:
        writer = f", written by `{data['generator']}`" if "generator" in data else ""
        source = f"Images from the folder `{data.get('root', '?')}`{writer}"
    lines = [f"{source}. Split by item, never by image:", ""]
    split = training.get("split", {})
    if split:
        lines += ["| split | items | images |", "| --- | --- | --- |"]
        lines += [f"| {name} | {c.get('items', '?')} | {c.get('images', '?')} |" for name, c in split.items()]
        lines.append("")
    return lines


def render(manifest: Mapping[str, Any], *, plots: Mapping[str, str] | None = None) -> str:
    """The model card text; ``plots`` maps the bundle's PNG files to their captions."""
    t = manifest["thresholds"]
    training = manifest.get("training", {})
    limits = training.get("genuine_limits", {})
    metrics = manifest.get("metrics", {})
    pre = manifest["preprocessing"]
    types = ", ".join(f"`{it['name']}`" for it in manifest["item_types"])
    smoke = (
        "\n> **Smoke build**: trained for seconds on tiny data to test the pipeline. Not for use.\n"
        if training.get("smoke")
        else ""
    )
    lines = [
        f"# Model card: {manifest['name']} {manifest['version']}",
        smoke,
        "## What it does",
        "",
        "Judges microscope images (about 200x, white ring light) of coated canvas, grained leather and woven "
        "fabric: is the surface the expected material, and does its texture match genuine specimens? "
        "Each frame is scaled to "
        f"{pre['work_width_px']} px wide and cut into a {pre['grid_rows']} x {pre['grid_cols']} grid of "
        f"{pre['tile_px']} px tiles; a depthwise-separable CNN scores every tile. The whole frame's texture is "
        "measured too (its power spectrum, and the number and size of its dark specks, in ways that do not "
        "change when the item turns); a linear score on those measurements joins the network's mean tile logit in "
        "each image's calibrated score. "
        "Image scores are calibrated per material; an item's score is its weakest region's.",
        "",
        f"Materials: {', '.join(manifest['materials'])}. Item types: {types}. Lighting: {', '.join(manifest['lighting'])}.",
        "",
        "## Decision",
        "",
        f"- Thresholds per material, each chosen for a false-accept rate of {_pct(t['target_far'])} on that "
        "material's validation items and centred in the gap to its genuine items; a region is AUTHENTIC-grade "
        "at or above the top of its abstain band:",
        "",
        *[
            f"  - {m}: threshold {v['item']:.3f}, abstain band {v['abstain_band'][0]:.3f}..{v['abstain_band'][1]:.3f}"
            for m, v in t.get("materials", {}).items()
        ],
        "",
        "- Genuine references: a region whose mean embedding lies farther from genuine training images than "
        f"{_quantile(limits.get('embedding_quantile', 0.999))} of genuine validation regions would (log-normal fit), "
        "or whose mean whole-frame texture lies farther from genuine images' than "
        f"{_quantile(limits.get('texture_quantile', 0.99))} of genuine validation regions would "
        f"({', '.join(limits.get('texture_families', ['spectrum', 'blobs', 'sizes']))} judged apart"
        f"{_per_count(limits.get('texture_region_images'))}{_budget(limits.get('texture_item_budget'))}), cannot be "
        "AUTHENTIC, however genuine its tiles score: a kind of counterfeit neither score met in training can still "
        "fail for looking unlike genuine.",
        "- Calibration, fitted on validation images:",
        "",
        *[
            f"  - {m}: calibrated image logit = {c['slope']:.3f} x mean tile logit + "
            f"{c.get('texture_slope', 0.0):.3f} x texture score {c['intercept']:+.3f}"
            for m, c in manifest.get("calibration", {}).items()
        ],
        "",
        f"- Familiarity threshold {t['familiarity']:.2f}: below it an image is UNFAMILIAR_MATERIAL. Familiarity is the "
        "lesser of the material head's probability and an embedding-distance score against the material's "
        "training statistics (per tile, and for the image's mean embedding); the material head also has an "
        "`other` class trained on synthetic non-material "
        "tiles (flat colour, noise, gradients, blobs, stripes, 1/f noise, hard-edged mosaics, chequers, printed marks).",
        *_material_texture(manifest),
        "",
        "## Data",
        "",
        *_data(training),
        f"Counterfeit sources {', '.join(manifest['held_out_sources'])} are held out of training and threshold "
        "choice for every material and reported separately.",
        "",
        "## Targets",
        "",
        *_targets(manifest),
        "",
        *_fresh_targets(metrics),
        "## Metrics (per item)",
        "",
        "Test items were seen neither in training nor in calibration. An item is one specimen judged as the "
        "device would (same tiling, calibration and verdict code) on the fewest images a scan of its material "
        f"may stop at: {_images(training)}.",
        "",
        *_metric_rows(metrics),
        "",
        *_per_source(metrics),
        "",
        plots_section(plots or {}),
        "## Model",
        "",
        f"- Parameters: {training.get('parameters', '?')}; int8 TFLite file: {manifest['model']['size_bytes']} bytes.",
        f"- Cost: {_millions(metrics.get('macs_per_tile'))} multiply-accumulates per tile, "
        f"{_millions(metrics.get('macs_per_image'))} per image; on a Raspberry Pi 4 (64-bit, XNNPACK) about "
        f"{metrics.get('pi4_estimate_ms_per_image', '?')} ms per image, scaled from about 17 ms for int8 "
        "MobileNetV2 (300 M multiply-accumulates) in proportion to the count. An estimate, likely optimistic: "
        "depthwise layers run below MobileNetV2's rate, and frame scaling and tiling come on top.",
        f"- Training: {training.get('epochs', '?')} epochs x {training.get('steps_per_epoch', '?')} steps of "
        f"{training.get('batch_size', '?')} tiles, {training.get('train_seconds', '?')} s on "
        f"{training.get('machine', '?')}, TensorFlow {training.get('tensorflow', '?')}.",
        f"- Inference: {metrics.get('inference_ms_per_2028x1520_frame', '?')} ms per 2028 x 1520 frame "
        f"(tiling and int8 model), and {metrics.get('texture_ms_per_2028x1520_frame', '?')} ms more for its "
        "whole-frame texture, measured on the training machine.",
        "",
        "## Where it falls short (int8, test and held-out items)",
        "",
        *_weaknesses(metrics),
        "",
        "## Limits",
        "",
        "- Trained only on simulated specimens; real captures need a model trained on real ones.",
        f"- The network sees one scale only: {pre['tile_px']} px tiles of a frame {pre['work_width_px']} px wide. "
        "Cues wider than a tile (a twill's repeat and skew, a pitch to a few percent) come from the whole-frame "
        "texture instead, which has no tiles: where calibration leans on it, the heat-map says less.",
        *_unjudged(metrics),
        "- Knows only the materials and item types listed; anything else should come out UNFAMILIAR_MATERIAL, "
        "but unfamiliarity is learnt from synthetic outliers only. The open-set tests (tests/test_open_set.py: real "
        "photographs and textures the model never saw) list the single images it still finds familiar.",
        "- Held-out counterfeit sources estimate how the model meets new makers; a false-accept rate measured "
        "on a few dozen items is coarse, and the split's few hundred counterfeits cannot show a rate of 0.5 % or "
        "0.1 % (`models/scripts/eval_items.py` judges any number of fresh items).",
        "",
    ]
    return "\n".join(lines)


def plots_section(plots: Mapping[str, str]) -> str:
    """Markdown showing the card's PNG plots, for ``{file name: caption}`` in the order given.

    File names are relative to MODEL_CARD.md, that is files in the bundle
    directory. Returns "" when ``plots`` is empty, so the card can always
    include the result.
    """
    if not plots:
        return ""
    lines = ["## Plots", ""]
    for name, caption in plots.items():
        alt = caption.replace("[", "(").replace("]", ")")
        lines += [f"![{alt}]({quote(name)})", "", f"*{caption}*", ""]
    return "\n".join(lines)
