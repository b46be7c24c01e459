"""The model card plots: ROC and calibration maths on known cases, and the PNG files drawn from synthetic scores.

Drawing tests skip when matplotlib is absent (it comes with requirements-train.lock);
none needs TensorFlow.
"""

from __future__ import annotations

import importlib.util
from pathlib import Path

import numpy as np
import pytest
from PIL import Image

from veriscope.training import plots
from veriscope.training.card import plots_section

needs_matplotlib = pytest.mark.skipif(
    importlib.util.find_spec("matplotlib") is None,
    reason="matplotlib is not installed (pip install --require-hashes -r requirements-train.lock)",
)


def _colour_pixels(path: Path, hex_colour: str) -> int:
    """Pixels of exactly ``hex_colour`` in the PNG at ``path``."""
    rgb = np.asarray(Image.open(path).convert("RGB")).reshape(-1, 3)
    target = np.array([int(hex_colour[i : i + 2], 16) for i in (1, 3, 5)])
    return int(np.count_nonzero(np.all(rgb == target, axis=1)))


def _assert_png(path: Path, *, min_size: tuple[int, int] = (400, 300)) -> None:
    with Image.open(path) as image:
        assert image.format == "PNG"
        assert image.width >= min_size[0] and image.height >= min_size[1]
        rgb = np.asarray(image.convert("RGB"))
    assert len(np.unique(rgb.reshape(-1, 3), axis=0)) > 16  # drawn on, not one flat colour


def _separable_scores(seed: int = 0) -> tuple[np.ndarray, np.ndarray]:
    rng = np.random.default_rng(seed)
    genuine = rng.beta(5, 2, 80)
    fake = rng.beta(2, 5, 240)
    return np.r_[genuine, fake], np.r_[np.ones(80, bool), np.zeros(240, bool)]


# --- ROC maths ---------------------------------------------------------------------------------------------------


def test_roc_auc_equals_the_pairwise_ranking_with_ties_counting_half() -> None:
    rng = np.random.default_rng(4)
    scores = np.round(rng.uniform(0, 1, 300), 1)  # coarse, so many genuine/counterfeit ties
    genuine = rng.uniform(0, 1, 300) < 0.3 + 0.4 * scores
    g, f = scores[genuine][:, None], scores[~genuine][None, :]
    pairwise = float(np.mean((g > f) + 0.5 * (g == f)))
    assert plots.roc_auc(scores, genuine) == pytest.approx(pairwise, abs=1e-12)


def test_roc_points_run_from_accepting_nothing_to_accepting_everything() -> None:
    scores, genuine = _separable_scores()
    far, gvr, thresholds = plots.roc_points(scores, genuine)
    assert (far[0], gvr[0], thresholds[0]) == (0.0, 0.0, np.inf)
    assert (far[-1], gvr[-1], thresholds[-1]) == (1.0, 1.0, scores.min())
    assert np.all(np.diff(far) >= 0) and np.all(np.diff(gvr) >= 0) and np.all(np.diff(thresholds) < 0)
    # Each point is the share accepted at score >= its threshold.
    k = len(thresholds) // 2
    assert far[k] == np.mean(scores[~genuine] >= thresholds[k]) and gvr[k] == np.mean(scores[genuine] >= thresholds[k])


def test_roc_auc_of_perfect_and_reversed_rankings() -> None:
    genuine = np.array([True, True, False, False])
    assert plots.roc_auc([0.9, 0.8, 0.2, 0.1], genuine) == 1.0
    assert plots.roc_auc([0.1, 0.2, 0.8, 0.9], genuine) == 0.0
    assert plots.roc_auc([0.5, 0.5, 0.5, 0.5], genuine) == 0.5


@pytest.mark.parametrize(
    ("scores", "genuine"),
    [([0.1, 0.2], [True, True]), ([0.1, 0.2], [False, False]), ([0.1], [True, False]), ([np.nan, 0.2], [True, False])],
)
def test_roc_rejects_inputs_without_both_classes_or_misaligned(scores: list[float], genuine: list[bool]) -> None:
    with pytest.raises(ValueError):
        plots.roc_points(scores, genuine)


# --- calibration maths -------------------------------------------------------------------------------------------


def test_ece_is_zero_when_every_bin_is_calibrated() -> None:
    centres = np.arange(10) / 10 + 0.05
    probabilities = np.repeat(centres, 100)
    outcomes = np.concatenate([np.arange(100) < round(100 * c) for c in centres])
    assert plots.expected_calibration_error(probabilities, outcomes) == pytest.approx(0.0, abs=1e-12)


def test_ece_is_small_for_outcomes_drawn_at_the_predicted_rate() -> None:
    rng = np.random.default_rng(1)
    probabilities = rng.uniform(0, 1, 20000)
    outcomes = rng.uniform(0, 1, 20000) < probabilities
    assert plots.expected_calibration_error(probabilities, outcomes) < 0.02


def test_ece_is_large_when_confidently_always_wrong() -> None:
    probabilities = np.r_[np.full(50, 0.99), np.full(50, 0.01)]
    outcomes = np.r_[np.zeros(50), np.ones(50)]
    assert plots.expected_calibration_error(probabilities, outcomes) == pytest.approx(0.99)


def test_ece_and_bins_on_a_hand_worked_case() -> None:
    table = plots.reliability_bins([0.2, 0.2, 0.8, 0.8, 1.0], [0, 1, 1, 1, 1], bins=5)
    assert table.counts.tolist() == [0, 2, 0, 0, 3]  # 1.0 falls in the last bin
    assert table.observed[1] == 0.5 and table.observed[4] == 1.0
    assert np.isnan(table.mean_predicted[0])
    # Bin 1: |0.2 - 0.5| for 2 of 5; bin 4: |0.8667 - 1| for 3 of 5.
    assert table.expected_calibration_error == pytest.approx(0.4 * 0.3 + 0.6 * (1 - 2.6 / 3))


@pytest.mark.parametrize(
    ("probabilities", "outcomes", "bins"),
    [([], [], 10), ([0.5], [1, 0], 10), ([1.5], [1], 10), ([0.5], [2], 10), ([0.5], [1], 0)],
)
def test_reliability_bins_reject_bad_input(probabilities: list[float], outcomes: list[int], bins: int) -> None:
    with pytest.raises(ValueError):
        plots.reliability_bins(probabilities, outcomes, bins=bins)


# --- PNG files ---------------------------------------------------------------------------------------------------


@needs_matplotlib
def test_roc_png_draws_each_curve(tmp_path: Path) -> None:
    scores, genuine = _separable_scores()
    noisy = scores + np.random.default_rng(2).normal(0, 0.03, scores.size)
    path = plots.roc_curves_png(
        tmp_path / "roc.png",
        [plots.RocCurve("float", scores, genuine, threshold=0.6), ("int8", noisy, genuine)],
        title="Item ROC (test)",
    )
    _assert_png(path)
    assert _colour_pixels(path, "#1f77b4") > 50 and _colour_pixels(path, "#ff7f0e") > 50  # C0 and C1 lines


@needs_matplotlib
def test_single_roc_png_with_operating_point(tmp_path: Path) -> None:
    scores, genuine = _separable_scores(3)
    path = plots.roc_curve_png(tmp_path / "roc1.png", scores, genuine, title="int8", mark_threshold=0.65)
    assert path == tmp_path / "roc1.png"
    _assert_png(path)


@needs_matplotlib
def test_score_histograms_png_highlights_genuine_and_draws_the_band(tmp_path: Path) -> None:
    scores, genuine = _separable_scores()
    by_source = {
        "coated-canvas/genuine": scores[genuine],
        "coated-canvas/counterfeit-a": scores[~genuine][:120],
        "coated-canvas/counterfeit-e": scores[~genuine][120:],
        "coated-canvas/counterfeit-f": np.array([]),
    }
    path = plots.score_histograms_png(
        tmp_path / "hist.png", by_source, threshold=0.64, abstain_high=0.75, title="Item scores (int8, test)"
    )
    _assert_png(path)
    assert _colour_pixels(path, plots.GENUINE_COLOUR) > 50
    assert _colour_pixels(path, plots.COUNTERFEIT_COLOUR) > 50
    without_band = plots.score_histograms_png(tmp_path / "plain.png", by_source, title="no band")
    assert _yellowish_pixels(path) > 10 * max(1, _yellowish_pixels(without_band))


def _yellowish_pixels(path: Path) -> int:
    rgb = np.asarray(Image.open(path).convert("RGB")).astype(int)
    r, g, b = rgb[..., 0], rgb[..., 1], rgb[..., 2]
    return int(np.count_nonzero((r > 230) & (g > 210) & (b < 200)))


@needs_matplotlib
def test_reliability_png(tmp_path: Path) -> None:
    rng = np.random.default_rng(5)
    probabilities = rng.uniform(0, 1, 500)
    outcomes = rng.uniform(0, 1, 500) < probabilities**2
    path = plots.reliability_png(tmp_path / "reliability.png", probabilities, outcomes, bins=8, title="coated-canvas")
    _assert_png(path)


def test_plots_section_embeds_each_png_in_order() -> None:
    text = plots_section({"roc.png": "Item ROC [int8]", "score histograms.png": "Scores per source"})
    assert text.startswith("## Plots")
    assert text.index("(roc.png)") < text.index("(score%20histograms.png)")
    assert "![Item ROC (int8)](roc.png)" in text
    assert plots_section({}) == ""
