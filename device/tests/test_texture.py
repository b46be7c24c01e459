"""Whole-frame texture features: shape, rotation invariance, bad input, and separation on simulated specimens."""

from __future__ import annotations

from dataclasses import replace
from pathlib import Path

import numpy as np
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st
from PIL import Image

from veriscope.device.errors import InvalidArgument
from veriscope.device.pipeline import scoring, texture
from veriscope.device.specimen.dataset import generate_dataset


def _frames(root: Path, source: str) -> dict[str, list[np.ndarray]]:
    items: dict[str, list[np.ndarray]] = {}
    for path in sorted((root / "woven-fabric" / source).glob("*/*.png")):
        items.setdefault(path.parent.name, []).append(np.asarray(Image.open(path).convert("RGB")))
    return items


@pytest.fixture(scope="module")
def fabric(tmp_path_factory: pytest.TempPathFactory) -> dict[str, dict[str, list[np.ndarray]]]:
    """Two 512 px captures of 12 genuine and 4 items of each of three counterfeit woven fabrics."""
    root = tmp_path_factory.mktemp("fabric")
    generate_dataset(root, materials=["woven-fabric"], sources=["genuine"], items_per_source=12, images_per_item=2)
    generate_dataset(
        root,
        materials=["woven-fabric"],
        sources=["counterfeit-b", "counterfeit-e", "counterfeit-f"],
        items_per_source=4,
        images_per_item=2,
        seed=1,
    )
    return {s: _frames(root, s) for s in ("genuine", "counterfeit-b", "counterfeit-e", "counterfeit-f")}


def test_features_have_the_documented_size_and_are_finite(fabric: dict[str, dict[str, list[np.ndarray]]]) -> None:
    frame = next(iter(fabric["genuine"].values()))[0]
    features = texture.texture_features(frame)
    assert features.shape == (texture.FEATURE_SIZE,)
    assert features.dtype == np.float32
    assert np.all(np.isfinite(features))


def test_turning_the_item_barely_moves_the_features(fabric: dict[str, dict[str, list[np.ndarray]]]) -> None:
    square = [frames[0][:, : frames[0].shape[0]] for frames in fabric["genuine"].values()]
    features = np.stack([texture.texture_features(f) for f in square])
    std = features.std(axis=0) + 1e-6
    turned = texture.texture_features(np.ascontiguousarray(np.rot90(square[0])))
    moved = float(np.sqrt(np.mean(((turned - features[0]) / std) ** 2)))
    between = float(np.sqrt(np.mean(((features[1] - features[0]) / std) ** 2)))
    # A quarter turn maps the spectrum onto itself (up to the window): far less change than another genuine item.
    assert moved < 0.1 * between


def test_unseen_counterfeit_weaves_lie_beyond_every_genuine_item(
    fabric: dict[str, dict[str, list[np.ndarray]]],
) -> None:
    genuine = list(fabric["genuine"].values())
    reference, held = genuine[:8], genuine[8:]
    stats = texture.fit_texture_stats(np.stack([texture.texture_features(f) for frames in reference for f in frames]))

    def distances(frames: list[np.ndarray]) -> np.ndarray:
        return np.array(texture.raw_distances(np.stack([texture.texture_features(f) for f in frames]), stats))

    genuine_far = np.max([distances(frames) for frames in held], axis=0)
    assert genuine_far.shape == (len(texture.FAMILIES),)
    limited = stats.with_limits(genuine_far.tolist())
    for source in ("counterfeit-b", "counterfeit-e", "counterfeit-f"):
        nearest = min(
            texture.texture_distance(np.stack([texture.texture_features(f) for f in frames]), limited)
            for frames in fabric[source].values()
        )
        assert nearest > 1.0, f"{source}: {nearest:.2f} times the genuine limit"
    # The verdict's unit: genuine items sit inside the limits fitted from them.
    for frames in held:
        assert texture.texture_distance(np.stack([texture.texture_features(f) for f in frames]), limited) <= 1.0


def test_material_references_know_the_material_and_nothing_else(
    fabric: dict[str, dict[str, list[np.ndarray]]], tmp_path: Path
) -> None:
    def features(source: str, items: slice) -> np.ndarray:
        return np.stack(
            [texture.texture_features(f) for frames in list(fabric[source].values())[items] for f in frames]
        )

    # Fitted like training fits them: on every maker it was shown (here genuine and counterfeit-b), with each
    # family's limit 1.5 times as far as unseen frames of those makers reach.
    seen = np.concatenate([features("genuine", slice(0, 8)), features("counterfeit-b", slice(0, 2))])
    left_out = np.concatenate([features("genuine", slice(8, None)), features("counterfeit-b", slice(2, None))])
    whole = texture.fit_texture_stats(seen)
    reach = np.max([texture.raw_distances(f, whole) for f in left_out], axis=0)
    stats = replace(texture.fit_texture_stats(seen[:16]), material=whole.with_limits((1.5 * reach).tolist()).blocks)

    # Another material is not woven fabric, nor is a printed screen.
    generate_dataset(
        tmp_path, materials=["grained-leather"], sources=["genuine"], items_per_source=2, images_per_item=2
    )
    others = [np.asarray(Image.open(p).convert("RGB")) for p in sorted(tmp_path.glob("*/*/*/*.png"))]
    others.append(_two_ink_print(10.0, 0.0))
    nearest_other = min(texture.material_distance(texture.texture_features(f), stats) or 0.0 for f in others)
    assert nearest_other > 1.0
    assert max(scoring.texture_familiarity(texture.texture_features(f), stats) for f in others) < 0.5
    # One half exactly at the limit, and no opinion without references.
    frame = left_out[0]
    at_limit = replace(stats, material=whole.with_limits(list(texture.raw_distances(frame, whole))).blocks)
    assert texture.material_distance(frame, at_limit) == pytest.approx(1.0)
    assert scoring.texture_familiarity(frame, at_limit) == pytest.approx(0.5)
    plain = replace(stats, material=())
    assert texture.material_distance(frame, plain) is None and scoring.texture_familiarity(frame, plain) == 1.0


def _two_ink_print(angle_deg: float, skew_deg: float) -> np.ndarray:
    """A 512x384 print: a dark ink and an ochre ink, each a halftone screen of 58 px cells, the ochre one turned
    ``skew_deg`` from the dark one, laid side by side in bands; the whole screen sits at ``angle_deg``."""
    y, x = np.mgrid[0:384, 0:512].astype(np.float64)

    def screen(angle: float) -> np.ndarray:
        a = np.radians(angle)
        u, v = (x * np.cos(a) + y * np.sin(a)) / 58.0, (-x * np.sin(a) + y * np.cos(a)) / 58.0
        return np.clip((np.cos(2 * np.pi * u) + np.cos(2 * np.pi * v)) * 4.0 + 0.5, 0.0, 1.0)

    motif = (np.sin(2 * np.pi * (x + 0.6 * y) / 300.0) > 0.0).astype(np.float64)
    dark = screen(angle_deg) * (1.0 - motif)
    ochre = screen(angle_deg + skew_deg) * motif
    substrate = np.array([0.60, 0.47, 0.30])
    reflect = substrate * (1.0 - dark[..., None] * (1.0 - np.array([0.30, 0.19, 0.11])))
    reflect = reflect * (1.0 - ochre[..., None] * (1.0 - np.array([0.95, 0.66, 0.26])))
    noise = np.random.default_rng(int(angle_deg * 10 + skew_deg * 100)).normal(0.0, 2.0, reflect.shape)
    return np.clip(reflect * 400.0 + noise, 0, 255).astype(np.uint8)


def test_layers_tell_one_screen_from_two_screens_a_few_degrees_apart() -> None:
    part = dict(texture.FAMILIES)["layers"]
    bands = (part.stop - part.start) // 2

    def measure(frame: np.ndarray) -> tuple[float, float]:
        layers = texture.texture_features(frame)[part]
        # Over every band (the screen's fundamental, 1/58 cycles per pixel, and its sharp dots' harmonics): how alike
        # the two inks' angular profiles are, and how far apart their screens point, in degrees.
        return float(np.mean(layers[:bands])), float(np.mean(layers[bands:]))

    angles = (0.0, 17.0, 45.0)
    one_screen = [measure(_two_ink_print(angle, 0.0)) for angle in angles]
    two_screens = [measure(_two_ink_print(angle, 5.4)) for angle in angles]
    # Turning the print changes little; misregistered screens look less alike and point apart at every angle.
    assert max(m[0] for m in two_screens) < min(m[0] for m in one_screen) - 0.1, (one_screen, two_screens)
    assert min(m[1] for m in two_screens) > 2.0 * max(m[1] for m in one_screen), (one_screen, two_screens)
    assert all(m[1] < 2.5 for m in one_screen)


def test_the_furthest_group_names_what_differs() -> None:
    rng = np.random.default_rng(0)
    base = rng.normal(0.0, 1.0, (40, texture.FEATURE_SIZE)).astype(np.float32)
    stats = texture.fit_texture_stats(base)
    for phrase, part in texture.GROUPS:
        shifted = base[0].copy()
        shifted[part] += 25.0
        assert texture.furthest_group([shifted], stats) == phrase
        assert texture.texture_distance([shifted], stats) > 3 * texture.texture_distance([base[1]], stats)


def test_a_region_of_more_frames_is_judged_against_its_own_tighter_limit() -> None:
    rng = np.random.default_rng(3)
    stats = texture.fit_texture_stats(rng.normal(0.0, 1.0, (40, texture.FEATURE_SIZE)))
    families = len(texture.FAMILIES)
    tightened = stats.with_limits([2.0] * families, [{3: 1.0, 5: 0.5}] * families)
    block = tightened.blocks[0]
    assert block.limits_by_images == ((3, 1.0), (5, 0.5))
    assert [block.limit(n) for n in (1, 2, 3, 4, 5, 9)] == [2.0, 2.0, 1.0, 1.0, 0.5, 0.5]
    frames = rng.normal(0.0, 1.0, (5, texture.FEATURE_SIZE))
    for n, limit in ((2, 2.0), (3, 1.0), (5, 0.5)):
        raw = texture.raw_distances(frames[:n], tightened)
        assert texture.texture_distance(frames[:n], tightened) == pytest.approx(max(raw) / limit)
    # Without limits by image count every region size takes distance_ref.
    plain = stats.with_limits([2.0] * families)
    assert plain.blocks[0].limits_by_images == () and plain.blocks[0].limit(5) == 2.0


def test_statistics_for_another_feature_layout_are_refused() -> None:
    stats = texture.fit_texture_stats(np.random.default_rng(1).normal(size=(8, texture.FEATURE_SIZE)))
    other = texture.TextureStats("spectrum-v0", stats.blocks)
    with pytest.raises(InvalidArgument, match="spectrum-v0"):
        texture.texture_distance([np.zeros(texture.FEATURE_SIZE, np.float32)], other)
    with pytest.raises(ValueError, match=f"need {len(texture.FAMILIES)} limits"):
        stats.with_limits([1.0])
    with pytest.raises(ValueError, match="by image count"):
        stats.with_limits([1.0] * len(texture.FAMILIES), [{3: 0.5}])


def test_fitting_checks_its_input() -> None:
    with pytest.raises(ValueError, match="at least 2"):
        texture.fit_texture_stats(np.zeros((1, texture.FEATURE_SIZE)))
    with pytest.raises(ValueError, match="shrinkage"):
        texture.fit_texture_stats(np.zeros((4, texture.FEATURE_SIZE)), shrinkage=0.0)
    stats = texture.fit_texture_stats(np.random.default_rng(2).normal(size=(30, texture.FEATURE_SIZE)))
    sizes = [part.stop - part.start for _, part in texture.FAMILIES]
    # 30 images pin down 7 axes (one per four images), and never more than the family has.
    assert [b.components.shape for b in stats.blocks] == [(min(32, n, 30 // 4), n) for n in sizes]


@settings(max_examples=60, deadline=None)
@given(
    height=st.integers(0, 80),
    width=st.integers(0, 80),
    channels=st.sampled_from([1, 3, 4]),
    dtype=st.sampled_from([np.uint8, np.float32, np.int16]),
)
def test_any_array_is_measured_or_refused_clearly(height: int, width: int, channels: int, dtype: type) -> None:
    frame: np.ndarray = np.zeros((height, width, channels), dtype=dtype)
    good = channels == 3 and dtype is np.uint8 and min(height, width) >= texture.MIN_SIDE_PX
    if good:
        assert np.all(np.isfinite(texture.texture_features(frame)))  # a flat frame too: no division by zero
    else:
        with pytest.raises(InvalidArgument, match="texture needs"):
            texture.texture_features(frame)
