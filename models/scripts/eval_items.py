"""Judge every item of a data set with a bundle, as the device would, and report per-item rates with 95 % bounds.

    .venv/bin/python models/scripts/eval_items.py [BUNDLE] --data DIR [--images N] [--whole-items [--record]] [--json]

DIR holds ``<material>/<source>/<item_id>/*.png`` (the layout the simulator
and ``veriscope export`` write). Each item is judged as a one-region item of its
material on its first N images (default: the fewest any of the bundle's item
types needs for that material), through the device's own analysis and verdict
code. This per-region count is the strict one for false accepts: a counterfeit
passes on its weakest material alone.

With ``--whole-items`` an item is instead what the device judges: every region
of its item type, each on the images that region needs, with one verdict for
the whole item. The folders of one item share its id (``<item_type>-<source>-
<n>``, as the simulator names them) under each region's material; an item with
a region missing or short of images is counted as skipped, not judged. A
counterfeit tote must then pass on its canvas, its leather and its lining, and
a genuine one must pass on all three.

``--record`` keeps a whole-item result in the bundle: a row per data folder in
its manifest's ``metrics.fresh_whole_items``, with totals and 95 % bounds over
every row, which its model card reports as the targets on fresh whole items.

Use items the bundle never saw: a fresh simulation with another seed, for
example

    .venv/bin/python -c "from pathlib import Path; from veriscope.device.specimen.dataset import generate_dataset as g; \\
        g(Path('build/eval-items'), sources=['counterfeit-e', 'counterfeit-f'], items_per_source=250, \\
        images_per_item=2, seed=7, workers=2)"

A false-accept rate of zero among n items bounds the true rate only to about
3 / n, so showing 0.5 % takes some 600 counterfeit items with no accept, and
0.1 % some 3,000.
"""

from __future__ import annotations

import argparse
import json
import os
import sys
import time
from collections import defaultdict
from collections.abc import Callable, Sequence
from functools import partial
from pathlib import Path
from typing import Any

from PIL import Image

from veriscope.device.inference import load_bundle
from veriscope.device.inference.bundle import ItemTypeSpec, ModelBundle, RegionSpec
from veriscope.device.pipeline.inference import Analyzer
from veriscope.device.pipeline.verdict import Reason, Verdict, decide
from veriscope.training import card
from veriscope.training.evaluate import upper_bound_95

Entries = dict[str, list[tuple[str, bool, Any]]] | None
"""Per region, each image's (id, passed quality, analysis); None for an item that cannot be judged."""

DEFAULT_BUNDLE = Path(__file__).resolve().parents[1] / "bundles" / "veriscope-demo"


def fewest_images(bundle: ModelBundle) -> dict[str, int]:
    """Per material, the fewest images any region of that material needs."""
    fewest: dict[str, int] = {}
    for spec in bundle.item_types:
        for region in spec.regions:
            fewest[region.material] = min(fewest.get(region.material, region.min_images), region.min_images)
    return fewest


def evaluate_whole_items(bundle: ModelBundle, root: Path) -> dict[str, Any]:
    """Every whole item's verdict under ``root``, counted per item type and source."""
    analyzer = Analyzer(bundle)
    ids: dict[tuple[str, str], ItemTypeSpec] = {}
    for folder in sorted(p for p in root.glob("*/*/*") if p.is_dir() and p.parts[-3] in bundle.materials):
        source, item_id = folder.parts[-2], folder.name
        spec = next((t for t in bundle.item_types if item_id.startswith(f"{t.name}-{source}-")), None)
        if spec is not None:
            ids[(source, item_id)] = spec
    if not ids:
        raise SystemExit(
            f"no items named <item_type>-<source>-<n> of {', '.join(t.name for t in bundle.item_types)} under {root}"
        )
    jobs = [
        (f"{spec.name}/{source}", spec, partial(_whole_item_entries, analyzer, root, spec, source, item_id))
        for (source, item_id), spec in sorted(ids.items())
    ]
    return _judge_all(bundle, jobs)


def _whole_item_entries(analyzer: Analyzer, root: Path, spec: ItemTypeSpec, source: str, item_id: str) -> Entries:
    """Each region's analysed images, or None when a region's folder is missing or short of images. Regions of one
    material take that folder's images in turn."""
    taken: dict[str, int] = defaultdict(int)
    entries: dict[str, list[tuple[str, bool, Any]]] = {}
    for region in spec.regions:
        paths = sorted((root / region.material / source / item_id).glob("*.png"))
        start = taken[region.material]
        chosen = paths[start : start + region.min_images]
        if len(chosen) < region.min_images:
            return None
        taken[region.material] = start + region.min_images
        entries[region.name] = [(p.name, True, analyzer.analyze_image(_rgb(p), region.material)) for p in chosen]
    return entries


def evaluate(bundle: ModelBundle, root: Path, images: int | None) -> dict[str, Any]:
    """Every item's verdict under ``root``, counted per material and source."""
    analyzer = Analyzer(bundle)
    fewest = fewest_images(bundle)
    folders = sorted(p for p in root.glob("*/*/*") if p.is_dir() and p.parts[-3] in bundle.materials)
    if not folders:
        raise SystemExit(f"no items of {', '.join(bundle.materials)} under {root} (<material>/<source>/<item_id>/)")
    jobs = []
    for folder in folders:
        material, source = folder.parts[-3], folder.parts[-2]
        need = images or fewest.get(material, 2)
        spec = ItemTypeSpec(f"eval-{material}", "evaluation item", (RegionSpec("surface", material, need, ""),))
        jobs.append((f"{material}/{source}", spec, partial(_region_entries, analyzer, folder, material, need)))
    return _judge_all(bundle, jobs)


def _region_entries(analyzer: Analyzer, folder: Path, material: str, need: int) -> Entries:
    """The folder's first ``need`` images as the one region of an evaluation item; exits if it has fewer."""
    paths = sorted(folder.glob("*.png"))[:need]
    if len(paths) < need:
        raise SystemExit(f"{folder}: {len(paths)} images, the evaluation needs {need}")
    return {"surface": [(p.name, True, analyzer.analyze_image(_rgb(p), material)) for p in paths]}


def _judge_all(bundle: ModelBundle, jobs: Sequence[tuple[str, ItemTypeSpec, Callable[[], Entries]]]) -> dict[str, Any]:
    """Decide each job's item (key, item type, its images' analyses or None to skip it) and count per key."""
    counts: dict[str, dict[str, int]] = defaultdict(lambda: {"items": 0, "accepted": 0, "unfamiliar": 0, "skipped": 0})
    started = time.monotonic()
    for n, (key, spec, entries_of) in enumerate(jobs, 1):
        row = counts[key]
        entries = entries_of()
        if entries is None:
            row["skipped"] += 1
        else:
            row["items"] += 1
            decision = decide(bundle, spec, entries)
            row["accepted"] += int(decision.verdict == Verdict.AUTHENTIC)
            row["unfamiliar"] += int(decision.reason == Reason.UNFAMILIAR_MATERIAL)
        if n % 50 == 0 or n == len(jobs):
            sys.stderr.write(f"\r{n}/{len(jobs)} items  {time.monotonic() - started:5.0f} s")
    sys.stderr.write("\n")
    return _summary(bundle, dict(sorted(counts.items())))


def _summary(bundle: ModelBundle, counts: dict[str, dict[str, int]]) -> dict[str, Any]:
    def total(select: Any) -> tuple[int, int]:
        rows = [r for key, r in counts.items() if select(key.split("/", 1)[1])]
        return sum(r["accepted"] for r in rows), sum(r["items"] for r in rows)

    genuine_ok, genuine_n = total(lambda s: s == "genuine")
    skipped = sum(r.get("skipped", 0) for r in counts.values())
    held_acc, held_n = total(lambda s: s in bundle.held_out_sources)
    fake_acc, fake_n = total(lambda s: s != "genuine")
    return {
        "bundle": f"{bundle.name} {bundle.version}",
        "per_source": counts,
        "genuine_verified": None if genuine_n == 0 else round(genuine_ok / genuine_n, 4),
        "genuine_items": genuine_n,
        "far_held_out": None if held_n == 0 else round(held_acc / held_n, 5),
        "far_held_out_upper95": upper_bound_95(held_acc, held_n),
        "held_out_items": held_n,
        "far_all": None if fake_n == 0 else round(fake_acc / fake_n, 5),
        "far_all_upper95": upper_bound_95(fake_acc, fake_n),
        "counterfeit_items": fake_n,
        "skipped_items": skipped,
    }


def _rgb(path: Path) -> Any:
    import numpy as np

    with Image.open(path) as image:
        return np.asarray(image.convert("RGB"))


def _pct(value: float | None) -> str:
    return "n/a" if value is None else f"{100 * value:.2f} %"


def record(bundle_dir: Path, data: Path, result: dict[str, Any]) -> dict[str, Any]:
    """Keep a whole-item ``result`` on the data set ``data`` in the bundle: in its manifest's
    ``metrics.fresh_whole_items`` (one row per data set, by folder name, replacing an earlier row of the same name;
    totals and 95 % bounds over every row), and in MODEL_CARD.md's targets, re-rendered above its plots.
    Returns the new ``fresh_whole_items``."""
    rows = result["per_source"]

    def count(select: Callable[[str], bool], key: str) -> int:
        return sum(r[key] for k, r in rows.items() if select(k.split("/", 1)[1]))

    held = set(load_bundle(bundle_dir).held_out_sources)
    row = {
        "data": data.name,
        "genuine_items": count(lambda s: s == "genuine", "items"),
        "genuine_verified": count(lambda s: s == "genuine", "accepted"),
        "genuine_unfamiliar": count(lambda s: s == "genuine", "unfamiliar"),
        "held_out_items": count(lambda s: s in held, "items"),
        "held_out_accepted": count(lambda s: s in held, "accepted"),
        "counterfeit_items": count(lambda s: s != "genuine", "items"),
        "counterfeit_accepted": count(lambda s: s != "genuine", "accepted"),
        "counterfeit_unfamiliar": count(lambda s: s != "genuine", "unfamiliar"),
    }
    manifest_path = bundle_dir / "manifest.json"
    manifest = json.loads(manifest_path.read_text())
    fresh = manifest.setdefault("metrics", {}).get("fresh_whole_items") or {"sets": []}
    sets = [r for r in fresh["sets"] if r["data"] != row["data"]] + [row]
    total = {key: sum(r[key] for r in sets) for key in row if key != "data"}
    misses = upper_bound_95(total["genuine_items"] - total["genuine_verified"], total["genuine_items"])
    total["genuine_verified_lower95"] = None if misses is None else round(1.0 - misses, 4)
    total["held_out_upper95"] = upper_bound_95(total["held_out_accepted"], total["held_out_items"])
    total["counterfeit_upper95"] = upper_bound_95(total["counterfeit_accepted"], total["counterfeit_items"])
    fresh = {"sets": sets, "total": total}
    manifest["metrics"]["fresh_whole_items"] = fresh
    card_path = bundle_dir / "MODEL_CARD.md"
    old = card_path.read_text() if card_path.exists() else ""
    above = card.render(manifest, plots={"-": ""}).split("## Plots")[0]
    below = "## Plots" + old.split("## Plots", 1)[1] if "## Plots" in old else ""
    # Each file is replaced whole, so an interrupted run leaves the old one, never half a manifest.
    _replace(manifest_path, json.dumps(manifest, indent=2, allow_nan=False) + "\n")
    _replace(card_path, above + below if below else card.render(manifest))
    return fresh


def _replace(path: Path, text: str) -> None:
    """Write ``text`` to ``path`` through a temporary file beside it and an atomic rename."""
    temporary = path.with_name(f".{path.name}.tmp")
    temporary.write_text(text)
    os.replace(temporary, path)


def main(argv: Sequence[str] | None = None) -> int:
    """Entry point. Returns the process exit status."""
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("bundle", nargs="?", default=str(DEFAULT_BUNDLE), help="model bundle (default: the demo)")
    parser.add_argument("--data", required=True, help="items as <material>/<source>/<item_id>/*.png")
    parser.add_argument(
        "--images", type=int, help="images per item (default: the fewest a region of its material needs)"
    )
    parser.add_argument(
        "--whole-items",
        action="store_true",
        help="judge each item as the device does: every region of its item type, one verdict per item",
    )
    parser.add_argument("--json", action="store_true", help="print the summary as one JSON object")
    parser.add_argument(
        "--record",
        action="store_true",
        help="with --whole-items: keep the result in the bundle (manifest metrics.fresh_whole_items, one row per data "
        "folder name) and re-render its model card's targets on fresh whole items",
    )
    args = parser.parse_args(argv)
    if args.record and not args.whole_items:
        parser.error("--record keeps whole-item results only: add --whole-items")
    if args.images is not None and args.images < 1:
        parser.error(f"--images must be at least 1, got {args.images}")
    if args.whole_items and args.images is not None:
        parser.error("--images and --whole-items do not mix: a whole item uses the images each region needs")
    bundle = load_bundle(args.bundle)
    root = Path(args.data)
    result = evaluate_whole_items(bundle, root) if args.whole_items else evaluate(bundle, root, args.images)
    if args.record:
        record(Path(args.bundle), root, result)
    if args.json:
        print(json.dumps(result, indent=2))
        return 0
    print(f"{result['bundle']}, per {'whole item' if args.whole_items else 'item (one region)'}:")
    for key, row in result["per_source"].items():
        skipped = f"  ({row['skipped']} skipped: a region missing or short of images)" if row.get("skipped") else ""
        unfamiliar = f", {row['unfamiliar']} unfamiliar" if row.get("unfamiliar") else ""
        print(f"  {key:34s} {row['accepted']:5d} of {row['items']:5d} accepted{unfamiliar}{skipped}")
    print(f"genuine verified: {_pct(result['genuine_verified'])} of {result['genuine_items']}")
    print(
        f"false accepts, held-out sources: {_pct(result['far_held_out'])} of {result['held_out_items']} "
        f"(95 % upper bound {_pct(result['far_held_out_upper95'])})"
    )
    print(
        f"false accepts, all counterfeits: {_pct(result['far_all'])} of {result['counterfeit_items']} "
        f"(95 % upper bound {_pct(result['far_all_upper95'])})"
    )
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
