"""Bootstrap intervals over prompt pairs, with the normalisation recomputed in every resample.

Restoration of a cell is the *ratio of means* over pairs:
    (mean patched - mean corrupted) / (mean clean - mean corrupted)
taken over the pairs that have the cell. Each bootstrap resample draws pairs with replacement
(as multinomial counts, so one matrix product gives every cell) and recomputes numerator *and*
denominator, so the interval carries the baseline gap's uncertainty too: a ratio whose gap is
near zero gets the wide interval it deserves. Intervals are percentile intervals.

The headline of a direction is its *band mean*: restoration at the last position averaged over a
band of layers (default: the upper half, the source study's "layers 20-39" of 40). The 2A - 2B
difference resamples the same pairs in both directions (paired bootstrap).
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np

from hallu.analysis.grid import PairGrid


@dataclass(frozen=True)
class Interval:
    estimate: float
    lo: float
    hi: float

    def contains(self, value: float) -> bool:
        return bool(self.lo <= value <= self.hi)

    def fmt(self, digits: int = 3) -> str:
        return f"{self.estimate:.{digits}f} [{self.lo:.{digits}f}, {self.hi:.{digits}f}]"


def resample_weights(n_pairs: int, n_boot: int, seed: int) -> np.ndarray:
    """[n_boot + 1, n_pairs] counts; row 0 is the data itself (every pair once)."""
    rng = np.random.default_rng(seed)
    w = rng.multinomial(n_pairs, np.full(n_pairs, 1.0 / n_pairs), size=n_boot).astype(float)
    return np.vstack([np.ones(n_pairs), w])


def _ratio_of_means(
    patched: np.ndarray, corrupted: np.ndarray, gap: np.ndarray, w: np.ndarray
) -> tuple[np.ndarray, np.ndarray]:
    """patched [n, C]; returns ([B, C] ratio, [B, C] weighted mean gap) under weights w [B, n]."""
    present = np.isfinite(patched)
    delta = np.where(present, patched - corrupted[:, None], 0.0)
    num = w @ delta
    den = w @ (present * gap[:, None])
    count = w @ present.astype(float)
    with np.errstate(invalid="ignore", divide="ignore"):
        ratio = np.where(den != 0, num / den, np.nan)
        mean_gap = np.where(count > 0, den / count, np.nan)
    return ratio, mean_gap


def _interval(samples: np.ndarray, level: float) -> tuple[np.ndarray, np.ndarray]:
    a = (1 - level) / 2
    with np.errstate(invalid="ignore"), quiet():
        lo = np.nanquantile(samples, a, axis=0)
        hi = np.nanquantile(samples, 1 - a, axis=0)
    return lo, hi


class quiet:
    """Silence numpy's all-NaN-slice warning (a cell no resample could estimate stays NaN)."""

    def __enter__(self) -> None:
        import warnings

        self._w = warnings.catch_warnings()
        self._w.__enter__()
        warnings.simplefilter("ignore", RuntimeWarning)

    def __exit__(self, *exc: object) -> None:
        self._w.__exit__(*exc)


@dataclass(frozen=True)
class CellIntervals:
    estimate: np.ndarray  # [n_layers, n_positions] ratio of means
    lo: np.ndarray
    hi: np.ndarray
    mean_gap: np.ndarray  # [n_layers, n_positions] mean clean - corrupted over the cell's pairs
    samples: np.ndarray  # [n_boot, n_layers, n_positions] (for differences and the locus)


def cells(
    grid: PairGrid, w: np.ndarray, level: float = 0.95, keep_samples: bool = True
) -> CellIntervals:
    """Per-cell ratio-of-means restoration with bootstrap intervals (weights from
    `resample_weights`). `keep_samples=False` leaves `samples` empty (0 rows), for callers that
    need only the intervals: the replicates are n_boot x layers x positions float64 each."""
    n, nl, npos = grid.patched.shape
    ratio, mean_gap = _ratio_of_means(grid.patched.reshape(n, -1), grid.corrupted, grid.gap, w)
    ratio = ratio.reshape(len(w), nl, npos)
    lo, hi = _interval(ratio[1:], level)
    # Copies, not views: a view of row 0 would keep all n_boot rows alive.
    samples = ratio[1:] if keep_samples else np.empty((0, nl, npos))
    return CellIntervals(ratio[0].copy(), lo, hi, mean_gap[0].reshape(nl, npos).copy(), samples)


def default_band(n_layers: int) -> list[int]:
    """The upper half of the model's layers (the source study's band: layers 20-39 of 40)."""
    return list(range(n_layers // 2, n_layers))


def band_samples(grid: PairGrid, band: list[int], w: np.ndarray) -> np.ndarray:
    """[B] band-mean restoration at the last position: ratio of means of the band-averaged
    patched metric, one value per weight row (row 0 = the data)."""
    if -1 not in grid.positions:
        raise ValueError("the last position (-1) was not swept; no band mean")
    cols = [grid.layers.index(layer) for layer in band if layer in grid.layers]
    if not cols:
        raise ValueError(f"no swept layer lies in the band {band[0]}-{band[-1]}")
    band_patched = np.nanmean(grid.patched[:, cols, grid.positions.index(-1)], axis=1)
    ratio, _ = _ratio_of_means(band_patched[:, None], grid.corrupted, grid.gap, w)
    return ratio[:, 0]


def summarize(samples: np.ndarray, level: float = 0.95) -> Interval:
    """Row 0 is the estimate; the rest are bootstrap replicates."""
    lo, hi = _interval(samples[1:], level)
    return Interval(float(samples[0]), float(lo), float(hi))


def per_pair_band(grid: PairGrid, band: list[int]) -> np.ndarray:
    """Each pair's own band-mean restoration at the last position (NaN where its gap is 0)."""
    cols = [grid.layers.index(layer) for layer in band if layer in grid.layers]
    band_patched = np.nanmean(grid.patched[:, cols, grid.positions.index(-1)], axis=1)
    with np.errstate(invalid="ignore", divide="ignore"):
        return np.where(grid.gap != 0, (band_patched - grid.corrupted) / grid.gap, np.nan)


def mean_interval(values: np.ndarray, n_boot: int, seed: int, level: float = 0.95) -> Interval:
    """Mean of `values` (NaNs dropped) with a percentile bootstrap interval."""
    v = values[np.isfinite(values)]
    if len(v) == 0:
        return Interval(float("nan"), float("nan"), float("nan"))
    w = resample_weights(len(v), n_boot, seed)
    means = w @ v / len(v)
    return summarize(means, level)
