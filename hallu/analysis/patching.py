"""The patching numbers of `results.Results`, per direction and across the two (definitions in
hallu/analysis/results.py); `pipeline.analyse` calls these in turn."""

from __future__ import annotations

import numpy as np
import pyarrow as pa

from hallu.analysis import bootstrap, intervals, locus
from hallu.analysis.bootstrap import Interval
from hallu.analysis.directions import DIRECTION_NAMES, EXPECTED_SIGN
from hallu.analysis.grid import Key, PairGrid, build, keys
from hallu.analysis.noise_flags import flag_gap, inside
from hallu.analysis.results import (
    INSIDE_FLOOR,
    WRONG_SIGN,
    ControlResult,
    Curve,
    DirectionResult,
    Options,
    PairCheck,
    Premise,
    Results,
)


def check_pairs(grid: PairGrid, direction: str, gap_floor: float | None) -> PairCheck:
    """Which pairs' baselines can carry a ratio (hallu/analysis/results.py)."""
    steps = grid.resolution if grid.resolution is not None else np.zeros(len(grid.pair_ids))
    floors = np.maximum(gap_floor or 0.0, 2 * np.nan_to_num(steps))
    toward = EXPECTED_SIGN[direction] * grid.gap
    excluded = {}
    for pid, g, f in zip(grid.pair_ids, toward, floors, strict=True):
        if not np.isfinite(g) or abs(g) <= f:
            excluded[pid] = INSIDE_FLOOR
        elif g < 0:
            excluded[pid] = WRONG_SIGN
    used = [p for p in grid.pair_ids if p not in excluded]
    return PairCheck(used, excluded, float(floors.max()) if len(floors) else 0.0, gap_floor)


def _weights(n: int, opts: Options) -> np.ndarray:
    return bootstrap.resample_weights(n, opts.n_boot, opts.seed)


def _band_intervals(
    grid: PairGrid, band: list[int], opts: Options
) -> tuple[Interval, Interval] | None:
    """(ratio of means, mean of ratios) of the band mean at the last position."""
    if -1 not in grid.positions or not grid.pair_ids:
        return None
    w = _weights(len(grid.pair_ids), opts)
    try:
        rom = bootstrap.summarize(bootstrap.band_samples(grid, band, w), opts.level)
    except ValueError:
        return None
    per_pair = bootstrap.per_pair_band(grid, band)
    mor = bootstrap.mean_interval(per_pair, opts.n_boot, opts.seed, opts.level)
    return rom, mor


def disagreement(rom: Interval, mor: Interval) -> str | None:
    """Why the two estimators disagree, or None: opposite signs, or disjoint intervals."""
    if np.sign(rom.estimate) * np.sign(mor.estimate) < 0:
        return f"ratio of means {rom.fmt()} and mean of ratios {mor.fmt()} differ in sign"
    if rom.hi < mor.lo or mor.hi < rom.lo:
        return f"ratio of means {rom.fmt()} and mean of ratios {mor.fmt()} have disjoint intervals"
    return None


def _cells_and_locus(
    grid: PairGrid, n_layers: int, opts: Options
) -> tuple[bootstrap.CellIntervals | None, locus.Locus | None]:
    """Every cell's interval over these pairs, and the locus of its last-position curve (from
    each layer's ratio-of-means t interval)."""
    if not grid.pair_ids:
        return None, None
    ci = bootstrap.cells(grid, _weights(len(grid.pair_ids), opts), opts.level)
    if -1 not in grid.positions:
        return ci, None
    est, lo = locus.layer_intervals(*_last(grid), np.ones((1, len(grid.pair_ids))), opts.level)
    return ci, locus.locate(grid.layers, est[0], lo[0], n_layers)


def _last(grid: PairGrid) -> tuple[np.ndarray, np.ndarray]:
    """(patched - corrupted [n, L], gap [n]) at the last position: what the locus reads."""
    j = grid.positions.index(-1)
    return grid.patched[:, :, j] - grid.corrupted[:, None], grid.gap


def direction_result(
    table: pa.Table, direction: str, n_layers: int, gap_floor: float | None, opts: Options
) -> DirectionResult | None:
    grid = build(table, Key(direction))
    if grid is None:
        return None
    check = check_pairs(grid, direction, gap_floor)
    band = opts.band or bootstrap.default_band(n_layers)
    used = grid.subset(check.used)
    est = _band_intervals(used, band, opts)
    every = _band_intervals(grid, band, opts)
    cells, loc = _cells_and_locus(used, n_layers, opts)
    steps = grid.resolution[grid.resolution > 0] if grid.resolution is not None else []
    gap_all = bootstrap.mean_interval(grid.gap, opts.n_boot, opts.seed, opts.level)
    out = DirectionResult(
        direction,
        grid,
        check,
        band,
        bootstrap.mean_interval(used.gap, opts.n_boot, opts.seed, opts.level)
        if check.used
        else None,
        est[0] if est else None,
        est[1] if est else None,
        loc,
        float(np.median(steps)) if len(steps) else 0.0,
        cells,
        every[0] if every else None,
        every[1] if every else None,
        gap_all,
        int(inside(grid.gap, gap_floor).sum()),
        flag_gap(gap_all.estimate, gap_floor),
    )
    if check.excluded:
        out.flags.append(check.describe())
    if est is not None and (why := disagreement(*est)):
        out.flags.append(why)
    return out


def band_change(grid: PairGrid, band: list[int]) -> np.ndarray:
    """Each pair's mean raw change (patched - corrupted) over the band at the last position."""
    cols = [grid.layers.index(layer) for layer in band if layer in grid.layers]
    if -1 not in grid.positions or not cols:
        return np.full(len(grid.pair_ids), np.nan)
    patched = grid.patched[:, cols, grid.positions.index(-1)]
    with bootstrap.quiet():
        return np.nanmean(patched, axis=1) - grid.corrupted


def _control_curve(ctrl: PairGrid, w: np.ndarray, level: float) -> Curve | None:
    """Per-layer restoration toward the control's own source; None where it is undefined
    (no source prompt, or its source's metric equals the target's: a zero denominator)."""
    if -1 not in ctrl.positions or not np.isfinite(ctrl.gap).all():
        return None
    ci = bootstrap.cells(ctrl, w, level, keep_samples=False)
    j = ctrl.positions.index(-1)
    est = ci.estimate[:, j]
    if not np.isfinite(est).any():
        return None
    return est, ci.lo[:, j], ci.hi[:, j]


def _control(table: pa.Table, d: DirectionResult, name: str, opts: Options) -> ControlResult | None:
    cgrid = build(table, Key(d.direction, control=name))
    common = [p for p in d.check.used if cgrid is not None and p in cgrid.pair_ids]
    if cgrid is None or len(common) < 2:
        return None
    real, ctrl = d.grid.subset(common), cgrid.subset(common)
    w = _weights(len(common), opts)
    toward = None
    if np.isfinite(ctrl.gap).all():
        toward = intervals.ratio(band_change(ctrl, d.band), ctrl.gap, opts.level)
    real_change, change = band_change(real, d.band), band_change(ctrl, d.band)
    excess = intervals.abs_mean_difference(real_change, change, opts.level)
    return ControlResult(
        name,
        len(common),
        toward,
        intervals.mean(change, opts.level),
        intervals.mean(real_change, opts.level),
        intervals.ratio(real_change, real.gap, opts.level),
        excess,
        _control_curve(ctrl, w, opts.level),
    )


def add_controls(table: pa.Table, d: DirectionResult, opts: Options) -> None:
    names = {k.control for k in keys(table) if k.direction == d.direction and k.control}
    for name in sorted(names):
        c = _control(table, d, name, opts)
        if c is not None:
            d.controls[name] = c


def add_difference(out: Results, opts: Options) -> None:
    """Paired 2A - 2B band-mean difference over pairs used in both, and the instrument's limits
    (resolution, noise floor) in restoration units."""
    a, b = (out.directions.get(d) for d in DIRECTION_NAMES)
    if a is None or b is None or a.headline is None or b.headline is None:
        return
    common = [p for p in a.check.used if p in b.check.used]
    if len(common) < 2:
        return
    ga, gb = a.grid.subset(common), b.grid.subset(common)
    num_a, num_b = band_change(ga, a.band), band_change(gb, b.band)
    out.common_pairs = common
    out.difference = intervals.ratio_difference(num_a, ga.gap, num_b, gb.gap, opts.level)
    # TOST: the 1 - 2 alpha interval
    tost_level = 1 - 2 * (1 - opts.level)
    out.difference_tost = intervals.ratio_difference(num_a, ga.gap, num_b, gb.gap, tost_level)
    values = bootstrap.per_pair_band(ga, a.band) - bootstrap.per_pair_band(gb, b.band)
    out.per_pair_values = values
    out.per_pair_difference = intervals.mean(values, opts.level)
    gap = float(np.mean(np.abs(ga.gap)))
    out.margin = opts.equivalence_margin
    out.instrument = {"resolution": max(a.resolution, b.resolution) / gap}
    if out.noise.gap_floor is not None:  # an unmeasured floor is not a limit we know
        out.instrument["noise floor"] = out.noise.gap_floor / gap


def add_locus_shifts(out: Results, opts: Options) -> None:
    """2B - 2A band edges in the data and in every bootstrap resample of pairs (one draw over
    the pairs either direction uses, so a pair used in both is resampled in both)."""
    a, b = (out.directions.get(d) for d in DIRECTION_NAMES)
    if a is None or b is None or a.locus is None or b.locus is None:
        return
    ids = {p: i for i, p in enumerate(dict.fromkeys(a.check.used + b.check.used))}
    w = _weights(len(ids), opts)

    def edges(d: DirectionResult) -> np.ndarray:
        g = d.used
        cols = [ids[p] for p in g.pair_ids]
        return locus.band_edges(g.layers, *_last(g), w[:, cols], opts.level)

    out.locus_shifts = locus.EdgeShifts(edges(b) - edges(a), opts.level)


def premise(d: DirectionResult, opts: Options) -> Premise:
    """The premise of every patching verdict on this direction, over every pair (none
    excluded): the mean baseline gap lies on the hypothesised side with its interval excluding 0,
    and at most `opts.max_excluded_share` of the pairs are excluded."""
    n = len(d.grid.pair_ids)
    gap = intervals.mean(EXPECTED_SIGN[d.direction] * d.grid.gap, opts.level)
    share = len(d.check.excluded) / n if n else 1.0
    fails = []
    if not gap.lo > 0:
        fails.append(
            f"{d.short}'s baseline gap over all {n} pairs, signed so the hypothesis makes it "
            f"positive, is {gap.fmt()} logits ({opts.level:.0%} t interval): not above 0"
        )
    if share > opts.max_excluded_share:
        fails.append(
            f"{d.short} excludes {len(d.check.excluded)} of {n} pairs ({share:.0%}: "
            f"{d.check.count(WRONG_SIGN)} wrong sign, {d.check.count(INSIDE_FLOOR)} inside the "
            f"floor), above analysis.max_excluded_share {opts.max_excluded_share:.0%}"
        )
    return Premise(gap, share, fails)
