"""Fits what the manifest stores from model outputs: score calibration, open-set statistics and thresholds.

Pure numpy, no TensorFlow, so it runs the same on float and int8 outputs.
"""

from __future__ import annotations

import math

import numpy as np
import numpy.typing as npt

from veriscope.device.pipeline.scoring import sigmoid


def fit_platt(logits: npt.ArrayLike, genuine: npt.ArrayLike, *, l2: float = 1e-2) -> tuple[float, float]:
    """Fit (slope, intercept) so that sigmoid(slope * z + intercept) estimates P(genuine | z).

    :func:`fit_logistic` on the one column of logits: Platt's smoothed targets
    and a little L2 on the slope (on standardised logits), so a perfectly
    separated validation set still gives a finite slope. The slope is kept
    positive: a higher raw logit must never mean less genuine.
    """
    z = np.asarray(logits, dtype=np.float64)
    y = np.asarray(genuine, dtype=np.float64)
    if y.sum() == 0 or y.sum() == len(y):
        return 1.0, 0.0
    (slope,), intercept = fit_logistic(z[:, None], y, l2=l2, nonnegative=True)
    return float(min(max(slope, 1e-3), 1e4)), float(intercept)


def fit_logistic(
    features: npt.ArrayLike, genuine: npt.ArrayLike, *, l2: float = 1.0, nonnegative: bool = False
) -> tuple[npt.NDArray[np.float64], float]:
    """Fit (weights, intercept) so that sigmoid(features @ weights + intercept) estimates P(genuine | features).

    ``features`` is N x K. Like :func:`fit_platt`: Platt's smoothed targets,
    L2 of strength ``l2`` on the weights of standardised columns, damped Newton
    steps. With ``nonnegative`` every weight is kept at or above zero (a score
    that says "more genuine" must never count against). Raises
    :class:`ValueError` unless both classes are present.
    """
    x = np.asarray(features, dtype=np.float64)
    y = np.asarray(genuine, dtype=np.float64)
    if x.ndim != 2 or len(x) != len(y):
        raise ValueError(f"features must be N x K with one label each, got {x.shape} and {y.shape}")
    n_pos, n_neg = float(y.sum()), float(len(y) - y.sum())
    if n_pos == 0 or n_neg == 0:
        raise ValueError("need genuine and counterfeit examples")
    centre, scale = x.mean(axis=0), np.maximum(x.std(axis=0), 1e-9)
    z = np.hstack([(x - centre) / scale, np.ones((len(x), 1))])
    target = np.where(y > 0.5, (n_pos + 1.0) / (n_pos + 2.0), 1.0 / (n_neg + 2.0))
    penalty = np.full(z.shape[1], l2)
    penalty[-1] = 1e-9

    def loss(v: npt.NDArray[np.float64]) -> float:
        u = z @ v
        return float(np.sum(np.logaddexp(0.0, u) - target * u) + 0.5 * np.sum(penalty * v * v))

    v = np.zeros(z.shape[1])
    for _ in range(100):
        p = 0.5 * (1.0 + np.tanh(0.5 * (z @ v)))
        w = np.maximum(p * (1.0 - p), 1e-12)
        grad = z.T @ (p - target) + penalty * v
        step = np.linalg.solve((z * w[:, None]).T @ z + np.diag(penalty), grad)
        current, t = loss(v), 1.0
        while t > 1e-6 and loss(v - t * step) > current:
            t *= 0.5
        v = v - t * step
        if nonnegative:
            v[:-1] = np.maximum(v[:-1], 0.0)
        if np.max(np.abs(t * step)) < 1e-10:
            break
    weights = v[:-1] / scale
    return weights, float(v[-1] - weights @ centre)


def embedding_stats(embeddings: npt.ArrayLike) -> tuple[npt.NDArray[np.float32], npt.NDArray[np.float32]]:
    """Per-dimension mean and standard deviation; dimensions that never vary get a small floor."""
    e = np.asarray(embeddings, dtype=np.float64)
    mean = e.mean(axis=0)
    std = e.std(axis=0)
    floor = max(1e-3 * float(np.mean(std)), 1e-6)
    return mean.astype(np.float32), np.maximum(std, floor).astype(np.float32)


def distance_ref(distances: npt.ArrayLike, quantile: float) -> float:
    """The embedding distance at which familiarity is one half: the ``quantile`` of in-distribution distances."""
    return max(float(np.quantile(np.asarray(distances, dtype=np.float64), quantile)), 1e-6)


def lognormal_quantile(distances: npt.ArrayLike, z: float) -> float:
    """The quantile ``z`` standard deviations up of a log-normal fitted to positive ``distances``.

    A fitted tail is steadier than an empirical extreme from a few dozen
    items. Returns at least 1e-6; raises :class:`ValueError` when empty.
    """
    d = np.log(np.maximum(np.asarray(distances, dtype=np.float64), 1e-9))
    if d.size == 0:
        raise ValueError("no distances to fit")
    return max(float(np.exp(d.mean() + z * d.std())), 1e-6)


def far_threshold(fake_scores: npt.ArrayLike, target_far: float) -> float:
    """The lowest score threshold whose false-accept rate on ``fake_scores`` is at most ``target_far``.

    Accept means score >= threshold. With too few fakes to resolve the target,
    this is just above the highest fake score. Returns a value in 0..1.
    """
    f = np.sort(np.asarray(fake_scores, dtype=np.float64))[::-1]
    if len(f) == 0:
        return 0.5
    allowed = math.floor(target_far * len(f) + 1e-9)
    if allowed >= len(f):
        return 0.0
    # Just above the (allowed + 1)-th highest fake, measured in logits so it stays strictly inside (0, 1).
    p = min(max(float(f[allowed]), 1e-6), 1.0 - 1e-6)
    return float(sigmoid(math.log(p / (1.0 - p)) + 1e-3))


def choose_threshold(
    fake_scores: npt.ArrayLike,
    genuine_scores: npt.ArrayLike,
    *,
    target_far: float,
    genuine_quantile: float,
    margin_logit: float,
) -> float:
    """The item threshold: meets ``target_far`` on the fakes, centred in the gap to the genuine items if there is one.

    The least threshold meeting the false-accept target sits just above the
    fakes; when the genuine items' ``genuine_quantile`` score lies well above
    it, the threshold moves to the middle of the gap (in logits), leaving room
    for the abstain band of ``margin_logit`` above it. Unseen counterfeits tend
    to land between the two, so the middle rejects more of them than the edge.
    """
    least = far_threshold(fake_scores, target_far)
    g = np.asarray(genuine_scores, dtype=np.float64)
    if len(g) == 0:
        return least
    lo = _logit(least)
    hi = _logit(float(np.quantile(g, genuine_quantile))) - margin_logit
    return least if hi <= lo else float(sigmoid(0.5 * (lo + hi)))


def _logit(p: float) -> float:
    q = min(max(p, 1e-6), 1.0 - 1e-6)
    return math.log(q / (1.0 - q))


def abstain_high(threshold: float, margin_logit: float) -> float:
    """The upper edge of the abstain band: ``margin_logit`` calibrated logits above the threshold."""
    return float(sigmoid(_logit(threshold) + margin_logit))
