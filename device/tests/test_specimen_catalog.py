"""The specimen package's metadata: catalog, materials, sources and the public surface of the package."""

from __future__ import annotations

import subprocess
import sys

import pytest

import veriscope.device.specimen as specimen
from veriscope.device.specimen import (
    CATALOG,
    DEFAULT_MIN_IMAGES,
    GENUINE,
    HELD_OUT_SOURCES,
    MATERIAL_DESCRIPTIONS,
    MATERIALS,
    SOURCES,
    item_type,
    item_types_with,
    source_info,
    superfake_sources,
)


def test_materials_and_sources_have_the_agreed_names() -> None:
    assert MATERIALS == ("coated-canvas", "grained-leather", "woven-fabric")
    expected_sources = tuple(["genuine"] + [f"counterfeit-{c}" for c in "abcdef"])
    assert expected_sources == SOURCES
    assert set(HELD_OUT_SOURCES) == {"counterfeit-e", "counterfeit-f"}
    assert set(MATERIAL_DESCRIPTIONS) == set(MATERIALS)


def test_every_region_material_exists_and_region_names_are_unique() -> None:
    names = [spec.name for spec in CATALOG]
    assert len(names) == len(set(names))
    for spec in CATALOG:
        assert spec.regions, spec.name
        assert len({r.name for r in spec.regions}) == len(spec.regions)
        for region in spec.regions:
            assert region.material in MATERIALS
            assert region.min_images >= 1
            assert region.hint


def test_tote_has_the_three_required_regions() -> None:
    tote = item_type("tote-classic")
    assert [(r.name, r.material) for r in tote.regions] == [
        ("canvas", "coated-canvas"),
        ("trim", "grained-leather"),
        ("lining", "woven-fabric"),
    ]
    assert tote.region("canvas").min_images == DEFAULT_MIN_IMAGES == 2
    assert {"wallet-compact", "scarf-twill"} <= {s.name for s in CATALOG}


def test_every_material_is_used_by_some_item_type() -> None:
    for material in MATERIALS:
        assert item_types_with(material)


def test_unknown_names_raise_key_error_naming_the_choices() -> None:
    with pytest.raises(KeyError, match="tote-classic"):
        item_type("handbag-nonexistent")
    with pytest.raises(KeyError, match="canvas"):
        item_type("tote-classic").region("sole")
    with pytest.raises(KeyError, match="coated-canvas"):
        source_info("denim", "genuine")
    with pytest.raises(KeyError, match="counterfeit-a"):
        source_info("woven-fabric", "counterfeit-z")


def test_source_metadata() -> None:
    for material in MATERIALS:
        supers = superfake_sources(material)
        assert len(supers) >= 2
        assert GENUINE not in supers
        held_out_supers = set(supers) & set(HELD_OUT_SOURCES)
        # The unseen fakes are varied: at most one of the two is a superfake.
        assert len(held_out_supers) <= 1
        for source in SOURCES:
            info = source_info(material, source)
            assert info.genuine == (source == GENUINE)
            assert info.held_out == (source in HELD_OUT_SOURCES)
            assert bool(info.description) == (source != GENUINE)
            assert info.superfake == (source in supers)


def test_all_is_sorted_and_complete() -> None:
    exported = specimen.__all__
    assert exported == sorted(exported, key=lambda n: (not n.isupper(), n))
    for name in exported:
        assert getattr(specimen, name) is not None
    public = {n for n in dir(specimen) if not n.startswith("_") and n not in ("annotations", "TYPE_CHECKING", "Any")}
    modules = {"catalog", "dataset", "imaging", "materials", "surface"}
    assert public - modules <= set(exported)


def test_package_does_not_pull_in_grpc() -> None:
    code = (
        "import sys, veriscope.device.specimen as s; s.generate_dataset; "
        "bad = [m for m in sys.modules if m.startswith(('grpc', 'veriscope.v1', 'google.protobuf'))]; "
        "print(bad); sys.exit(1 if bad else 0)"
    )
    result = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=False)
    assert result.returncode == 0, result.stdout + result.stderr
