"""The microscope imaging model: determinism, continuity, focus, exposure, noise, lighting and artefacts."""

from __future__ import annotations

import itertools
import math
from collections.abc import Mapping

import numpy as np
import pytest

from veriscope.device.specimen import (
    Optics,
    Pose,
    Surface,
    VirtualItem,
    careless_pose,
    frame_size,
    good_pose,
    in_focus_steps,
    jpeg_roundtrip,
    render,
    render_raw,
    sharpness,
)
from veriscope.device.types import Lighting

RING: Mapping[Lighting, int] = {Lighting.WHITE_RING: 60}


@pytest.fixture(scope="module")
def fabric() -> Surface:
    return VirtualItem("scarf-twill", "genuine", 7).surface("twill")


@pytest.fixture(scope="module")
def canvas() -> Surface:
    return VirtualItem("tote-classic", "genuine", 3).surface("canvas")


@pytest.fixture(scope="module")
def leather() -> Surface:
    return VirtualItem("tote-classic", "genuine", 3).surface("trim")


def shot(surface: Surface | None, pose: Pose, *, seed: int = 0, focus: float | None = None, **kw: object) -> np.ndarray:
    args: dict[str, object] = {
        "duties": RING,
        "exposure_us": 8000,
        "analogue_gain": 1.0,
        "focus_steps": round(in_focus_steps(pose)) if focus is None else focus,
        "rng": np.random.default_rng(seed),
        "width": 320,
    }
    args.update(kw)
    return render(surface, pose, **args)  # type: ignore[arg-type]


def grey(image: np.ndarray) -> np.ndarray:
    return np.asarray(image.astype(np.float64) @ np.array([0.299, 0.587, 0.114]))


def test_same_item_pose_and_seed_give_identical_frames(fabric: Surface) -> None:
    pose = Pose(x_mm=2.0, y_mm=3.0, rotation_deg=33.0)
    a = shot(fabric, pose, seed=5)
    b = shot(VirtualItem("scarf-twill", "genuine", 7).surface("twill"), pose, seed=5)
    assert a.dtype == np.uint8 and a.shape == (240, 320, 3)
    assert np.array_equal(a, b)
    assert not np.array_equal(a, shot(fabric, pose, seed=6)), "noise must depend on the rng"


def test_different_item_seeds_give_different_surfaces(fabric: Surface) -> None:
    other = VirtualItem("scarf-twill", "genuine", 8).surface("twill")
    pose = Pose(x_mm=2.0, y_mm=3.0)
    a, b = grey(shot(fabric, pose)), grey(shot(other, pose))
    assert np.mean(np.abs(a - b)) > 5.0


def test_a_small_move_shows_the_same_surface_shifted(canvas: Surface) -> None:
    optics = Optics()
    width = 320
    step_mm = 0.1
    a = grey(shot(canvas, Pose(x_mm=5.0, y_mm=5.0), width=width))
    b = grey(shot(canvas, Pose(x_mm=5.0 + step_mm, y_mm=5.0), width=width))
    expected_px = step_mm / (optics.fov_width_mm / width)  # content moves left by this much
    shift, peak = _best_shift(a, b)
    assert abs(shift[1] - expected_px) <= 1.0 and abs(shift[0]) <= 1.0, shift
    assert peak > 0.9
    # Elsewhere on the surface the frame shows something else (the halftone lattice aside).
    far = grey(shot(canvas, Pose(x_mm=9.0, y_mm=1.7), width=width))
    assert abs(np.corrcoef(a.ravel(), far.ravel())[0, 1]) < 0.3


def _best_shift(a: np.ndarray, b: np.ndarray) -> tuple[tuple[int, int], float]:
    """Shift (dy, dx) such that b[y, x] ~ a[y + dy, x + dx], and the normalised correlation there."""
    a = (a - a.mean()) / a.std()
    b = (b - b.mean()) / b.std()
    corr = np.fft.irfft2(np.fft.rfft2(a) * np.conj(np.fft.rfft2(b)), s=a.shape)
    dy, dx = np.unravel_index(int(np.argmax(corr)), corr.shape)
    h, w = a.shape
    dy = dy - h if dy > h // 2 else dy
    dx = dx - w if dx > w // 2 else dx
    # Overlap correlation at that shift.
    ys, xs = slice(max(0, dy), h + min(0, dy)), slice(max(0, dx), w + min(0, dx))
    yb, xb = slice(max(0, -dy), h + min(0, -dy)), slice(max(0, -dx), w + min(0, -dx))
    peak = float(np.corrcoef(a[ys, xs].ravel(), b[yb, xb].ravel())[0, 1])
    return (int(dy), int(dx)), peak


def test_sharpness_peaks_in_focus_and_falls_off_monotonically(fabric: Surface) -> None:
    pose = Pose(x_mm=1.0, y_mm=1.0, rotation_deg=12.0, surface_z_um=1130.0)
    best = in_focus_steps(pose)
    assert best == pytest.approx(1130.0 / Optics().focus_um_per_step)
    offsets = [-60, -40, -24, -14, -8, -4, -1, 0, 1, 4, 8, 14, 24, 40, 60]
    # Same rng seed everywhere so only the focus changes between frames.
    values = [sharpness(shot(fabric, pose, focus=best + d, width=480)) for d in offsets]
    peak = offsets.index(0)
    assert max(values) == values[peak]
    for i in range(peak):
        assert values[i] < values[i + 1], (offsets[i], values)
    for i in range(peak, len(values) - 1):
        assert values[i] > values[i + 1], (offsets[i], values)
    # A whole depth of field away the frame is clearly softer; far away it is mush.
    assert values[offsets.index(24)] < 0.6 * values[peak]
    assert values[-1] < 0.2 * values[peak]


def test_tilt_blurs_the_edges_more_than_the_centre(fabric: Surface) -> None:
    flat = grey(shot(fabric, Pose(x_mm=3.0, y_mm=3.0), width=480))
    tilted = grey(shot(fabric, Pose(x_mm=3.0, y_mm=3.0, tilt_y_deg=3.0), width=480))

    def lap_var(g: np.ndarray) -> float:
        lap = g[1:-1, :-2] + g[1:-1, 2:] + g[:-2, 1:-1] + g[2:, 1:-1] - 4 * g[1:-1, 1:-1]
        return float(lap.var())

    w = flat.shape[1]
    edges = lap_var(tilted[:, : w // 5]) + lap_var(tilted[:, -w // 5 :])
    centre = lap_var(tilted[:, 2 * w // 5 : 3 * w // 5])
    flat_edges = lap_var(flat[:, : w // 5]) + lap_var(flat[:, -w // 5 :])
    flat_centre = lap_var(flat[:, 2 * w // 5 : 3 * w // 5])
    assert edges / 2 < 0.5 * centre
    assert edges / flat_edges < 0.5 * (centre / flat_centre)


def test_lift_off_defocuses_heavily(fabric: Surface) -> None:
    pose = Pose(x_mm=3.0, y_mm=3.0)
    lifted = Pose(x_mm=3.0, y_mm=3.0, lift_um=400.0)
    focus = in_focus_steps(pose)
    assert in_focus_steps(lifted) == pytest.approx(focus + 400.0 / Optics().focus_um_per_step)
    assert sharpness(shot(fabric, lifted, focus=focus)) < 0.2 * sharpness(shot(fabric, pose, focus=focus))


def test_motion_smears_along_its_direction(fabric: Surface) -> None:
    g = grey(shot(fabric, Pose(x_mm=3.0, y_mm=3.0, motion_px=60.0, motion_angle_deg=0.0), width=480))
    along = float(np.mean(np.diff(g, axis=1) ** 2))
    across = float(np.mean(np.diff(g, axis=0) ** 2))
    assert along < 0.5 * across


def test_default_exposure_is_well_calibrated_for_genuine_surfaces(
    canvas: Surface, leather: Surface, fabric: Surface
) -> None:
    for region, surface in (("canvas", canvas), ("leather", leather), ("fabric", fabric)):
        levels = []
        for seed in range(3):
            pose = good_pose(np.random.default_rng(seed))
            image = shot(surface, pose, seed=seed, width=512)
            levels.append(grey(image).mean())
            assert np.mean(image == 255) < 0.01, "default settings must not clip"
        assert 100.0 <= float(np.mean(levels)) <= 140.0, (region, levels)


def test_linear_signal_is_proportional_to_exposure_until_it_clips() -> None:
    card = Surface.uniform(0.18)
    pose = Pose()
    means = [
        float(
            render_raw(
                card,
                pose,
                duties=RING,
                exposure_us=e,
                analogue_gain=1.0,
                focus_steps=400,
                rng=np.random.default_rng(1),
                width=256,
            ).mean()
        )
        for e in (2000, 4000, 8000, 16000)
    ]
    for low, high in itertools.pairwise(means):
        assert high / low == pytest.approx(2.0, rel=0.03)
    gain2 = render_raw(
        card,
        pose,
        duties=RING,
        exposure_us=4000,
        analogue_gain=2.0,
        focus_steps=400,
        rng=np.random.default_rng(1),
        width=256,
    )
    assert float(gain2.mean()) == pytest.approx(means[2], rel=0.03)
    duty = render_raw(
        card,
        pose,
        duties={Lighting.WHITE_RING: 30},
        exposure_us=8000,
        analogue_gain=1.0,
        focus_steps=400,
        rng=np.random.default_rng(1),
        width=256,
    )
    assert float(duty.mean()) == pytest.approx(means[1], rel=0.03)
    # A white card at a long exposure clips at the ADC's full scale.
    white = render_raw(
        Surface.uniform(0.9),
        pose,
        duties=RING,
        exposure_us=200_000,
        analogue_gain=1.0,
        focus_steps=400,
        rng=np.random.default_rng(1),
        width=256,
    )
    assert float(white.max()) == Optics().dn_max
    assert np.mean(white == Optics().dn_max) > 0.9


def test_noise_variance_grows_linearly_with_the_mean() -> None:
    # A small sensor rendered at full resolution: one sensor pixel per frame pixel, so no scaler averaging.
    optics = Optics(sensor_width_px=256, sensor_height_px=192, vignetting=0.0)
    card = Surface.uniform(0.5)
    means, variances = [], []
    for exposure in (500, 1500, 3000, 6000, 10000):
        frames = [
            render_raw(
                card,
                Pose(),
                duties=RING,
                exposure_us=exposure,
                analogue_gain=1.0,
                focus_steps=400,
                rng=np.random.default_rng(seed),
                optics=optics,
            )
            for seed in (1, 2)
        ]
        diff = frames[0][..., 1].astype(np.float64) - frames[1][..., 1]
        means.append(float(frames[0][..., 1].mean()))
        variances.append(float(diff.var() / 2.0))
    slope, intercept = np.polyfit(means, variances, 1)
    dn_per_e = optics.dn_max / optics.full_well_e
    assert slope == pytest.approx(dn_per_e, rel=0.1), "shot noise: variance / mean = DN per electron"
    fitted = np.polyval([slope, intercept], means)
    residual = np.sum((np.asarray(variances) - fitted) ** 2) / np.sum((np.asarray(variances) - np.mean(variances)) ** 2)
    assert residual < 0.01
    assert intercept < 0.2 * variances[0] + (optics.read_noise_e * dn_per_e) ** 2 * 3


def test_empty_stage_is_dim_and_featureless() -> None:
    image = shot(None, Pose(), width=320)
    g = grey(image)
    assert g.mean() < 60.0
    centre = g[60:180, 80:240]
    assert centre.std() < 3.0
    assert sharpness(image) < 0.001


def test_raking_and_uv_lighting(canvas: Surface, leather: Surface) -> None:
    pose = Pose(x_mm=4.0, y_mm=2.0)
    focus = round(in_focus_steps(pose))
    dark = shot(canvas, pose, duties={}, focus=focus)
    assert grey(dark).mean() < 3.0, "all LEDs off gives a black frame"
    raking = grey(shot(leather, pose, duties={Lighting.RAKING: 80}, focus=focus))
    ring = grey(shot(leather, pose, focus=focus))
    # Raking light turns relief into strong shading: much more relative contrast than the diffuse ring.
    assert raking.std() / raking.mean() > 1.5 * ring.std() / ring.mean()
    # Optical brighteners glow blue under UV; genuine barely fluoresces.
    uv = {Lighting.UV: 100}
    fake = VirtualItem("tote-classic", "counterfeit-d", 3).surface("canvas")
    blue_fake = shot(fake, pose, duties=uv, focus=focus, exposure_us=30000)[..., 2].mean()
    blue_genuine = shot(canvas, pose, duties=uv, focus=focus, exposure_us=30000)[..., 2].mean()
    assert blue_fake > 2.0 * blue_genuine


def test_dust_stays_put_on_the_sensor() -> None:
    card = Surface.uniform(0.3)
    ratios = []
    for x_mm in (1.0, 7.0):
        clean = render_raw(
            card,
            Pose(x_mm=x_mm),
            duties=RING,
            exposure_us=8000,
            analogue_gain=1.0,
            focus_steps=400,
            rng=np.random.default_rng(4),
            width=320,
        )
        dusty = render_raw(
            card,
            Pose(x_mm=x_mm),
            duties=RING,
            exposure_us=8000,
            analogue_gain=1.0,
            focus_steps=400,
            rng=np.random.default_rng(4),
            width=320,
            dust_seed=99,
        )
        ratios.append(dusty.mean(axis=2) / np.maximum(clean.mean(axis=2), 1.0))
    assert ratios[0].min() < 0.9, "the dust seed puts visible specks on the glass"
    assert np.corrcoef(ratios[0].ravel(), ratios[1].ravel())[0, 1] > 0.9
    other = render_raw(
        card,
        Pose(),
        duties=RING,
        exposure_us=8000,
        analogue_gain=1.0,
        focus_steps=400,
        rng=np.random.default_rng(4),
        width=320,
        dust_seed=100,
    )
    clean = render_raw(
        card,
        Pose(),
        duties=RING,
        exposure_us=8000,
        analogue_gain=1.0,
        focus_steps=400,
        rng=np.random.default_rng(4),
        width=320,
    )
    assert (
        np.corrcoef(ratios[0].ravel(), (other.mean(axis=2) / np.maximum(clean.mean(axis=2), 1.0)).ravel())[0, 1] < 0.5
    )


def test_careless_poses_have_a_fault_and_good_poses_do_not() -> None:
    for seed in range(30):
        bad = careless_pose(np.random.default_rng(seed))
        tilt = math.hypot(bad.tilt_x_deg, bad.tilt_y_deg)
        assert tilt >= 1.5 or bad.motion_px >= 6.0 or bad.lift_um >= 80.0
        good = good_pose(np.random.default_rng(seed))
        assert math.hypot(good.tilt_x_deg, good.tilt_y_deg) < 1.0 and good.motion_px < 3.0 and good.lift_um == 0.0
        assert 0.95 <= good.scale <= 1.05


def test_frame_sizes_and_full_resolution() -> None:
    assert frame_size(Optics()) == (2028, 1520)
    assert frame_size(Optics(), 640) == (640, 480)
    with pytest.raises(ValueError):
        frame_size(Optics(), 4096)
    big = Optics(sensor_width_px=4056, sensor_height_px=3040)
    image = render(
        Surface.uniform(0.2),
        Pose(),
        duties=RING,
        exposure_us=8000,
        analogue_gain=1.0,
        focus_steps=400,
        rng=np.random.default_rng(0),
        optics=big,
    )
    assert image.shape == (3040, 4056, 3)
    assert 60 < image.mean() < 200


def test_settings_are_validated(canvas: Surface) -> None:
    with pytest.raises(ValueError, match="exposure"):
        shot(canvas, Pose(), exposure_us=0)
    with pytest.raises(ValueError, match="gain"):
        shot(canvas, Pose(), analogue_gain=0.5)
    with pytest.raises(ValueError, match="duty"):
        shot(canvas, Pose(), duties={Lighting.WHITE_RING: 120})
    with pytest.raises(ValueError, match="fov"):
        Optics(fov_width_mm=5.0)


def test_jpeg_roundtrip_is_lossy_but_close(canvas: Surface) -> None:
    image = shot(canvas, Pose(x_mm=1.0))
    low = jpeg_roundtrip(image, 30)
    high = jpeg_roundtrip(image, 95)
    assert low.shape == image.shape and low.dtype == np.uint8
    err_low = np.abs(low.astype(int) - image).mean()
    err_high = np.abs(high.astype(int) - image).mean()
    assert 0 < err_high < err_low < 20
    with pytest.raises(ValueError):
        jpeg_roundtrip(image, 0)
