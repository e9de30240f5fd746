"""Small-sample statistics for rates of a label between conditions (Experiment 1).

- `wilson`: score interval for one proportion (Wilson 1927); sane at 0/n and n/n, unlike the
  normal approximation.
- `newcombe_diff`: interval for a difference of two independent proportions from their Wilson
  intervals (Newcombe 1998, method 10); used for each condition's distance from the neutral one.
- `fisher_exact`: two-sided Fisher exact test on a 2x2 table, summing every table with the same
  margins that is no more probable than the observed one (the convention of R and scipy).
- `chi2_yates`: Pearson's chi-square with Yates's continuity correction, 1 degree of freedom.
- `mcnemar_exact`: for conditions paired by claim, the exact binomial test on discordant pairs.
- `n_per_group` / `n_pairs_mcnemar`: how many prompts (per condition) or claims (paired) would
  detect a difference of this size with 80% power at two-sided alpha 0.05 (Fleiss et al. 2003
  eq. 4.14 with continuity correction; Connor 1987 for paired proportions).

Tests check every function against scipy or published values.
"""

from __future__ import annotations

import math
from fractions import Fraction

from scipy.stats import chi2, norm


def wilson(k: int, n: int, conf: float = 0.95) -> tuple[float, float]:
    """Wilson score interval of k successes in n trials; (nan, nan) when n == 0."""
    if n == 0:
        return math.nan, math.nan
    z = norm.ppf(0.5 + conf / 2)
    p = k / n
    centre = (p + z * z / (2 * n)) / (1 + z * z / n)
    half = z / (1 + z * z / n) * math.sqrt(p * (1 - p) / n + z * z / (4 * n * n))
    low = 0.0 if k == 0 else max(0.0, float(centre - half))  # exact at the ends, no rounding
    high = 1.0 if k == n else min(1.0, float(centre + half))
    return low, high


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
    row1, col1, n = a + b, a + c, a + b + c + d
    lo, hi = max(0, col1 - (n - row1)), min(row1, col1)

    def prob(x: int) -> Fraction:  # hypergeometric, exact
        return Fraction(math.comb(row1, x) * math.comb(n - row1, col1 - x), math.comb(n, col1))

    observed = prob(a)
    # Exact rationals: no tolerance needed to decide which tables are "as extreme".
    p = sum((q for q in map(prob, range(lo, hi + 1)) if q <= observed), Fraction(0))
    return min(1.0, float(p))


def chi2_yates(a: int, b: int, c: int, d: int) -> tuple[float, float]:
    """(statistic, p) of Pearson's chi-square with Yates's correction; (nan, nan) if degenerate."""
    n = a + b + c + d
    rows, cols = (a + b, c + d), (a + c, b + d)
    if 0 in rows or 0 in cols:
        return math.nan, math.nan
    stat = 0.0
    for i, j, obs in ((0, 0, a), (0, 1, b), (1, 0, c), (1, 1, d)):
        expected = rows[i] * cols[j] / n
        corrected = max(0.0, abs(obs - expected) - 0.5)
        stat += corrected**2 / expected
    return stat, float(chi2.sf(stat, 1))


def mcnemar_exact(b: int, c: int) -> float:
    """Two-sided exact McNemar p from the discordant counts b (yes/no) and c (no/yes)."""
    m = b + c
    if m == 0:
        return 1.0
    tail = sum(math.comb(m, x) for x in range(min(b, c) + 1))
    return min(1.0, 2 * tail / 2**m)


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


def auroc(scores_pos: list[float], scores_neg: list[float]) -> float | None:
    """P(a positive scores above a negative), ties counting half; None if a class is empty."""
    if not scores_pos or not scores_neg:
        return None
    wins = sum((p > q) + 0.5 * (p == q) for p in scores_pos for q in scores_neg)
    return wins / (len(scores_pos) * len(scores_neg))
