"""Bootstrap, permutation test, locus and noise-floor flags against data with a known answer."""

from __future__ import annotations

import numpy as np

from hallu.analysis import bootstrap, locus, permutation
from hallu.analysis.grid import PairGrid
from hallu.analysis.noise_flags import flag_gap


def synthetic(
    effect: np.ndarray, n_pairs: int, seed: int, noise: float = 0.3, gap: float = 2.0
) -> PairGrid:
    """patched = corrupted + effect[l, p] * (clean - corrupted) + noise; effect is the truth."""
    rng = np.random.default_rng(seed)
    corrupted = rng.normal(0.0, 0.5, n_pairs)
    clean = corrupted + rng.normal(gap, 0.5, n_pairs)
    g = clean - corrupted
    patched = (
        corrupted[:, None, None]
        + effect[None] * g[:, None, None]
        + rng.normal(0, noise, (n_pairs, *effect.shape))
    )
    nl, npos = effect.shape
    return PairGrid(
        [f"p{i}" for i in range(n_pairs)],
        list(range(nl)),
        list(range(-npos, 0)),
        clean,
        corrupted,
        patched,
    )


def test_bootstrap_interval_covers_the_true_ratio_at_about_95_percent():
    truth = np.array([[0.6]])
    hits = 0
    seeds = 200
    for s in range(seeds):
        grid = synthetic(truth, n_pairs=30, seed=s)
        w = bootstrap.resample_weights(30, 400, seed=1000 + s)
        ci = bootstrap.cells(grid, w)
        hits += ci.lo[0, 0] <= 0.6 <= ci.hi[0, 0]
    # 95% nominal; percentile intervals run slightly narrow at n=30. 200 draws: sd ~ 1.5 points.
    assert 0.88 <= hits / seeds <= 0.99, hits


def test_bootstrap_recomputes_the_denominator_in_each_resample():
    """Pairs whose gap is near 0 must widen the interval, which a fixed denominator hides."""
    truth = np.array([[0.5]])
    steady = synthetic(truth, 20, seed=3, gap=2.0)
    shaky = synthetic(truth, 20, seed=3, gap=0.05)
    w = bootstrap.resample_weights(20, 500, seed=0)
    a, b = bootstrap.cells(steady, w), bootstrap.cells(shaky, w)
    assert (b.hi - b.lo)[0, 0] > 5 * (a.hi - a.lo)[0, 0]
    # The estimate is the ratio of means, not the mean of per-pair ratios.
    g = steady
    expected = (g.patched[:, 0, 0].mean() - g.corrupted.mean()) / g.gap.mean()
    assert abs(a.estimate[0, 0] - expected) < 1e-12


def test_band_mean_and_paired_difference():
    eff_a = np.zeros((6, 3))
    eff_a[3:, -1] = 1.0
    eff_b = eff_a * 0.7
    ga, gb = synthetic(eff_a, 40, seed=1, noise=0.1), synthetic(eff_b, 40, seed=2, noise=0.1)
    band = bootstrap.default_band(6)
    assert band == [3, 4, 5]
    w = bootstrap.resample_weights(40, 500, seed=5)
    a = bootstrap.summarize(bootstrap.band_samples(ga, band, w))
    b = bootstrap.summarize(bootstrap.band_samples(gb, band, w))
    diff = bootstrap.summarize(
        bootstrap.band_samples(ga, band, w) - bootstrap.band_samples(gb, band, w)
    )
    assert a.contains(1.0) and b.contains(0.7) and diff.lo > 0.15
    # The same model twice: the paired difference's interval holds 0.
    same = bootstrap.summarize(
        bootstrap.band_samples(ga, band, w) - bootstrap.band_samples(ga, band, w)
    )
    assert same.contains(0.0)


def test_permutation_finds_a_planted_effect_and_only_there():
    effect = np.zeros((8, 10))
    effect[5, 9] = effect[6, 9] = 0.5
    grid = synthetic(effect, n_pairs=24, seed=7)
    _, p = permutation.grid_test(grid.patched, grid.corrupted, grid.gap, n_perm=1000, seed=0)
    assert p[5, 9] < 0.01 and p[6, 9] < 0.01
    assert (p < 0.05).sum() <= 3  # the two planted cells, at most one false call


def test_permutation_without_effect_keeps_the_familywise_error_rate():
    effect = np.zeros((6, 8))  # 48 cells, no effect anywhere
    runs, alpha = 300, 0.05
    rejected = 0
    for s in range(runs):
        grid = synthetic(effect, n_pairs=12, seed=10_000 + s)
        _, p = permutation.grid_test(grid.patched, grid.corrupted, grid.gap, n_perm=200, seed=s)
        rejected += bool((p < alpha).any())
    # FWER <= 5%; binomial sd at 300 runs is 1.3 points, so 9% is > 3 sd above the bound.
    assert rejected / runs <= 0.09, rejected
    # An uncorrected per-cell test would reject in most runs (48 cells): the max-T does the work.
    assert rejected / runs < 0.5


def test_cells_identical_by_construction_are_never_significant():
    effect = np.zeros((3, 4))
    effect[2, 3] = 0.8
    grid = synthetic(effect, n_pairs=10, seed=1)
    patched = grid.patched.copy()
    patched[:, :, 0] = grid.corrupted[:, None]  # positions before the marker: no change at all
    t, p = permutation.grid_test(patched, grid.corrupted, grid.gap, n_perm=300, seed=0)
    assert (t[:, 0] == 0).all() and (p[:, 0] == 1.0).all()


def test_locus_finds_the_planted_band_and_its_normalised_profile():
    curve = np.zeros((12, 1))
    curve[6:10, 0] = 1.0
    curve[8, 0] = 2.0  # the peak: the profile is restoration over it
    grid = synthetic(curve, n_pairs=30, seed=4, noise=0.1)
    num = grid.patched[:, :, -1] - grid.corrupted[:, None]
    est, lo = locus.layer_intervals(num, grid.gap, np.ones((1, 30)), level=0.95)
    loc = locus.locate(grid.layers, est[0], lo[0], n_layers=12)
    assert loc is not None and (loc.first, loc.last, loc.peak) == (6, 9, 8)
    assert loc.profile[8] == 1.0 and abs(loc.profile[6] - 0.5) < 0.05 and abs(loc.profile[0]) < 0.05
    assert locus.band_of(np.zeros(5), np.zeros(5)) is None


def test_a_gap_inside_the_noise_floor_is_flagged():
    assert flag_gap(0.01, gap_floor=0.03) == "inside noise floor"
    assert flag_gap(-0.5, gap_floor=0.03) == ""
    assert flag_gap(0.5, gap_floor=None) == "floor not measured"
