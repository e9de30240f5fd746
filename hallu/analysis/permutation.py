"""Which cells move the metric at all? A max-statistic sign-flip permutation test over the grid.

Per pair and cell the effect is d = (patched - corrupted) x sign(clean - corrupted): how far the
patch moves the metric toward the source's value, in metric units (unnormalised, so a pair with a
tiny baseline gap cannot blow up, and pairs whose gaps point different ways still add up). Under the
null that patching a cell does nothing, d is symmetric around 0, so flipping the sign of a pair's
whole row of cells gives an equally likely data set. The statistic per cell is the one-sample t of d
over pairs; each random flip of pair signs gives a max |t| over all cells, and a cell's adjusted
p-value is the share of flips whose max |t| reaches the cell's observed |t| (Westfall & Young's
single-step max-T). Adjusted p < alpha controls the family-wise error rate over the whole grid at
alpha: with no effect anywhere, some cell is called significant in at most alpha of runs. Flipping
whole rows keeps the correlation between cells of a pair. Cells where every d is exactly 0 (nothing
differs there) get t = 0; cells where every pair moves by the same nonzero amount get t = inf.

Columns: the report and summary.md test the grids of hallu/analysis/cell_maps.py, whose columns
are aligned on the marker and the template anchors, so a column holds the same token role in
every pair (counted from the end, one column mixes the marker of some pairs with claim words of
others and the test loses the pairs it spreads out).
"""

from __future__ import annotations

import numpy as np


def _t_stats(d0: np.ndarray, flips: np.ndarray, count: np.ndarray, sumsq: np.ndarray) -> np.ndarray:
    """|t| per cell for each row of sign flips [K, n]; d0 [n, C] with NaN replaced by 0."""
    with np.errstate(invalid="ignore", divide="ignore"):
        mean = (flips @ d0) / count
        var = (sumsq - count * mean**2) / (count - 1)
        t = np.abs(mean) / np.sqrt(np.maximum(var, 0) / count)
    # 0/0 (every d exactly 0) is no effect; c/0 (every pair moved by the same nonzero amount,
    # as on a model built by hand) is the largest effect there is, not none
    return np.where(np.isnan(t), 0.0, t)


def max_t_signflip(
    d: np.ndarray, n_perm: int = 2000, seed: int = 0
) -> tuple[np.ndarray, np.ndarray]:
    """d [n_pairs, n_cells] (NaN = pair lacks the cell). Returns (|t| [C], adjusted p [C])."""
    present = np.isfinite(d)
    d0 = np.where(present, d, 0.0)
    count = present.sum(0).astype(float)
    count = np.where(count > 1, count, np.nan)  # one pair gives no t
    sumsq = (d0**2).sum(0)
    n = d.shape[0]
    observed = _t_stats(d0, np.ones((1, n)), count, sumsq)[0]
    rng = np.random.default_rng(seed)
    exceed = np.zeros(d.shape[1])
    done = 0
    while done < n_perm:  # chunks keep memory at [chunk, C]
        k = min(256, n_perm - done)
        flips = rng.choice([-1.0, 1.0], size=(k, n))
        maxima = _t_stats(d0, flips, count, sumsq).max(axis=1)
        exceed += (maxima[:, None] >= observed[None, :] - 1e-12).sum(0)
        done += k
    return observed, (1 + exceed) / (1 + n_perm)


def grid_test(
    patched: np.ndarray, corrupted: np.ndarray, gap: np.ndarray, n_perm: int = 2000, seed: int = 0
) -> tuple[np.ndarray, np.ndarray]:
    """patched [n, L, P], corrupted and gap [n] -> (|t| [L, P], adjusted p [L, P])."""
    n, nl, npos = patched.shape
    toward = np.sign(gap)[:, None, None]
    d = ((patched - corrupted[:, None, None]) * toward).reshape(n, -1)
    t, p = max_t_signflip(d, n_perm, seed)
    return t.reshape(nl, npos), p.reshape(nl, npos)
