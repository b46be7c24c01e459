"""Command line: ``python -m veriscope.training {generate,train}``."""

from __future__ import annotations

import argparse
import sys
from collections.abc import Sequence
from dataclasses import replace
from pathlib import Path

from veriscope.training.config import MATERIALS, TrainConfig


def _catalog_snapshot() -> tuple[dict[str, object], ...]:
    """The simulator catalog's item types as manifest entries."""
    from veriscope.device.specimen import catalog

    return tuple(
        {
            "name": spec.name,
            "display_name": spec.display_name,
            "regions": [
                {"name": r.name, "material": r.material, "min_images": r.min_images, "hint": r.hint}
                for r in spec.regions
            ],
        }
        for spec in catalog.CATALOG
    )


def _generate(args: argparse.Namespace) -> int:
    from veriscope.training import simulate

    simulate.generate(
        Path(args.data),
        genuine_items=args.genuine_items,
        counterfeit_items=args.counterfeit_items,
        images_per_item=args.images_per_item,
        seed=args.seed,
    )
    return 0


def _train(args: argparse.Namespace) -> int:
    from veriscope.training import train

    config = TrainConfig(data_root=Path(args.data), bundle_dir=Path(args.bundle), name=args.name, version=args.version)
    config = replace(config, seed=args.seed, item_types=_catalog_snapshot())
    if args.epochs is not None:
        config = replace(config, epochs=args.epochs)
    if args.steps is not None:
        config = replace(config, steps_per_epoch=args.steps)
    if args.checkpoint:
        config = replace(config, checkpoint=Path(args.checkpoint), reuse_checkpoint=args.reuse_checkpoint)
    if args.smoke:
        config = config.smoke_variant()
    train.run(config)
    return 0


def main(argv: Sequence[str] | None = None) -> int:
    """Entry point. Returns the process exit status."""
    parser = argparse.ArgumentParser(prog="python -m veriscope.training", description=__doc__)
    sub = parser.add_subparsers(dest="command", required=True)
    gen = sub.add_parser("generate", help="simulate a specimen data set")
    gen.add_argument("--data", required=True, help="output folder, ROOT/<material>/<source>/<item>/*.png")
    gen.add_argument("--genuine-items", type=int, default=200, help="genuine items per material (default 200)")
    gen.add_argument(
        "--counterfeit-items", type=int, default=30, help="items per counterfeit source and material (default 30)"
    )
    gen.add_argument("--images-per-item", type=int, default=4, help="captures of each item (default 4)")
    gen.add_argument("--seed", type=int, default=0, help="seed of the item draws; a seed always gives the same data")
    gen.set_defaults(run=_generate)
    tr = sub.add_parser("train", help="train and write a model bundle")
    tr.add_argument("--data", required=True, help="specimen folder made by `generate`")
    tr.add_argument("--bundle", required=True, help="bundle folder to write, e.g. models/bundles/veriscope-demo")
    tr.add_argument("--name", default="veriscope-demo", help="bundle name written to the manifest")
    tr.add_argument("--version", default="0.3.3", help="semantic version of the bundle")
    tr.add_argument("--epochs", type=int, help="training epochs (default 20)")
    tr.add_argument("--steps", type=int, help="steps per epoch (default 160)")
    tr.add_argument("--seed", type=int, default=0, help="seed of the split, initialisation and sampling")
    tr.add_argument("--checkpoint", help="save the trained float network here (.keras)")
    tr.add_argument("--reuse-checkpoint", action="store_true", help="load --checkpoint instead of training")
    tr.add_argument("--smoke", action="store_true", help="a seconds-long run through the same code path")
    tr.set_defaults(run=_train)
    args = parser.parse_args(argv)
    print(f"materials: {', '.join(MATERIALS)}", file=sys.stderr)
    return int(args.run(args))
