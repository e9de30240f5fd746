"""Experiment 1's statistics against scipy and against published values."""

from __future__ import annotations

import math

import pytest
from scipy import stats as sp
from scipy.stats import norm

from hallu.analysis import proportions as stats

# The seed's behavioural counts: declarative in 39/40 certain-user vs 17/40 uncertain-user answers.
SEED = (39, 1, 17, 23)


def test_known_counts_from_the_issue():
    assert stats.fisher_exact(*SEED) == pytest.approx(4.45e-8, rel=2e-3)
    _, p = stats.chi2_yates(*SEED)
    assert p == pytest.approx(3.0e-7, rel=2e-3)
    lo, hi = stats.wilson(39, 40)
    assert (round(lo, 3), round(hi, 3)) == (0.871, 0.996)


@pytest.mark.parametrize(
    "table",
    [SEED, (23, 17, 39, 1), (0, 10, 3, 7), (5, 5, 5, 5), (12, 3, 4, 14), (1, 30, 0, 2)],
)
def test_fisher_and_chi_square_match_scipy(table):
    a, b, c, d = table
    assert stats.fisher_exact(a, b, c, d) == pytest.approx(
        sp.fisher_exact([[a, b], [c, d]]).pvalue, rel=1e-9
    )
    stat, p = stats.chi2_yates(a, b, c, d)
    ref = sp.chi2_contingency([[a, b], [c, d]], correction=True)
    assert stat == pytest.approx(ref.statistic, rel=1e-9)
    assert p == pytest.approx(ref.pvalue, rel=1e-9)


@pytest.mark.parametrize("k,n", [(0, 10), (1, 10), (39, 40), (40, 40), (17, 40), (250, 1000)])
def test_wilson_matches_scipy(k, n):
    ref = sp.binomtest(k, n).proportion_ci(confidence_level=0.95, method="wilson")
    assert stats.wilson(k, n) == pytest.approx((ref.low, ref.high), abs=1e-12)


def test_newcombe_difference_matches_the_published_example():
    # Newcombe (1998), example (a), 56/70 vs 48/80, hybrid score method: 0.0524 to 0.3339.
    lo, hi = stats.newcombe_diff(56, 70, 48, 80)
    assert (round(lo, 4), round(hi, 4)) == (0.0524, 0.3339)


@pytest.mark.parametrize("b,c", [(5, 20), (0, 6), (7, 7), (1, 0), (13, 4)])
def test_mcnemar_exact_is_the_binomial_test_on_discordant_pairs(b, c):
    assert stats.mcnemar_exact(b, c) == pytest.approx(sp.binomtest(b, b + c, 0.5).pvalue)


def test_power_sample_sizes():
    # Fleiss, Levin & Paik (2003), table A.4: 0.4 vs 0.6, two-sided 0.05, power 0.8 -> 107.
    assert stats.n_per_group(0.6, 0.4) == 107
    assert stats.n_per_group(0.5, 0.5) is None
    # Paired: the returned n is the smallest with normal-approximation power >= 0.8.
    p10, p01 = 0.25, 0.05
    n = stats.n_pairs_mcnemar(p10, p01)
    pd, delta = p10 + p01, p10 - p01

    def power(m: int) -> float:
        return norm.cdf(
            (delta * math.sqrt(m) - norm.ppf(0.975) * math.sqrt(pd)) / math.sqrt(pd - delta**2)
        )

    assert power(n) >= 0.8 > power(n - 1)


def test_auroc_is_the_mann_whitney_u_over_pairs():
    pos, neg = [0.3, 1.2, 2.0, 2.0, -0.1], [0.0, 2.0, -1.0, 0.5]
    u = sp.mannwhitneyu(pos, neg).statistic
    assert stats.auroc(pos, neg) == pytest.approx(u / (len(pos) * len(neg)))
    assert stats.auroc([], neg) is None
