"""The verdicts' intervals hold their level at small n (hallu/analysis/calibrate.py): a smaller
Monte Carlo run than docs/analysis.md's table, failing if any rate of the jackknife t interval
exceeds its nominal level by more than its Monte Carlo error."""

from __future__ import annotations

import pytest

from hallu.analysis import calibrate


@pytest.mark.parametrize("n", [2, 3, 4, 6, 12])
def test_false_positive_rate_and_coverage_hold_at_small_n(n: int):
    runs = 1000
    r = calibrate.rates(n, runs, seed=1)
    limit = calibrate.NOMINAL + calibrate.mc_error(runs)
    assert r.null_interval <= limit, r
    assert r.effect_miss <= limit, r
    assert r.null_verdict <= limit, r
    if n < calibrate.MIN_PAIRS:  # below analysis.min_pairs the rule gives no verdict
        assert r.null_verdict == 0


def test_the_former_percentile_bootstrap_fails_the_same_check():
    """What the check catches: the percentile bootstrap over 3 pairs excludes a null difference
    far more often than 10%."""
    r = calibrate.rates(3, 300, seed=1, n_boot=300)
    assert r.boot_null_interval is not None
    assert r.boot_null_interval > calibrate.NOMINAL + calibrate.mc_error(300)


def test_the_table_has_a_row_per_n(tmp_path):
    out = tmp_path / "t.md"
    assert calibrate.main(["--runs", "20", "--n-boot", "0", "--out", str(out)]) == 0
    rows = [line for line in out.read_text().splitlines() if line.startswith("| ")]
    assert [int(x.split("|")[1]) for x in rows[1:]] == list(calibrate.NS)
