"""Two runs side by side (chat vs base model, 7B vs 13B): difference maps with intervals.

Layers are put on relative depth, layer / (n_layers - 1), and binned into as many bins as the
shallower model has layers (with equal depths every bin is one layer). Each run's bootstrap
replicates are averaged within bins and subtracted replicate by replicate. Both runs resample
with the same seed, so when they hold the same pairs (same prompt set) the replicates are paired
draws of the same pairs; otherwise they are independent draws.
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np

from hallu.analysis import bootstrap
from hallu.analysis.bootstrap import Interval
from hallu.analysis.results import DirectionResult


@dataclass
class DirectionDiff:
    direction: str
    bins: list[str]  # relative-depth bin labels
    positions: list[int]
    estimate: np.ndarray  # [bins, positions] A - B
    lo: np.ndarray
    hi: np.ndarray
    headline: Interval | None
    paired: bool

    @property
    def significant(self) -> np.ndarray:
        return (self.lo > 0) | (self.hi < 0)


def _binned(s: DirectionResult, n_layers: int, k: int, cols: list[int]) -> np.ndarray:
    """[B + 1, k, len(cols)] replicates (row 0 the data) averaged within relative-depth bins."""
    assert s.cells is not None
    full = np.concatenate([s.cells.estimate[None], s.cells.samples])[:, :, cols]
    depth = np.array(s.grid.layers) / max(1, n_layers - 1)
    which = np.minimum((depth * k).astype(int), k - 1)
    out = np.full((full.shape[0], k, len(cols)), np.nan)
    with bootstrap.quiet():
        for b in range(k):
            if (which == b).any():
                out[:, b] = np.nanmean(full[:, which == b], axis=1)
    return out


def compare(
    a: DirectionResult, na: int, b: DirectionResult, nb: int, level: float = 0.95, seed: int = 0
) -> DirectionDiff:
    """A - B over the pairs each run's headline uses (its pair check)."""
    positions = [p for p in a.grid.positions if p in b.grid.positions]
    k = min(na, nb)
    xa = _binned(a, na, k, [a.grid.positions.index(p) for p in positions])
    xb = _binned(b, nb, k, [b.grid.positions.index(p) for p in positions])
    n = min(len(xa), len(xb))
    diff = xa[:n] - xb[:n]
    with bootstrap.quiet():
        lo = np.nanquantile(diff[1:], (1 - level) / 2, axis=0)
        hi = np.nanquantile(diff[1:], 1 - (1 - level) / 2, axis=0)
    labels = [f"{i / k:.2f}-{(i + 1) / k:.2f}" for i in range(k)]
    headline = None
    if a.headline is not None and b.headline is not None:
        ua, ub = a.used, b.used
        wa = bootstrap.resample_weights(len(ua.pair_ids), n - 1, seed)
        wb = bootstrap.resample_weights(len(ub.pair_ids), n - 1, seed)
        ha = bootstrap.band_samples(ua, a.band, wa)
        hb = bootstrap.band_samples(ub, b.band, wb)
        headline = bootstrap.summarize(ha - hb, level)
    return DirectionDiff(
        a.direction,
        labels,
        positions,
        diff[0],
        lo,
        hi,
        headline,
        a.check.used == b.check.used,
    )
