"""The materials and sources Veriscope simulates, and what sets each counterfeit source apart.

Every material has the same seven sources: ``genuine`` and ``counterfeit-a``
to ``counterfeit-f``. Counterfeits differ from genuine the way real fakes do
(weave density and twist, halftone screen and ink bleed, embossed instead of
natural grain, pores, gloss, optical brighteners). Superfakes are close enough
that one poor image cannot tell them apart; many good images can.
``counterfeit-e`` and ``counterfeit-f`` are meant to be held out of training
as unseen fakes.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

from veriscope.device.specimen import _canvas, _fabric, _leather
from veriscope.device.specimen._synth import Recipe

MATERIALS: tuple[str, ...] = ("coated-canvas", "grained-leather", "woven-fabric")
"""Material names, as used in dataset folders and the catalog."""

GENUINE = "genuine"
"""The one source that is not a counterfeit."""

SOURCES: tuple[str, ...] = (
    GENUINE,
    "counterfeit-a",
    "counterfeit-b",
    "counterfeit-c",
    "counterfeit-d",
    "counterfeit-e",
    "counterfeit-f",
)
"""Source names, the same for every material."""

HELD_OUT_SOURCES: tuple[str, ...] = ("counterfeit-e", "counterfeit-f")
"""Counterfeit sources meant to be kept out of training and used as unseen fakes."""

MATERIAL_DESCRIPTIONS: dict[str, str] = {
    "coated-canvas": "Printed coated canvas: halftoned inks on a grained coating over a woven cotton base.",
    "grained-leather": "Grained leather: natural pebble grain with creases and hair-follicle pores.",
    "woven-fabric": "Woven fabric: a 2/1 twill of twisted staple yarns.",
}
"""One sentence on each genuine material."""

_RECIPES: dict[str, dict[str, Recipe[Any]]] = {
    "coated-canvas": _canvas.RECIPES,
    "grained-leather": _leather.RECIPES,
    "woven-fabric": _fabric.RECIPES,
}
_SPREADS: dict[str, dict[str, float]] = {
    "coated-canvas": _canvas.SPREAD,
    "grained-leather": _leather.SPREAD,
    "woven-fabric": _fabric.SPREAD,
}


@dataclass(frozen=True)
class SourceInfo:
    """What a source is, for model cards and explanations."""

    material: str
    source: str
    description: str
    """One sentence on how this source differs from genuine ("" for genuine)."""
    superfake: bool
    """True when one poor image cannot tell it from genuine (many good images can)."""
    held_out: bool
    """True for the sources meant to stay out of training."""

    @property
    def genuine(self) -> bool:
        """True for the genuine source."""
        return self.source == GENUINE


def source_info(material: str, source: str) -> SourceInfo:
    """Describe ``source`` of ``material``. Raises :class:`KeyError` naming the valid choices if either is unknown."""
    recipe = _recipe(material, source)
    return SourceInfo(material, source, recipe.description, recipe.superfake, source in HELD_OUT_SOURCES)


@dataclass(frozen=True)
class Separation:
    """How far a source's recipe sits from genuine, measured against item-to-item variance."""

    spreads: float
    """Distance in the parameters that vary between items, in units of their spread (root of summed squares)."""
    fixed: tuple[str, ...]
    """Differing parameters that do not vary between items: extra evidence whenever the optics resolve them."""


def separation(material: str, source: str) -> Separation:
    """How far ``source`` of ``material`` is from genuine. Raises :class:`KeyError` for unknown names."""
    params, genuine = vars(_recipe(material, source).params), vars(_recipe(material, GENUINE).params)
    spread = _SPREADS[material]
    changed = [k for k in params if params[k] != genuine[k]]
    total = sum(((params[k] - genuine[k]) / spread[k]) ** 2 for k in changed if k in spread)
    return Separation(float(total**0.5), tuple(k for k in changed if k not in spread))


def superfake_sources(material: str) -> tuple[str, ...]:
    """The superfake sources of ``material``, in source order. Raises :class:`KeyError` for an unknown material."""
    return tuple(s for s in SOURCES if _recipe(material, s).superfake)


def check_material(material: str) -> None:
    """Raise :class:`KeyError` with the valid names unless ``material`` is known."""
    if material not in _RECIPES:
        raise KeyError(f"unknown material {material!r}; expected one of {', '.join(MATERIALS)}")


def check_source(source: str) -> None:
    """Raise :class:`KeyError` with the valid names unless ``source`` is known."""
    if source not in SOURCES:
        raise KeyError(f"unknown source {source!r}; expected one of {', '.join(SOURCES)}")


def _recipe(material: str, source: str) -> Recipe[Any]:
    check_material(material)
    check_source(source)
    return _RECIPES[material][source]
