"""Experiment 1's statistics: published and hand-computed values, and the edge cases hallu hits.

hallu.analysis.proportions calls scipy where scipy has the test; these tests pin the values and
the edge handling hallu relies on, not scipy against itself.
"""

from __future__ import annotations

import math

import numpy as np
import pytest
from scipy.stats import mannwhitneyu, norm

from hallu.analysis import proportions as stats

# The source study's behavioural counts: declarative in 39/40 certain-user vs 17/40
# uncertain-user answers.
STUDY = (39, 1, 17, 23)
Z = norm.ppf(0.975)


def test_known_counts_from_the_issue():
    assert stats.fisher_exact(*STUDY) == pytest.approx(4.4529e-8, rel=1e-4)
    stat, p = stats.chi2_yates(*STUDY)
    # Expected counts 28/12 in both rows, |O - E| = 11, corrected 10.5: 10.5^2 (2/28 + 2/12).
    assert stat == pytest.approx(26.25, rel=1e-12)
    assert p == pytest.approx(2.9995e-7, rel=1e-4)
    lo, hi = stats.wilson(39, 40)
    assert (round(lo, 4), round(hi, 4)) == (0.8712, 0.9956)


def test_fisher_on_tables_small_enough_to_count_by_hand():
    # [[3, 0], [0, 3]]: 2 of the C(6, 3) = 20 tables with these margins are as extreme.
    assert stats.fisher_exact(3, 0, 0, 3) == pytest.approx(2 / 20)
    # Lady tasting tea, all 8 cups right: 2 of C(8, 4) = 70 tables.
    assert stats.fisher_exact(4, 0, 0, 4) == pytest.approx(2 / 70)
    # Identical rows are the most probable table: p = 1.
    assert stats.fisher_exact(5, 5, 5, 5) == pytest.approx(1.0)


def test_chi_square_of_a_table_with_an_empty_column_is_nan_not_an_error():
    assert all(math.isnan(x) for x in stats.chi2_yates(0, 10, 0, 7))
    assert all(math.isnan(x) for x in stats.chi2_yates(0, 0, 3, 4))


@pytest.mark.parametrize("n", [1, 10, 40, 1000])
def test_wilson_is_exact_at_zero_and_at_n(n):
    # At k = 0 the score interval is [0, z^2 / (n + z^2)]; at k = n, [n / (n + z^2), 1].
    assert stats.wilson(0, n) == (0.0, pytest.approx(Z * Z / (n + Z * Z), rel=1e-9))
    assert stats.wilson(n, n) == (pytest.approx(n / (n + Z * Z), rel=1e-9), 1.0)


def test_wilson_of_no_trials_is_nan_and_intervals_nest_with_confidence():
    assert all(math.isnan(x) for x in stats.wilson(0, 0))
    lo90, hi90 = stats.wilson(17, 40, conf=0.90)
    lo95, hi95 = stats.wilson(17, 40)
    assert lo95 < lo90 < 17 / 40 < hi90 < hi95


def test_newcombe_difference_matches_the_published_example():
    # Newcombe (1998), example (a), 56/70 vs 48/80, hybrid score method: 0.0524 to 0.3339.
    lo, hi = stats.newcombe_diff(56, 70, 48, 80)
    assert (round(lo, 4), round(hi, 4)) == (0.0524, 0.3339)
    assert all(math.isnan(x) for x in stats.newcombe_diff(1, 0, 3, 4))


def test_mcnemar_exact_counts_the_discordant_pairs():
    assert stats.mcnemar_exact(0, 6) == pytest.approx(2 * 0.5**6)  # all 6 discordant one way
    assert stats.mcnemar_exact(1, 5) == pytest.approx(2 * 7 / 64)  # P(X <= 1), X ~ Bin(6, 1/2)
    assert stats.mcnemar_exact(7, 7) == pytest.approx(1.0)
    assert stats.mcnemar_exact(0, 0) == 1.0  # no discordant pair: no evidence either way


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
    assert stats.n_pairs_mcnemar(0.1, 0.1) is None


def test_auroc_ranks_ties_and_empty_classes():
    assert stats.auroc([2.0, 3.0], [0.0, 1.0]) == 1.0
    assert stats.auroc([0.0, 1.0], [2.0, 3.0]) == 0.0
    assert stats.auroc([1.0, 1.0], [1.0]) == 0.5  # ties count half
    # 5 x 4 comparisons: 12 wins and 2 ties (2.0 vs 2.0) count 13.
    pos, neg = [0.3, 1.2, 2.0, 2.0, -0.1], [0.0, 2.0, -1.0, 0.5]
    assert stats.auroc(pos, neg) == pytest.approx(13 / 20)
    assert stats.auroc(pos, neg) == pytest.approx(mannwhitneyu(pos, neg).statistic / 20)
    assert math.isnan(stats.auroc([], neg)) and math.isnan(stats.auroc(pos, []))


def test_weighted_auroc_equals_repeating_the_scores():
    rng = np.random.default_rng(0)
    pos, neg = rng.normal(1, 1, 7), rng.normal(0, 1, 5)
    wp, wn = rng.integers(0, 4, 7), rng.integers(0, 4, 5)
    repeated = stats.auroc(np.repeat(pos, wp), np.repeat(neg, wn))
    assert stats.auroc(pos, neg, wp, wn) == pytest.approx(repeated)
    # A resample that drew no negative answer has nothing to rank against.
    assert math.isnan(stats.auroc(pos, neg, wp, np.zeros(5)))
