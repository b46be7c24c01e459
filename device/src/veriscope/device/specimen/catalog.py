"""The item types Veriscope knows: the regions a scan must cover and the material of each."""

from __future__ import annotations

from dataclasses import dataclass

DEFAULT_MIN_IMAGES = 2
"""Images a scan needs of each region unless the item type asks for more."""


@dataclass(frozen=True)
class RegionSpec:
    """One region of an item that a scan must image."""

    name: str
    """Region name, unique within its item type, for example "canvas"."""
    material: str
    """Material of the region; one of :data:`veriscope.device.specimen.materials.MATERIALS`."""
    min_images: int = DEFAULT_MIN_IMAGES
    """Good images the scan needs of this region."""
    hint: str = ""
    """Where to place the scanner, shown to the operator."""


@dataclass(frozen=True)
class ItemTypeSpec:
    """An item type: what it is called and which regions a scan covers."""

    name: str
    """Stable identifier, for example "tote-classic"."""
    display_name: str
    """Name shown to people."""
    regions: tuple[RegionSpec, ...]

    def region(self, name: str) -> RegionSpec:
        """The region called ``name``. Raises :class:`KeyError` naming the valid regions if there is none."""
        for region in self.regions:
            if region.name == name:
                return region
        valid = ", ".join(r.name for r in self.regions)
        raise KeyError(f"item type {self.name!r} has no region {name!r}; expected one of {valid}")

    @property
    def materials(self) -> tuple[str, ...]:
        """Materials of the regions, in region order, without repeats."""
        return tuple(dict.fromkeys(r.material for r in self.regions))


CATALOG: tuple[ItemTypeSpec, ...] = (
    ItemTypeSpec(
        "tote-classic",
        "Classic tote",
        (
            RegionSpec("canvas", "coated-canvas", hint="Flat printed canvas on a side panel, away from seams."),
            RegionSpec("trim", "grained-leather", hint="Leather trim along the top edge or a handle base."),
            RegionSpec("lining", "woven-fabric", hint="Inside lining, pulled flat, away from the pocket."),
        ),
    ),
    ItemTypeSpec(
        "wallet-compact",
        "Compact wallet",
        (
            RegionSpec("canvas", "coated-canvas", hint="Printed canvas on the outer flap."),
            RegionSpec("interior", "grained-leather", hint="Leather inside the card slots, pressed flat."),
        ),
    ),
    ItemTypeSpec(
        "scarf-twill",
        "Twill scarf",
        (RegionSpec("twill", "woven-fabric", min_images=3, hint="A flat single layer near the centre of the scarf."),),
    ),
)
"""Every known item type."""


def item_type(name: str) -> ItemTypeSpec:
    """Look up an item type by name. Raises :class:`KeyError` naming the known types if there is none."""
    for spec in CATALOG:
        if spec.name == name:
            return spec
    raise KeyError(f"unknown item type {name!r}; expected one of {', '.join(s.name for s in CATALOG)}")


def item_types_with(material: str) -> tuple[ItemTypeSpec, ...]:
    """Item types with at least one region of ``material`` (empty for an unknown material)."""
    return tuple(s for s in CATALOG if material in s.materials)
