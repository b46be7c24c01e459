"""PNG plots for the model card: ROC curves, score histograms per source and reliability diagrams.

Every function takes plain arrays (scores on the 0..1 scale, booleans, labels)
and writes one PNG, so the plots depend on no training internals. Drawing uses
matplotlib's object API with the Agg renderer, never pyplot, so it needs no
display and changes no global backend. matplotlib comes with the training
install (requirements-train.lock); :func:`expected_calibration_error`,
:func:`reliability_bins`, :func:`roc_points` and :func:`roc_auc` need only numpy.
"""

from __future__ import annotations

import math
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING, NamedTuple

import numpy as np
import numpy.typing as npt

if TYPE_CHECKING:
    from matplotlib.figure import Figure  # type: ignore[import-not-found,unused-ignore]

FAR_MIN = 1e-3
"""Left edge of the ROC plots' log false-accept axis; lower rates, zero included, are drawn at this edge."""

DPI = 120
"""Resolution of the PNG files, in dots per inch."""

GENUINE_COLOUR = "#1a9850"
"""Colour of genuine sources in the score histograms."""

COUNTERFEIT_COLOUR = "#d73027"
"""Colour of counterfeit sources in the score histograms."""

BAND_COLOUR = "#fee08b"
"""Colour of the shaded abstain band in the score histograms."""


class RocCurve(NamedTuple):
    """One curve of an ROC plot."""

    label: str
    """Legend label, for example "int8" or "coated-canvas"."""
    scores: npt.ArrayLike
    """One score per item, higher meaning more genuine."""
    is_genuine: npt.ArrayLike
    """True for each genuine item, aligned with ``scores``."""
    threshold: float | None = None
    """Score at or above which an item is accepted; marked on the curve when given."""


@dataclass(frozen=True)
class ReliabilityBins:
    """Equal-width bins of predicted probability over 0..1 and what was observed in each."""

    edges: npt.NDArray[np.float64]
    """The ``bins + 1`` bin edges; the last bin includes 1.0."""
    counts: npt.NDArray[np.int64]
    """Predictions in each bin."""
    mean_predicted: npt.NDArray[np.float64]
    """Mean predicted probability in each bin; NaN where the bin is empty."""
    observed: npt.NDArray[np.float64]
    """Share of positive outcomes in each bin; NaN where the bin is empty."""

    @property
    def expected_calibration_error(self) -> float:
        """Count-weighted mean of abs(mean predicted - observed) over the non-empty bins."""
        filled = self.counts > 0
        total = int(self.counts.sum())
        gaps = np.abs(self.mean_predicted[filled] - self.observed[filled])
        return float(np.sum(self.counts[filled] * gaps) / total)


def roc_points(
    scores: npt.ArrayLike, is_genuine: npt.ArrayLike
) -> tuple[npt.NDArray[np.float64], npt.NDArray[np.float64], npt.NDArray[np.float64]]:
    """The ROC of items accepted at score >= threshold, over every distinct score.

    Returns ``(false_accept_rate, genuine_verified_rate, thresholds)``: the
    share of counterfeit items and of genuine items accepted at each threshold,
    from accepting none (threshold +inf, point (0, 0)) to accepting all (the
    lowest score, point (1, 1)). Raises :class:`ValueError` when the arrays
    differ in length or lack a genuine or a counterfeit item.
    """
    s, genuine = _scores_and_labels(scores, is_genuine)
    order = np.argsort(-s, kind="stable")
    s, genuine = s[order], genuine[order]
    # Tied scores are accepted together, so keep only the last index of each run of equal scores.
    last = np.r_[np.flatnonzero(np.diff(s) != 0), s.size - 1]
    true_accepts = np.cumsum(genuine)[last]
    false_accepts = np.cumsum(~genuine)[last]
    far = np.r_[0.0, false_accepts / np.count_nonzero(~genuine)]
    gvr = np.r_[0.0, true_accepts / np.count_nonzero(genuine)]
    thresholds = np.r_[np.inf, s[last]]
    return far, gvr, thresholds


def roc_auc(scores: npt.ArrayLike, is_genuine: npt.ArrayLike) -> float:
    """Area under the ROC: the chance a genuine item outscores a counterfeit one, ties counting half.

    Raises :class:`ValueError` as :func:`roc_points` does.
    """
    far, gvr, _ = roc_points(scores, is_genuine)
    return float(np.sum(np.diff(far) * (gvr[1:] + gvr[:-1]) / 2))


def reliability_bins(probabilities: npt.ArrayLike, outcomes: npt.ArrayLike, *, bins: int = 10) -> ReliabilityBins:
    """Bin predicted probabilities into ``bins`` equal-width bins and compare them with outcomes.

    ``outcomes`` holds 1 (or True) where the predicted event happened. Raises
    :class:`ValueError` when the arrays are empty or differ in length, a
    probability lies outside 0..1 or is not finite, an outcome is not 0 or 1,
    or ``bins`` < 1.
    """
    if bins < 1:
        raise ValueError(f"bins must be >= 1, got {bins}")
    p = np.asarray(probabilities, dtype=np.float64).ravel()
    y = np.asarray(outcomes).ravel()
    if p.size == 0 or p.size != y.size:
        raise ValueError(f"need as many outcomes as probabilities, at least one; got {p.size} and {y.size}")
    if not np.all(np.isfinite(p)) or np.any(p < 0) or np.any(p > 1):
        raise ValueError("probabilities must be finite and within 0..1")
    if not np.all((y == 0) | (y == 1)):
        raise ValueError("outcomes must be 0 or 1")
    y = y.astype(np.float64)
    index = np.clip(np.floor(p * bins).astype(np.int64), 0, bins - 1)
    counts = np.bincount(index, minlength=bins).astype(np.int64)
    with np.errstate(invalid="ignore", divide="ignore"):
        mean_predicted = np.bincount(index, weights=p, minlength=bins) / counts
        observed = np.bincount(index, weights=y, minlength=bins) / counts
    return ReliabilityBins(np.linspace(0.0, 1.0, bins + 1), counts, mean_predicted, observed)


def expected_calibration_error(probabilities: npt.ArrayLike, outcomes: npt.ArrayLike, *, bins: int = 10) -> float:
    """Expected calibration error over ``bins`` equal-width bins, from 0 (calibrated) to 1.

    The count-weighted mean over bins of abs(mean predicted probability -
    observed frequency). Raises :class:`ValueError` as :func:`reliability_bins` does.
    """
    return reliability_bins(probabilities, outcomes, bins=bins).expected_calibration_error


def roc_curve_png(
    path: str | Path,
    scores: npt.ArrayLike,
    is_genuine: npt.ArrayLike,
    *,
    title: str,
    mark_threshold: float | None = None,
    label: str = "items",
) -> Path:
    """Write the ROC of one set of item scores to a PNG; see :func:`roc_curves_png`.

    Returns the path written. Raises :class:`ValueError` as :func:`roc_points` does.
    """
    return roc_curves_png(path, [RocCurve(label, scores, is_genuine, mark_threshold)], title=title)


def roc_curves_png(
    path: str | Path,
    curves: Sequence[RocCurve | tuple[str, npt.ArrayLike, npt.ArrayLike]],
    *,
    title: str,
) -> Path:
    """Write several ROC curves, for example float against int8 or one per material, to one PNG.

    Genuine items are the positives: x is the false-accept rate on a log
    axis from :data:`FAR_MIN` to 1 (lower rates are drawn at the left edge),
    y the share of genuine items verified. Each legend entry gives the
    curve's AUC; a curve with a ``threshold`` has its operating point marked
    and its rates at that point in the legend. A curve may be given as a
    plain ``(label, scores, is_genuine)`` tuple. Returns the path written.
    Raises :class:`ValueError` when ``curves`` is empty or as :func:`roc_points` does.
    """
    if not curves:
        raise ValueError("need at least one ROC curve")
    figure = _new_figure(6.0, 4.8)
    ax = figure.add_subplot()
    for n, curve in enumerate(RocCurve(*c) for c in curves):
        far, gvr, _ = roc_points(curve.scores, curve.is_genuine)
        auc = roc_auc(curve.scores, curve.is_genuine)
        colour = f"C{n % 10}"
        ax.plot(np.maximum(far, FAR_MIN), gvr, color=colour, label=f"{curve.label} (AUC {auc:.3f})")
        if curve.threshold is not None:
            op_far, op_gvr = _rates_at(curve.scores, curve.is_genuine, curve.threshold)
            ax.plot(
                [max(op_far, FAR_MIN)],
                [op_gvr],
                marker="o",
                markersize=7,
                markerfacecolor="white",
                color=colour,
                linestyle="none",
                label=f"{curve.label} at {curve.threshold:.3f}: FAR {100 * op_far:.1f} %, verified {100 * op_gvr:.1f} %",
            )
    ax.set_xscale("log")
    ax.set_xlim(FAR_MIN, 1.0)
    ax.set_ylim(0.0, 1.02)
    ax.set_xlabel(f"false-accept rate (counterfeit items accepted; below {FAR_MIN:g} drawn at the edge)")
    ax.set_ylabel("genuine items verified")
    ax.grid(True, which="both", alpha=0.3)
    ax.legend(loc="lower right", fontsize="small")
    ax.set_title(title)
    return _save(figure, path)


def score_histograms_png(
    path: str | Path,
    scores_by_source: Mapping[str, npt.ArrayLike],
    *,
    threshold: float | None = None,
    abstain_high: float | None = None,
    title: str,
    bins: int = 20,
) -> Path:
    """Write one small histogram panel of scores per source to a PNG.

    Sources are the mapping's keys, for example "genuine", "counterfeit-a" or
    "coated-canvas/genuine"; a key whose last "/" part starts with "genuine"
    is drawn in green, any other in red. All panels share ``bins`` equal-width
    bins over 0..1 (widened to the data if a score falls outside). The
    ``threshold`` is a dashed line and the abstain band from it to
    ``abstain_high`` is shaded. Returns the path written. Raises
    :class:`ValueError` when the mapping is empty or a score is not finite.
    """
    if not scores_by_source:
        raise ValueError("need scores of at least one source")
    arrays = {name: np.asarray(values, dtype=np.float64).ravel() for name, values in scores_by_source.items()}
    if not all(np.all(np.isfinite(a)) for a in arrays.values()):
        raise ValueError("scores must be finite")
    filled = [a for a in arrays.values() if a.size]
    low = min([0.0, *(float(a.min()) for a in filled)])
    high = max([1.0, *(float(a.max()) for a in filled)])
    edges = np.linspace(low, high, bins + 1)
    cols = min(3, len(arrays))
    rows = math.ceil(len(arrays) / cols)
    figure = _new_figure(3.4 * cols, 1.9 * rows + 0.7)
    axes = figure.subplots(rows, cols, squeeze=False)
    for ax, (name, values) in zip(axes.flat, arrays.items(), strict=False):
        genuine = name.rsplit("/", 1)[-1].startswith("genuine")
        colour = GENUINE_COLOUR if genuine else COUNTERFEIT_COLOUR
        if threshold is not None and abstain_high is not None and abstain_high > threshold:
            ax.axvspan(threshold, abstain_high, color=BAND_COLOUR, alpha=0.6, linewidth=0)
        ax.hist(values, bins=edges, color=colour, alpha=0.35 if genuine else 0.25)
        ax.hist(values, bins=edges, color=colour, histtype="step", linewidth=1.5)
        if threshold is not None:
            ax.axvline(threshold, color="black", linestyle="--", linewidth=1)
        ax.set_xlim(low, high)
        ax.yaxis.get_major_locator().set_params(integer=True)
        weight = "bold" if genuine else "normal"
        ax.set_title(f"{name} (n={values.size})", fontsize="small", color=colour, fontweight=weight)
        ax.tick_params(labelsize="x-small")
    for ax in axes.flat[len(arrays) :]:
        ax.set_visible(False)
    figure.supxlabel("score", fontsize="small")
    figure.supylabel("items", fontsize="small")
    notes = []
    if threshold is not None:
        notes.append(f"dashed: threshold {threshold:.3f}")
    if threshold is not None and abstain_high is not None and abstain_high > threshold:
        notes.append(f"shaded: abstain band {threshold:.3f}..{abstain_high:.3f}")
    figure.suptitle(title + (f"\n{'; '.join(notes)}" if notes else ""), fontsize="medium")
    return _save(figure, path)


def reliability_png(
    path: str | Path,
    probabilities: npt.ArrayLike,
    outcomes: npt.ArrayLike,
    *,
    bins: int = 10,
    title: str,
) -> Path:
    """Write a reliability diagram to a PNG: observed frequency against mean predicted probability.

    The upper panel plots each non-empty bin's observed frequency at its mean
    predicted probability, labelled with its count, beside the diagonal of
    perfect calibration; the lower panel shows the count per bin. The expected
    calibration error is in the title. Returns the path written. Raises
    :class:`ValueError` as :func:`reliability_bins` does.
    """
    table = reliability_bins(probabilities, outcomes, bins=bins)
    filled = table.counts > 0
    figure = _new_figure(5.2, 5.6)
    top, bottom = figure.subplots(2, 1, sharex=True, gridspec_kw={"height_ratios": [3, 1]})
    top.plot([0, 1], [0, 1], color="grey", linestyle=":", linewidth=1, label="perfectly calibrated")
    top.plot(
        table.mean_predicted[filled],
        table.observed[filled],
        marker="o",
        color="C0",
        label=f"model (ECE {table.expected_calibration_error:.3f})",
    )
    for x, y, count in zip(table.mean_predicted[filled], table.observed[filled], table.counts[filled], strict=True):
        top.annotate(str(count), (x, y), textcoords="offset points", xytext=(0, 6), ha="center", fontsize="x-small")
    top.set_xlim(0.0, 1.0)
    top.set_ylim(-0.02, 1.08)
    top.set_ylabel("observed frequency")
    top.grid(True, alpha=0.3)
    top.legend(loc="upper left", fontsize="small")
    widths = np.diff(table.edges)
    bottom.bar(table.edges[:-1], table.counts, width=widths, align="edge", color="C0", alpha=0.5, edgecolor="C0")
    bottom.set_xlabel("mean predicted probability")
    bottom.set_ylabel("count")
    top.set_title(f"{title}\nECE {table.expected_calibration_error:.3f} over {bins} bins, n={int(table.counts.sum())}")
    return _save(figure, path)


def _scores_and_labels(
    scores: npt.ArrayLike, is_genuine: npt.ArrayLike
) -> tuple[npt.NDArray[np.float64], npt.NDArray[np.bool_]]:
    s = np.asarray(scores, dtype=np.float64).ravel()
    genuine = np.asarray(is_genuine, dtype=bool).ravel()
    if s.size != genuine.size:
        raise ValueError(f"got {s.size} scores but {genuine.size} is_genuine flags")
    if not np.all(np.isfinite(s)):
        raise ValueError("scores must be finite")
    if not genuine.any() or genuine.all():
        raise ValueError("an ROC needs at least one genuine and one counterfeit item")
    return s, genuine


def _rates_at(scores: npt.ArrayLike, is_genuine: npt.ArrayLike, threshold: float) -> tuple[float, float]:
    """(false-accept rate, genuine verified rate) when items scoring >= ``threshold`` are accepted."""
    s, genuine = _scores_and_labels(scores, is_genuine)
    accepted = s >= threshold
    return float(np.mean(accepted[~genuine])), float(np.mean(accepted[genuine]))


def _new_figure(width_in: float, height_in: float) -> Figure:
    try:
        from matplotlib.figure import Figure  # type: ignore[import-not-found,unused-ignore]
    except ImportError as exc:
        raise ImportError(
            "the model card plots need matplotlib: pip install --require-hashes -r requirements-train.lock"
        ) from exc
    return Figure(figsize=(width_in, height_in), layout="constrained")


def _save(figure: Figure, path: str | Path) -> Path:
    # A Figure made without pyplot renders PNG through Agg on its own, with no global backend switch.
    out = Path(path)
    figure.savefig(out, format="png", dpi=DPI)
    return out
