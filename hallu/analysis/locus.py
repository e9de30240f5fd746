"""The locus: the contiguous band of layers where patching the last position measurably restores.

Each direction's profile is its per-layer restoration at the last position (ratio of means over
pairs) divided by its own maximum, so a direction with a weaker effect is not given a narrower
band: the band is the contiguous run of layers, around the normalised profile's peak, whose
restoration has its t interval (hallu/analysis/intervals.py) above 0. It depends on where the
patch restores measurably, not on how much: scaling one direction's effect moves no edge.
Relative depth = layer / (n_layers - 1), so models of different depth compare.

"Shared" is an equivalence test on the edges: `band_edges` recomputes both bands in every
bootstrap resample of pairs (every layer's ratio of means and its jackknife t interval over the
resample), and `EdgeShifts` holds 2B - 2A for the first and the last layer, row 0 the data.
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np
from scipy import stats

from hallu.analysis.bootstrap import Interval, summarize


@dataclass(frozen=True)
class Locus:
    first: int
    last: int
    peak: int  # the layer of the profile's maximum
    n_layers: int
    profile: tuple[float, ...]  # restoration / its maximum, per swept layer

    def describe(self) -> str:
        depth = self.n_layers - 1 or 1
        return (
            f"layers {self.first}-{self.last} (relative depth {self.first / depth:.2f}-"
            f"{self.last / depth:.2f}; peak at layer {self.peak})"
        )


def band_of(estimate: np.ndarray, lo: np.ndarray) -> tuple[int, int, int] | None:
    """(first, last, peak) index: the contiguous run with lo > 0 around the largest estimate
    among such layers; None if no layer's interval lies above 0."""
    above = np.nan_to_num(lo, nan=-np.inf) > 0
    if not above.any():
        return None
    peak = int(np.nanargmax(np.where(above, estimate, -np.inf)))
    first = last = peak
    while first > 0 and above[first - 1]:
        first -= 1
    while last < len(above) - 1 and above[last + 1]:
        last += 1
    return first, last, peak


def locate(layers: list[int], estimate: np.ndarray, lo: np.ndarray, n_layers: int) -> Locus | None:
    """The locus of one direction from its per-layer restoration and interval lower bounds."""
    band = band_of(estimate, lo)
    if band is None:
        return None
    first, last, peak = band
    top = float(estimate[peak])
    profile = tuple(float(x) / top for x in estimate)
    return Locus(layers[first], layers[last], layers[peak], n_layers, profile)


def layer_intervals(
    num: np.ndarray, gap: np.ndarray, w: np.ndarray, level: float
) -> tuple[np.ndarray, np.ndarray]:
    """([B, L] ratio of means, [B, L] lower bound of its jackknife t interval) per layer under
    each weight row of w [B, n] (pair counts; a pair drawn k times is k pairs). num [n, L] is
    patched - corrupted (NaN: cell absent), gap [n]. With w all ones this is
    hallu/analysis/intervals.py's `ratio` for every layer; NaN lower bound where that is NaN."""
    present = np.isfinite(num) & np.isfinite(gap)[:, None]
    x = np.where(present, num, 0.0)
    g = np.where(present, gap[:, None], 0.0)
    k = w[:, :, None] * present  # [B, n, L] copies of each pair in each layer
    count = k.sum(axis=1)
    with np.errstate(invalid="ignore", divide="ignore"):
        total, den = w @ x, w @ g
        est = total / den
        loo = (total[:, None] - x) / (den[:, None] - g)
        bad = ((k > 0) & ~np.isfinite(loo)).any(axis=1) | (count < 2) | ~np.isfinite(est)
        loo = np.where(k > 0, loo, 0.0)
        centre = (k * loo).sum(axis=1) / count
        se = np.sqrt((count - 1) / count * (k * (loo - centre[:, None]) ** 2).sum(axis=1))
        half = stats.t.ppf((1 + level) / 2, np.maximum(count - 1, 1)) * se
    return est, np.where(bad, np.nan, est - half)


def band_edges(
    layers: list[int], num: np.ndarray, gap: np.ndarray, w: np.ndarray, level: float
) -> np.ndarray:
    """[B, 2] (first, last) layer of the band under each weight row of w (`layer_intervals`'s
    arguments); NaN where no layer's interval lies above 0."""
    out = np.full((len(w), 2), np.nan)
    for start in range(0, len(w), 256):  # bounded memory: [256, n, L] at a time
        est, lo = layer_intervals(num, gap, w[start : start + 256], level)
        for row, (e, low) in enumerate(zip(est, lo, strict=True)):
            band = band_of(e, low)
            if band is not None:
                out[start + row] = layers[band[0]], layers[band[1]]
    return out


@dataclass(frozen=True)
class EdgeShifts:
    """2B's band edge - 2A's in layers, columns (first, last): row 0 the data, rows 1.. the
    bootstrap resamples of pairs; NaN where either direction has no band."""

    samples: np.ndarray  # [n_boot + 1, 2]
    level: float

    @property
    def n_missing(self) -> int:
        """Resamples in which a direction has no band."""
        return int(np.isnan(self.samples[1:]).any(axis=1).sum())

    def intervals(self, missing: float | None = None) -> tuple[Interval, Interval]:
        """Percentile intervals of the (first, last) shifts; a resample without a band counts
        as a shift of `missing` layers (None: left out)."""
        s = self.samples
        if missing is not None:
            s = np.where(np.isnan(s), missing, s)
        return summarize(s[:, 0], self.level), summarize(s[:, 1], self.level)
