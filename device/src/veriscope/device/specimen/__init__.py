"""Simulated specimens and the microscope that images them.

Two users share this package: the daemon's simulated camera renders the
virtual item under the lens with :func:`render`, and the training pipeline
writes datasets with :func:`generate_dataset`. It needs only numpy and Pillow
(no gRPC), so it imports inside a training environment.

- :mod:`~veriscope.device.specimen.materials`: materials, sources, superfakes and defect descriptions.
- :mod:`~veriscope.device.specimen.catalog`: item types, their regions and each region's material.
- :mod:`~veriscope.device.specimen.surface`: virtual items and their continuous, deterministic surfaces.
- :mod:`~veriscope.device.specimen.imaging`: optics, lighting and sensor model.
- :mod:`~veriscope.device.specimen.dataset`: the dataset writer and its command line.
"""

from __future__ import annotations

from typing import TYPE_CHECKING, Any

from veriscope.device.specimen.catalog import (
    CATALOG,
    DEFAULT_MIN_IMAGES,
    ItemTypeSpec,
    RegionSpec,
    item_type,
    item_types_with,
)
from veriscope.device.specimen.imaging import (
    Optics,
    Pose,
    careless_pose,
    develop,
    frame_size,
    good_pose,
    in_focus_steps,
    jpeg_roundtrip,
    render,
    render_raw,
    sharpness,
)
from veriscope.device.specimen.materials import (
    GENUINE,
    HELD_OUT_SOURCES,
    MATERIAL_DESCRIPTIONS,
    MATERIALS,
    SOURCES,
    Separation,
    SourceInfo,
    separation,
    source_info,
    superfake_sources,
)
from veriscope.device.specimen.surface import Surface, VirtualItem, material_surface

if TYPE_CHECKING:
    from veriscope.device.specimen.dataset import DatasetSummary, generate_dataset, item_for

_LAZY = {"DatasetSummary", "generate_dataset", "item_for"}


def __getattr__(name: str) -> Any:
    # The dataset writer loads on first use, so `python -m veriscope.device.specimen.dataset` runs it fresh.
    if name in _LAZY:
        from veriscope.device.specimen import dataset

        return getattr(dataset, name)
    raise AttributeError(f"module {__name__!r} has no attribute {name!r}")


__all__ = [
    "CATALOG",
    "DEFAULT_MIN_IMAGES",
    "GENUINE",
    "HELD_OUT_SOURCES",
    "MATERIALS",
    "MATERIAL_DESCRIPTIONS",
    "SOURCES",
    "DatasetSummary",
    "ItemTypeSpec",
    "Optics",
    "Pose",
    "RegionSpec",
    "Separation",
    "SourceInfo",
    "Surface",
    "VirtualItem",
    "careless_pose",
    "develop",
    "frame_size",
    "generate_dataset",
    "good_pose",
    "in_focus_steps",
    "item_for",
    "item_type",
    "item_types_with",
    "jpeg_roundtrip",
    "material_surface",
    "render",
    "render_raw",
    "separation",
    "sharpness",
    "source_info",
    "superfake_sources",
]
