"""Every statistic the report shows, for one run: plain numbers and arrays, no rendering.

Per direction: per-cell ratio-of-means restoration with bootstrap intervals, max-T adjusted
p-values, the per-layer curve at the last position with its band, the locus, the headline
band mean, and the same for each control beside a paired real-minus-control difference. Across
directions: the paired 2A - 2B difference of band means, and each pair's own difference.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any

import numpy as np
import pyarrow as pa

from hallu.analysis import bootstrap, locus, permutation
from hallu.analysis.bootstrap import Interval
from hallu.analysis.grid import PairGrid, build, keys
from hallu.analysis.noise_flags import flag_gap, inside
from hallu.analysis.results import SHORT as SHORT  # one definition; re-exported for the report

DIRECTIONS = ("restore_confidence", "induce_tentativeness")


@dataclass(frozen=True)
class Options:
    n_boot: int = 2000
    n_perm: int = 2000
    alpha: float = 0.05
    level: float = 0.95
    seed: int = 0
    band: list[int] | None = None  # None: the upper half of the layers
    locus_share: float = 0.8


@dataclass
class ControlStats:
    name: str
    cells: bootstrap.CellIntervals
    curve: tuple[np.ndarray, np.ndarray, np.ndarray] | None  # estimate, lo, hi at last position
    headline: Interval | None
    real_minus_control: Interval | None
    n_pairs: int


@dataclass
class DirectionStats:
    direction: str
    grid: PairGrid
    cells: bootstrap.CellIntervals
    t: np.ndarray
    p_adj: np.ndarray
    curve: tuple[np.ndarray, np.ndarray, np.ndarray] | None
    locus: locus.Locus | None
    headline: Interval | None
    band: list[int]
    gap: Interval
    gap_flag: str
    pairs_inside_floor: int
    controls: dict[str, ControlStats] = field(default_factory=dict)
    alpha: float = 0.05

    @property
    def significant(self) -> np.ndarray:
        """Cells whose max-T adjusted p-value is below alpha (family-wise error rate alpha)."""
        return self.p_adj < self.alpha


@dataclass
class RunStats:
    options: Options
    n_layers: int
    gap_floor: float | None
    directions: dict[str, DirectionStats]
    difference: Interval | None = None  # 2A - 2B band mean, paired bootstrap
    per_pair_difference: Interval | None = None  # mean over pairs of (r_2A - r_2B)
    per_pair_values: np.ndarray | None = None
    common_pairs: list[str] = field(default_factory=list)


def _weights(grid: PairGrid, opts: Options) -> np.ndarray:
    return bootstrap.resample_weights(len(grid.pair_ids), opts.n_boot, opts.seed)


def _curve(ci: bootstrap.CellIntervals, grid: PairGrid) -> tuple | None:
    if -1 not in grid.positions:
        return None
    j = grid.positions.index(-1)
    return ci.estimate[:, j], ci.lo[:, j], ci.hi[:, j]


def _headline(grid: PairGrid, band: list[int], w: np.ndarray, opts: Options) -> np.ndarray | None:
    try:
        return bootstrap.band_samples(grid, band, w)
    except ValueError:
        return None


def _direction(
    table: pa.Table, direction: str, n_layers: int, gap_floor: float | None, opts: Options
) -> DirectionStats | None:
    grid = build(table, direction)
    if grid is None:
        return None
    w = _weights(grid, opts)
    ci = bootstrap.cells(grid, w, opts.level)
    t, p = permutation.grid_test(grid.patched, grid.corrupted, grid.gap, opts.n_perm, opts.seed)
    band = opts.band or bootstrap.default_band(n_layers)
    head = _headline(grid, band, w, opts)
    loc = None
    if -1 in grid.positions:
        j = grid.positions.index(-1)
        curve_samples = np.concatenate([ci.estimate[None], ci.samples])[:, :, j]
        loc = locus.locate(grid.layers, curve_samples, n_layers, opts.locus_share)
    gap = bootstrap.mean_interval(grid.gap, opts.n_boot, opts.seed, opts.level)
    stats = DirectionStats(
        direction,
        grid,
        ci,
        t,
        p,
        _curve(ci, grid),
        loc,
        bootstrap.summarize(head, opts.level) if head is not None else None,
        band,
        gap,
        flag_gap(gap.estimate, gap_floor),
        int(inside(grid.gap, gap_floor).sum()),
        alpha=opts.alpha,
    )
    controls = {k.control for k in keys(table) if k.direction == direction}
    for name in sorted(c for c in controls if c is not None):
        cgrid = build(table, direction, name)
        assert cgrid is not None
        common = [p for p in grid.pair_ids if p in cgrid.pair_ids]
        real, ctrl = grid.subset(common), cgrid.subset(common)
        cw = bootstrap.resample_weights(len(common), opts.n_boot, opts.seed)
        cci = bootstrap.cells(ctrl, cw, opts.level, keep_samples=False)  # intervals only
        chead, rhead = _headline(ctrl, band, cw, opts), _headline(real, band, cw, opts)
        stats.controls[name] = ControlStats(
            name,
            cci,
            _curve(cci, ctrl),
            bootstrap.summarize(chead, opts.level) if chead is not None else None,
            bootstrap.summarize(rhead - chead, opts.level)
            if chead is not None and rhead is not None
            else None,
            len(common),
        )
    return stats


def analyse(
    table: pa.Table, n_layers: int, noise: dict[str, Any] | None, opts: Options = Options()
) -> RunStats:
    gap_floor = float(noise["gap_floor"]) if noise else None
    per = {}
    for d in DIRECTIONS:
        s = _direction(table, d, n_layers, gap_floor, opts)
        if s is not None:
            per[d] = s
    out = RunStats(opts, n_layers, gap_floor, per)
    if len(per) == 2:
        a, b = per["restore_confidence"], per["induce_tentativeness"]
        common = [p for p in a.grid.pair_ids if p in b.grid.pair_ids]
        if common and a.headline is not None and b.headline is not None:
            ga, gb = a.grid.subset(common), b.grid.subset(common)
            w = bootstrap.resample_weights(len(common), opts.n_boot, opts.seed)
            diff = bootstrap.band_samples(ga, a.band, w) - bootstrap.band_samples(gb, b.band, w)
            out.difference = bootstrap.summarize(diff, opts.level)
            values = bootstrap.per_pair_band(ga, a.band) - bootstrap.per_pair_band(gb, b.band)
            out.per_pair_values = values
            out.per_pair_difference = bootstrap.mean_interval(
                values, opts.n_boot, opts.seed, opts.level
            )
            out.common_pairs = common
    return out
