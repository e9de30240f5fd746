"""Small-sample statistics for rates of a label between conditions (Experiment 1).

scipy does the standard tests; this module fixes how hallu calls them and what an empty or
degenerate input gives (nan, or None for a sample size that cannot be computed; never a crash):

- `wilson`: score interval for one proportion (Wilson 1927; scipy's `binomtest(...)
  .proportion_ci(method="wilson")`), exactly 0 at 0/n and 1 at n/n.
- `fisher_exact`: two-sided Fisher exact test on a 2x2 table (scipy's `fisher_exact`).
- `chi2_yates`: Pearson's chi-square with Yates's continuity correction, 1 degree of freedom
  (scipy's `chi2_contingency(correction=True)`).
- `mcnemar_exact`: for conditions paired by claim, the exact binomial test on discordant pairs
  (scipy's `binomtest`).

What scipy lacks is written out here, small:

- `newcombe_diff`: interval for a difference of two independent proportions from their Wilson
  intervals (Newcombe 1998, method 10); used for each condition's distance from the neutral one.
- `n_per_group` / `n_pairs_mcnemar`: how many prompts (per condition) or claims (paired) would
  detect a difference of this size with 80% power at two-sided alpha 0.05 (Fleiss et al. 2003
  eq. 4.14 with continuity correction; Connor 1987 for paired proportions).
- `auroc`: the Mann-Whitney U statistic over n_pos * n_neg, with weights, so a bootstrap can pass
  resample counts instead of repeating rows (scipy's `mannwhitneyu` takes no weights).
"""

from __future__ import annotations

import math
from collections.abc import Sequence

import numpy as np
from scipy import stats as sp
from scipy.stats import norm


def wilson(k: int, n: int, conf: float = 0.95) -> tuple[float, float]:
    """Wilson score interval of k successes in n trials; (nan, nan) when n == 0."""
    if n == 0:
        return math.nan, math.nan
    ci = sp.binomtest(int(k), n).proportion_ci(confidence_level=conf, method="wilson")
    return float(ci.low), float(ci.high)


def newcombe_diff(k1: int, n1: int, k2: int, n2: int, conf: float = 0.95) -> tuple[float, float]:
    """Interval for p1 - p2 (independent samples) by Newcombe's hybrid score method."""
    if n1 == 0 or n2 == 0:
        return math.nan, math.nan
    p1, p2 = k1 / n1, k2 / n2
    l1, u1 = wilson(k1, n1, conf)
    l2, u2 = wilson(k2, n2, conf)
    d = p1 - p2
    return (
        d - math.sqrt((p1 - l1) ** 2 + (u2 - p2) ** 2),
        d + math.sqrt((u1 - p1) ** 2 + (p2 - l2) ** 2),
    )


def fisher_exact(a: int, b: int, c: int, d: int) -> float:
    """Two-sided p of the table [[a, b], [c, d]] (rows: conditions; columns: label yes/no)."""
    return float(sp.fisher_exact([[a, b], [c, d]]).pvalue)


def chi2_yates(a: int, b: int, c: int, d: int) -> tuple[float, float]:
    """(statistic, p) of Pearson's chi-square with Yates's correction; (nan, nan) if a row or
    column is empty (an expected count of 0, which scipy refuses)."""
    if 0 in (a + b, c + d, a + c, b + d):
        return math.nan, math.nan
    res = sp.chi2_contingency([[a, b], [c, d]], correction=True)
    return float(res.statistic), float(res.pvalue)


def mcnemar_exact(b: int, c: int) -> float:
    """Two-sided exact McNemar p from the discordant counts b (yes/no) and c (no/yes)."""
    if b + c == 0:
        return 1.0
    return float(sp.binomtest(b, b + c, 0.5).pvalue)


def n_per_group(p1: float, p2: float, alpha: float = 0.05, power: float = 0.8) -> int | None:
    """Prompts per condition for a two-sided test of p1 vs p2 (Fleiss, continuity corrected)."""
    delta = abs(p1 - p2)
    if delta == 0:
        return None
    za, zb = norm.ppf(1 - alpha / 2), norm.ppf(power)
    pbar = (p1 + p2) / 2
    n = (
        za * math.sqrt(2 * pbar * (1 - pbar)) + zb * math.sqrt(p1 * (1 - p1) + p2 * (1 - p2))
    ) ** 2 / delta**2
    n_cc = n / 4 * (1 + math.sqrt(1 + 4 / (n * delta))) ** 2
    return math.ceil(n_cc)


def n_pairs_mcnemar(p10: float, p01: float, alpha: float = 0.05, power: float = 0.8) -> int | None:
    """Claims needed for McNemar's test, from the discordant proportions (Connor 1987)."""
    pd, delta = p10 + p01, p10 - p01
    if delta == 0:
        return None
    za, zb = norm.ppf(1 - alpha / 2), norm.ppf(power)
    return math.ceil((za * math.sqrt(pd) + zb * math.sqrt(pd - delta**2)) ** 2 / delta**2)


def auroc(
    pos: Sequence[float] | np.ndarray,
    neg: Sequence[float] | np.ndarray,
    w_pos: np.ndarray | None = None,
    w_neg: np.ndarray | None = None,
) -> float:
    """P(a positive scores above a negative), ties counting half, each score weighted (default 1).

    nan when either class is empty or weighs nothing: there is nothing to rank against.
    """
    p, q = np.asarray(pos, dtype=float), np.asarray(neg, dtype=float)
    wp = np.ones(len(p)) if w_pos is None else np.asarray(w_pos, dtype=float)
    wq = np.ones(len(q)) if w_neg is None else np.asarray(w_neg, dtype=float)
    if wp.sum() == 0 or wq.sum() == 0:
        return math.nan
    wins = (p[:, None] > q[None, :]) + 0.5 * (p[:, None] == q[None, :])
    return float(wp @ wins @ wq / (wp.sum() * wq.sum()))
