"""Writes a training data set with the device's specimen simulator.

Genuine items get their own count: every material has one genuine source
against six counterfeit ones, and the genuine class needs as many distinct
items as the counterfeits together to learn what varies between real items.
"""

from __future__ import annotations

import hashlib
import json
import sys
import time
from collections.abc import Sequence
from pathlib import Path

import veriscope.device.specimen as specimen
from veriscope.device.specimen import GENUINE, MATERIALS, SOURCES, generate_dataset

RECORD_FILE = "training-data.json"
"""Written beside the images: how they were made, for the bundle's provenance."""


def simulator_fingerprint() -> str:
    """SHA-256 over the simulator's source files: a bundle trained on one version may not fit another's images."""
    digest = hashlib.sha256()
    for path in sorted(Path(specimen.__file__).parent.glob("*.py")):
        digest.update(path.name.encode() + b"\0" + path.read_bytes())
    return digest.hexdigest()


def generate(
    root: Path,
    *,
    genuine_items: int,
    counterfeit_items: int,
    images_per_item: int,
    seed: int = 0,
    materials: Sequence[str] = MATERIALS,
    image_width: int = 512,
    workers: int = 2,
    quiet: bool = False,
) -> int:
    """Render ``genuine_items`` genuine and ``counterfeit_items`` items per counterfeit source, per material.

    Returns the number of images written under ``root``.
    """
    started = time.monotonic()

    def show(done: int, total: int) -> None:
        if not quiet:
            sys.stderr.write(f"\r{done}/{total} images  {time.monotonic() - started:6.0f} s")
            sys.stderr.flush()

    written = 0
    for sources, count in (((GENUINE,), genuine_items), (tuple(s for s in SOURCES if s != GENUINE), counterfeit_items)):
        if count > 0:
            summary = generate_dataset(
                root,
                materials=materials,
                sources=sources,
                items_per_source=count,
                images_per_item=images_per_item,
                image_width=image_width,
                seed=seed,
                progress=show,
                workers=workers,
            )
            written += summary.images
    record = {
        "simulator_sha256": simulator_fingerprint(),
        "seed": seed,
        "image_width": image_width,
        "genuine_items": genuine_items,
        "counterfeit_items": counterfeit_items,
        "images_per_item": images_per_item,
    }
    (root / RECORD_FILE).write_text(json.dumps(record, indent=2) + "\n")
    if not quiet:
        sys.stderr.write("\n")
    return written
