"""Jackknife t intervals over pairs (or claims): the intervals every verdict is decided on.

A percentile bootstrap over a handful of pairs is too narrow (with 3 pairs there are only 10
distinct resamples, and at 2 pairs its 90% interval of a null difference excludes 0 about half
the time), so verdicts use Student-t intervals with a jackknife standard error instead: drop each
pair in turn, recompute the statistic (a ratio of means is recomputed whole, numerator and
denominator), and take SE^2 = (n-1)/n sum (loo_i - mean loo)^2 (Efron and Tibshirani 1993,
ch. 11); the interval is estimate +- t(n-1) SE. For a mean it is the textbook t interval. Its
false-positive rate and coverage at n = 2 .. 48 are measured by `python -m
hallu.analysis.calibrate` (table in docs/analysis.md); the bootstrap intervals remain for the
report's curves and maps.
"""

from __future__ import annotations

import numpy as np
from scipy import stats

from hallu.analysis.bootstrap import Interval

NAN = Interval(float("nan"), float("nan"), float("nan"))


def jackknife(estimate: float, loo: np.ndarray, level: float) -> Interval:
    """estimate +- t(n-1) x the jackknife standard error from the leave-one-out values `loo`
    (NaN: fewer than 2 values, or a leave-one-out value that is not finite)."""
    n = len(loo)
    if n < 2 or not np.isfinite(estimate) or not np.isfinite(loo).all():
        return NAN
    se = np.sqrt((n - 1) / n * np.sum((loo - loo.mean()) ** 2))
    half = float(stats.t.ppf((1 + level) / 2, n - 1) * se)
    return Interval(float(estimate), float(estimate - half), float(estimate + half))


def _finite(*arrays: np.ndarray) -> list[np.ndarray]:
    ok = np.logical_and.reduce([np.isfinite(a) for a in arrays])
    return [np.asarray(a, dtype=float)[ok] for a in arrays]


def _loo_mean(v: np.ndarray) -> np.ndarray:
    return (v.sum() - v) / (len(v) - 1) if len(v) > 1 else np.full(len(v), np.nan)


def _loo_ratio(num: np.ndarray, gap: np.ndarray) -> np.ndarray:
    with np.errstate(invalid="ignore", divide="ignore"):
        return (num.sum() - num) / (gap.sum() - gap)


def _ratio(num: np.ndarray, gap: np.ndarray) -> float:
    return float(num.sum() / gap.sum()) if len(num) and gap.sum() != 0 else float("nan")


def mean(values: np.ndarray, level: float) -> Interval:
    """The mean of `values` (NaNs dropped) with its t interval."""
    (v,) = _finite(np.asarray(values, dtype=float))
    return jackknife(float(v.mean()) if len(v) else float("nan"), _loo_mean(v), level)


def abs_mean_difference(x: np.ndarray, y: np.ndarray, level: float) -> Interval:
    """|mean x| - |mean y| over paired values (pairs with both finite)."""
    x, y = _finite(x, y)
    if len(x) < 2:
        return NAN
    est = abs(float(x.mean())) - abs(float(y.mean()))
    return jackknife(est, np.abs(_loo_mean(x)) - np.abs(_loo_mean(y)), level)


def ratio(num: np.ndarray, gap: np.ndarray, level: float) -> Interval:
    """Ratio of means sum(num) / sum(gap) over the pairs where both are finite."""
    num, gap = _finite(num, gap)
    return jackknife(_ratio(num, gap), _loo_ratio(num, gap), level)


def ratio_difference(
    num_a: np.ndarray, gap_a: np.ndarray, num_b: np.ndarray, gap_b: np.ndarray, level: float
) -> Interval:
    """R_a - R_b over the same pairs (paired: each left-out pair leaves both ratios)."""
    num_a, gap_a, num_b, gap_b = _finite(num_a, gap_a, num_b, gap_b)
    est = _ratio(num_a, gap_a) - _ratio(num_b, gap_b)
    return jackknife(est, _loo_ratio(num_a, gap_a) - _loo_ratio(num_b, gap_b), level)
