"""The one result pipeline: every per-direction number any output prints, from stored rows.

The terminal, summary.md, report.html/report.md and scorecard.json all print what `compute`
returns (docs/analysis.md explains each number). Per direction, for the main metric's experiment
rows (resid_pre, window 1, no head, no control):

- *pair check*: each pair's baseline gap (clean - corrupted) must point the way the direction
  assumes (2A: certain above uncertain, so gap > 0; 2B: gap < 0) and exceed its floor, the larger
  of the measured noise floor (`gap_floor`) and two rounding steps at the logits' magnitude (a
  gap is a difference of two metrics, each known to one step). Pairs that fail are counted,
  named and excluded from every ratio.
- *headline*: band-mean restoration at the last position as a ratio of means over the used pairs,
  with a pair bootstrap interval (the estimator, and why, in docs/analysis.md), beside the mean
  of per-pair ratios; `flags` says when the two disagree in sign or their intervals are disjoint.
- *locus*: the shortest band of layers holding 80% of the last-position effect, with bootstrap
  intervals on its first and last layer (hallu/analysis/locus.py).

Across directions, `difference` is the paired 2A - 2B band-mean difference over pairs used in
both, tested for equivalence (hallu/analysis/verdicts.py).
"""

from __future__ import annotations

from dataclasses import dataclass, field

import numpy as np
import pyarrow as pa

from hallu.analysis import bootstrap, locus
from hallu.analysis.bootstrap import Interval
from hallu.analysis.grid import Key, PairGrid, build, keys

DIRECTIONS = ("restore_confidence", "induce_tentativeness")
SHORT = {"restore_confidence": "2A", "induce_tentativeness": "2B"}
# The sign clean - corrupted has when the certain prompt's metric is above the uncertain one's.
EXPECTED_SIGN = {"restore_confidence": 1.0, "induce_tentativeness": -1.0}
WRONG_SIGN, INSIDE_FLOOR = "wrong sign", "inside floor"


@dataclass(frozen=True)
class Options:
    n_boot: int = 2000
    level: float = 0.95
    seed: int = 0
    band: list[int] | None = None  # None: the upper half of the layers
    locus_share: float = 0.8
    equivalence_margin: float = 0.05  # analysis.equivalence_margin, in restoration units


@dataclass(frozen=True)
class PairCheck:
    used: list[str]
    excluded: dict[str, str]  # pair id -> WRONG_SIGN | INSIDE_FLOOR
    floor: float  # the largest per-pair gap floor applied

    def count(self, reason: str) -> int:
        return sum(1 for r in self.excluded.values() if r == reason)

    def describe(self) -> str:
        return (
            f"{len(self.used)} pairs used, {self.count(WRONG_SIGN)} with a gap of the wrong sign "
            f"and {self.count(INSIDE_FLOOR)} inside the floor ({self.floor:.3g}) excluded"
        )


@dataclass(frozen=True)
class ControlResult:
    """One control in one direction, over the pairs the direction uses.

    `toward_own`: band-mean restoration toward the control's own source metric (NaN for
    norm_matched); `change`: band-mean raw change patched - corrupted, in logits;
    `real_minus_control`: paired (real change - control change) x the direction's expected sign,
    in logits: > 0 means the real patch moves the metric further the hypothesised way."""

    name: str
    n_pairs: int
    toward_own: Interval | None
    change: Interval
    real_minus_control: Interval


@dataclass
class DirectionResult:
    direction: str
    grid: PairGrid  # every pair, before the check
    check: PairCheck
    band: list[int]
    gap: Interval | None  # mean clean - corrupted over the used pairs
    headline: Interval | None  # ratio of means, used pairs
    mean_of_ratios: Interval | None
    locus: locus.Locus | None
    resolution: float  # median rounding step at the logits' magnitude over the rows
    flags: list[str] = field(default_factory=list)
    controls: dict[str, ControlResult] = field(default_factory=dict)

    @property
    def short(self) -> str:
        return SHORT[self.direction]

    def headline_text(self) -> str:
        """The one line every output prints for this direction."""
        if self.headline is None:
            why = "last position not swept or no pair used"
            return f"{self.short} band-mean restoration n/a ({why}; {self.check.describe()})"
        return (
            f"{self.short} band-mean restoration {self.headline.fmt()} (ratio of means, layers "
            f"{self.band[0]}-{self.band[-1]} at the last position; {self.check.describe()})"
        )


@dataclass
class Results:
    options: Options
    n_layers: int
    gap_floor: float | None
    directions: dict[str, DirectionResult]
    common_pairs: list[str] = field(default_factory=list)
    difference: Interval | None = None  # 2A - 2B band mean, paired bootstrap, level
    difference_tost: Interval | None = None  # the same at level 1 - 2 alpha (for the TOST)
    margin: float | None = None  # equivalence margin, restoration units
    margin_parts: dict[str, float] = field(default_factory=dict)


def check_pairs(grid: PairGrid, direction: str, gap_floor: float | None) -> PairCheck:
    """Which pairs' baselines can carry a ratio (module docstring)."""
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
    return PairCheck(used, excluded, float(floors.max()) if len(floors) else 0.0)


def _band_intervals(
    grid: PairGrid, band: list[int], opts: Options
) -> tuple[Interval, Interval] | None:
    """(ratio of means, mean of ratios) of the band mean at the last position."""
    if -1 not in grid.positions or not grid.pair_ids:
        return None
    w = bootstrap.resample_weights(len(grid.pair_ids), opts.n_boot, opts.seed)
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


def _locus(grid: PairGrid, n_layers: int, opts: Options) -> locus.Locus | None:
    if -1 not in grid.positions or not grid.pair_ids:
        return None
    w = bootstrap.resample_weights(len(grid.pair_ids), opts.n_boot, opts.seed)
    ci = bootstrap.cells(grid, w, opts.level)
    j = grid.positions.index(-1)
    curve = np.concatenate([ci.estimate[None], ci.samples])[:, :, j]
    return locus.locate(grid.layers, curve, n_layers, opts.locus_share)


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
    steps = grid.resolution[grid.resolution > 0] if grid.resolution is not None else []
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
        _locus(used, n_layers, opts),
        float(np.median(steps)) if len(steps) else 0.0,
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


def _control(table: pa.Table, d: DirectionResult, name: str, opts: Options) -> ControlResult | None:
    cgrid = build(table, Key(d.direction, control=name))
    common = [p for p in d.check.used if cgrid is not None and p in cgrid.pair_ids]
    if len(common) < 2:
        return None
    real, ctrl = d.grid.subset(common), cgrid.subset(common)
    w = bootstrap.resample_weights(len(common), opts.n_boot, opts.seed)
    toward = None
    if np.isfinite(ctrl.gap).all():
        toward = bootstrap.summarize(bootstrap.band_samples(ctrl, d.band, w), opts.level)
    change = band_change(ctrl, d.band)
    diff = EXPECTED_SIGN[d.direction] * (band_change(real, d.band) - change)
    return ControlResult(
        name,
        len(common),
        toward,
        bootstrap.summarize(w @ change / len(common), opts.level),
        bootstrap.summarize(w @ diff / len(common), opts.level),
    )


def _controls(table: pa.Table, d: DirectionResult, opts: Options) -> None:
    names = {k.control for k in keys(table) if k.direction == d.direction and k.control}
    for name in sorted(names):
        c = _control(table, d, name, opts)
        if c is not None:
            d.controls[name] = c


def _difference(out: Results, opts: Options) -> None:
    """Paired 2A - 2B band-mean difference over pairs used in both, and its margin."""
    a, b = (out.directions.get(d) for d in DIRECTIONS)
    if a is None or b is None or a.headline is None or b.headline is None:
        return
    common = [p for p in a.check.used if p in b.check.used]
    if len(common) < 2:
        return
    ga, gb = a.grid.subset(common), b.grid.subset(common)
    w = bootstrap.resample_weights(len(common), opts.n_boot, opts.seed)
    diff = bootstrap.band_samples(ga, a.band, w) - bootstrap.band_samples(gb, b.band, w)
    out.common_pairs = common
    out.difference = bootstrap.summarize(diff, opts.level)
    out.difference_tost = bootstrap.summarize(diff, 1 - 2 * (1 - opts.level))  # TOST: 1 - 2 alpha
    gap = float(np.mean(np.abs(ga.gap)))
    out.margin_parts = {
        "analysis.equivalence_margin": opts.equivalence_margin,
        "resolution": max(a.resolution, b.resolution) / gap,
        "noise floor": (out.gap_floor or 0.0) / gap,
    }
    out.margin = max(out.margin_parts.values())


def compute(
    table: pa.Table, n_layers: int, gap_floor: float | None, opts: Options = Options()
) -> Results:
    """Every per-direction number, and the 2A - 2B difference with its equivalence margin."""
    per = {}
    for d in DIRECTIONS:
        r = direction_result(table, d, n_layers, gap_floor, opts)
        if r is not None:
            _controls(table, r, opts)
            per[d] = r
    out = Results(opts, n_layers, gap_floor, per)
    _difference(out, opts)
    return out


@dataclass(frozen=True)
class GroupSummary:
    """One identity's numbers (every metric, component, head, window and control separately)."""

    key: Key
    n_pairs: int
    band_mean: float | None  # ratio of means at the last position over the band, all pairs
    top_layer: int | None  # the cell with the largest |mean restoration| (ratio of means)
    top_position: int | None
    top_value: float | None

    def describe(self) -> str:
        k = self.key
        name = f"{SHORT.get(k.direction, k.direction)} {k.metric} {k.component}"
        name += f" head {k.head}" if k.head is not None else ""
        name += f" window {k.window}" if k.window != 1 else ""
        name += f" control {k.control}" if k.control else ""
        band = "n/a" if self.band_mean is None else f"{self.band_mean:.3f}"
        top = (
            "n/a"
            if self.top_value is None
            else f"{self.top_value:.3f} at layer {self.top_layer}, position {self.top_position}"
        )
        return f"{name}: band mean {band}; top cell {top} ({self.n_pairs} pairs)"


def _group(grid: PairGrid, band: list[int]) -> GroupSummary:
    w = np.ones((1, len(grid.pair_ids)))
    try:
        band_mean = float(bootstrap.band_samples(grid, band, w)[0])
    except ValueError:
        band_mean = None
    est = bootstrap.cells(grid, np.vstack([w, w]), 0.95).estimate
    top = None
    if np.isfinite(est).any():
        i, j = np.unravel_index(np.nanargmax(np.abs(est)), est.shape)
        top = (grid.layers[i], grid.positions[j], float(est[i, j]))
    return GroupSummary(
        grid.key, len(grid.pair_ids), band_mean, *(top if top else (None, None, None))
    )


def groups(table: pa.Table, n_layers: int, opts: Options = Options()) -> list[GroupSummary]:
    """Every identity in the rows, summarised on its own: no row of one reaches another."""
    band = opts.band or bootstrap.default_band(n_layers)
    out = []
    for key in keys(table):
        grid = build(table, key)
        if grid is not None:
            out.append(_group(grid, band))
    return out


def headline_lines(res: Results) -> list[str]:
    """The lines the terminal, summary.md and the report print, word for word."""
    return [d.headline_text() for d in res.directions.values()]
