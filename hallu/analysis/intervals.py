"""t intervals over pairs (or claims): the intervals every verdict is decided on.

A percentile bootstrap over a handful of pairs is too narrow (with 3 pairs there are only 10
distinct resamples), so verdicts use Student-t intervals on each pair's contribution instead:
for a mean, the values themselves; for a ratio of means R = sum(num) / sum(gap), the linearised
(delta-method) contribution u_i = (num_i - R gap_i) / mean(gap) (Cochran 1977, ch. 6), whose mean
is 0 and whose spread gives R's standard error. The interval is estimate +- t(n-1) sd(u)/sqrt(n).
Its coverage at n = 2 .. 48 is measured by `python -m hallu.analysis.calibrate` (table in
docs/analysis.md); the bootstrap intervals remain for the report's curves and maps.
"""

from __future__ import annotations

import numpy as np
from scipy import stats

from hallu.analysis.bootstrap import Interval

NAN = Interval(float("nan"), float("nan"), float("nan"))


def t_interval(estimate: float, contributions: np.ndarray, level: float) -> Interval:
    """estimate +- t(n-1) x the standard error of the mean of `contributions` (NaN: n < 2)."""
    u = contributions[np.isfinite(contributions)]
    if len(u) < 2 or not np.isfinite(estimate):
        return NAN
    half = stats.t.ppf((1 + level) / 2, len(u) - 1) * np.std(u, ddof=1) / np.sqrt(len(u))
    return Interval(float(estimate), float(estimate - half), float(estimate + half))


def mean(values: np.ndarray, level: float) -> Interval:
    """The mean of `values` (NaNs dropped) with its t interval."""
    v = np.asarray(values, dtype=float)
    v = v[np.isfinite(v)]
    return t_interval(float(v.mean()) if len(v) else float("nan"), v, level)


def ratio_contributions(num: np.ndarray, gap: np.ndarray) -> tuple[float, np.ndarray]:
    """R = sum(num) / sum(gap) over the pairs where both are finite, and each pair's linearised
    contribution to it (NaN for the others)."""
    ok = np.isfinite(num) & np.isfinite(gap)
    g = float(np.mean(gap[ok])) if ok.any() else 0.0
    if g == 0:
        return float("nan"), np.full(len(num), np.nan)
    r = float(np.mean(num[ok]) / g)
    return r, np.where(ok, (num - r * gap) / g, np.nan)


def ratio(num: np.ndarray, gap: np.ndarray, level: float) -> Interval:
    """Ratio of means sum(num) / sum(gap) with its linearised t interval."""
    r, u = ratio_contributions(num, gap)
    return t_interval(r, r + u, level)


def ratio_difference(
    num_a: np.ndarray, gap_a: np.ndarray, num_b: np.ndarray, gap_b: np.ndarray, level: float
) -> Interval:
    """R_a - R_b over the same pairs (paired: each pair contributes u_a - u_b)."""
    ra, ua = ratio_contributions(num_a, gap_a)
    rb, ub = ratio_contributions(num_b, gap_b)
    return t_interval(ra - rb, ua - ub, level)
