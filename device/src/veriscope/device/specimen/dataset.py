"""Write a training dataset of simulated captures: ``ROOT/<material>/<source>/<item_id>/<nnn>.png``.

Images are what a careful operator gets on the real unit: in focus within the
depth of field, well exposed under the white ring, at a random position,
rotation and small scale change, with sensor noise, sometimes a JPEG round trip
and sometimes dust on the cover glass, scaled down to ``image_width`` (the
full field of view). ``ROOT/dataset.json`` summarises what was written. The
output depends only on the arguments (not on the number of workers).

Command line::

    python -m veriscope.device.specimen.dataset --out DIR --items-per-source N --images-per-item M \\
        [--materials ...] [--sources ...] [--seed S] [--width W] [--workers K]
"""

from __future__ import annotations

import argparse
import json
import multiprocessing
import sys
import time
import zlib
from collections.abc import Callable, Iterator, Sequence
from dataclasses import asdict, dataclass, field
from pathlib import Path

import numpy as np
from PIL import Image

from veriscope.device.specimen.catalog import item_types_with
from veriscope.device.specimen.imaging import Optics, good_pose, in_focus_steps, jpeg_roundtrip, render
from veriscope.device.specimen.materials import MATERIALS, SOURCES, check_material, check_source, source_info
from veriscope.device.specimen.surface import VirtualItem
from veriscope.device.types import Lighting

FORMAT_VERSION = 1
"""Version of the dataset layout and of ``dataset.json``."""

_RING_DUTY_PCT = 60
_EXPOSURE_US = 8000
_JPEG_PROBABILITY = 0.5
_DUST_PROBABILITY = 0.3
_SEED_STRIDE = 1_000_000


@dataclass(frozen=True)
class DatasetSummary:
    """What :func:`generate_dataset` wrote."""

    root: Path
    images: int
    """Images written in total."""
    items: int
    """Distinct physical items imaged."""
    counts: dict[str, dict[str, int]] = field(default_factory=dict)
    """Images per material, then per source."""
    seconds: float = 0.0
    """Wall time taken."""


@dataclass(frozen=True)
class _Job:
    root: str
    material: str
    source: str
    index: int
    seed: int
    images: int
    width: int
    jpeg: tuple[int, int] | None


def item_for(material: str, source: str, index: int, seed: int) -> tuple[VirtualItem, str]:
    """The virtual item (and its region of ``material``) that a dataset with ``seed`` uses as item ``index``.

    Item types that have ``material`` take turns; item seeds are
    ``seed * 1_000_000 + index``, so item ids are unique within a dataset.
    Raises :class:`KeyError` for an unknown material or source and
    :class:`ValueError` for an index outside 0..999999.
    """
    check_material(material)
    check_source(source)
    if not 0 <= index < _SEED_STRIDE:
        raise ValueError(f"item index must be 0..{_SEED_STRIDE - 1}, got {index}")
    types = item_types_with(material)
    spec = types[index % len(types)]
    region = next(r.name for r in spec.regions if r.material == material)
    return VirtualItem(spec.name, source, seed * _SEED_STRIDE + index), region


def generate_dataset(
    root: Path,
    *,
    materials: Sequence[str] | None = None,
    sources: Sequence[str] | None = None,
    items_per_source: int,
    images_per_item: int,
    image_width: int = 512,
    seed: int = 0,
    jpeg_quality_range: tuple[int, int] | None = (80, 95),
    progress: Callable[[int, int], None] | None = None,
    workers: int = 1,
) -> DatasetSummary:
    """Render and write a dataset under ``root``; return a summary (also written to ``root/dataset.json``).

    ``materials`` and ``sources`` default to all. ``jpeg_quality_range``
    (inclusive) is the quality of the JPEG round trip that about half the
    images get; ``None`` disables it. ``progress(done, total)`` is called after
    each item. ``workers`` > 1 renders items in that many processes. Existing
    files are overwritten. Raises :class:`KeyError` for unknown names and
    :class:`ValueError` for bad counts or sizes.
    """
    materials = tuple(materials) if materials is not None else MATERIALS
    sources = tuple(sources) if sources is not None else SOURCES
    for m in materials:
        check_material(m)
    for s in sources:
        check_source(s)
    if items_per_source < 1 or images_per_item < 1:
        raise ValueError("items_per_source and images_per_item must be >= 1")
    if not 32 <= image_width <= Optics().sensor_width_px:
        raise ValueError(f"image_width must be 32..{Optics().sensor_width_px}, got {image_width}")
    if jpeg_quality_range is not None and not 1 <= jpeg_quality_range[0] <= jpeg_quality_range[1] <= 95:
        raise ValueError(f"jpeg_quality_range must be within 1..95 and ordered, got {jpeg_quality_range}")
    if seed < 0:
        raise ValueError(f"seed must be >= 0, got {seed}")

    started = time.monotonic()
    root = Path(root)
    root.mkdir(parents=True, exist_ok=True)
    jobs = [
        _Job(str(root), m, s, k, seed, images_per_item, image_width, jpeg_quality_range)
        for m in materials
        for s in sources
        for k in range(items_per_source)
    ]
    total = len(jobs) * images_per_item
    counts: dict[str, dict[str, int]] = {m: dict.fromkeys(sources, 0) for m in materials}
    done = 0
    if progress is not None:
        progress(0, total)
    for material, source, written in _run(jobs, workers):
        counts[material][source] += written
        done += written
        if progress is not None:
            progress(done, total)

    summary = DatasetSummary(root, done, len(jobs), counts, time.monotonic() - started)
    _write_manifest(summary, seed=seed, width=image_width, images_per_item=images_per_item, jpeg=jpeg_quality_range)
    return summary


def _run(jobs: list[_Job], workers: int) -> Iterator[tuple[str, str, int]]:
    if workers <= 1 or len(jobs) <= 1:
        yield from map(_render_item, jobs)
        return
    # Items of one material and source run in order within a worker's chunk, so surface caches hit.
    with multiprocessing.get_context("spawn").Pool(workers) as pool:
        yield from pool.imap(_render_item, jobs, chunksize=1)


def _render_item(job: _Job) -> tuple[str, str, int]:
    item, region = item_for(job.material, job.source, job.index, job.seed)
    surface = item.surface(region)
    folder = Path(job.root) / job.material / job.source / item.item_id
    folder.mkdir(parents=True, exist_ok=True)
    optics = Optics()
    item_rng = np.random.default_rng([job.seed, zlib.crc32(item.item_id.encode()), zlib.crc32(region.encode())])
    # One scanning session per item: the cover glass carries the same dust in all its images.
    dust_seed = int(item_rng.integers(0, 2**31)) if item_rng.random() < _DUST_PROBABILITY else None
    thickness_um = float(item_rng.uniform(600.0, 1600.0))
    for n in range(job.images):
        rng = np.random.default_rng([job.seed, zlib.crc32(item.item_id.encode()), zlib.crc32(region.encode()), n])
        pose = good_pose(rng, surface_z_um=thickness_um)
        # A careful operator's autofocus lands within a quarter of the depth of field.
        focus = in_focus_steps(pose, optics) + rng.normal(0.0, 0.25 * optics.depth_of_field_um) / (
            optics.focus_um_per_step
        )
        image = render(
            surface,
            pose,
            duties={Lighting.WHITE_RING: _RING_DUTY_PCT},
            exposure_us=int(_EXPOSURE_US * rng.uniform(0.85, 1.15)),
            analogue_gain=1.0,
            focus_steps=round(focus),
            rng=rng,
            optics=optics,
            width=job.width,
            dust_seed=dust_seed,
        )
        if job.jpeg is not None and rng.random() < _JPEG_PROBABILITY:
            image = jpeg_roundtrip(image, int(rng.integers(job.jpeg[0], job.jpeg[1] + 1)))
        Image.fromarray(image, "RGB").save(folder / f"{n:03d}.png", compress_level=1)
    return job.material, job.source, job.images


def _write_manifest(
    summary: DatasetSummary, *, seed: int, width: int, images_per_item: int, jpeg: tuple[int, int] | None
) -> None:
    materials = {}
    for material, per_source in summary.counts.items():
        materials[material] = {
            source: {
                "images": n,
                "items": n // images_per_item,
                **{k: v for k, v in asdict(source_info(material, source)).items() if k not in ("material", "source")},
            }
            for source, n in per_source.items()
        }
    manifest = {
        "format": FORMAT_VERSION,
        "generator": "veriscope.device.specimen",
        "layout": "<material>/<source>/<item_id>/<nnn>.png",
        "seed": seed,
        "image_width": width,
        "images_per_item": images_per_item,
        "jpeg_quality_range": list(jpeg) if jpeg is not None else None,
        "total_images": summary.images,
        "total_items": summary.items,
        "optics": asdict(Optics()),
        "materials": materials,
    }
    (summary.root / "dataset.json").write_text(json.dumps(manifest, indent=2) + "\n")


def main(argv: Sequence[str] | None = None) -> int:
    """Command-line entry point; returns the exit status."""
    parser = argparse.ArgumentParser(
        prog="python -m veriscope.device.specimen.dataset", description="Write a simulated capture dataset."
    )
    parser.add_argument("--out", type=Path, required=True, help="dataset root directory")
    parser.add_argument("--items-per-source", type=int, required=True)
    parser.add_argument("--images-per-item", type=int, required=True)
    parser.add_argument("--materials", nargs="+", choices=MATERIALS, default=None)
    parser.add_argument("--sources", nargs="+", choices=SOURCES, default=None)
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--width", type=int, default=512, help="image width in pixels (full field of view)")
    parser.add_argument("--workers", type=int, default=1, help="worker processes")
    parser.add_argument("--no-jpeg", action="store_true", help="skip the JPEG round trip")
    args = parser.parse_args(argv)
    started = time.monotonic()

    def show(done: int, total: int) -> None:
        elapsed = time.monotonic() - started
        rate = done / elapsed if elapsed > 0 else 0.0
        sys.stderr.write(f"\r{done}/{total} images  {rate:5.1f} img/s  {elapsed:6.0f} s")
        sys.stderr.flush()

    summary = generate_dataset(
        args.out,
        materials=args.materials,
        sources=args.sources,
        items_per_source=args.items_per_source,
        images_per_item=args.images_per_item,
        image_width=args.width,
        seed=args.seed,
        jpeg_quality_range=None if args.no_jpeg else (80, 95),
        progress=show,
        workers=args.workers,
    )
    sys.stderr.write("\n")
    print(f"wrote {summary.images} images of {summary.items} items to {summary.root} in {summary.seconds:.0f} s")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
