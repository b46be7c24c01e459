"""Writes a training data set with the device's specimen simulator.

Genuine items get their own count: every material has one genuine source
against six counterfeit ones, and the genuine class needs as many distinct
items as the counterfeits together to learn what varies between real items.
"""

from __future__ import annotations

import sys
import time
from collections.abc import Sequence
from pathlib import Path

from veriscope.device.specimen import GENUINE, MATERIALS, SOURCES, generate_dataset


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
    if not quiet:
        sys.stderr.write("\n")
    return written
