"""The one results object: every number any output prints, for one run, and nothing rendered.

`hallu.analysis.pipeline.analyse` fills it from the stored rows, the behaviour rows and the noise
floor; the terminal, summary.md/summary.json, report.html/report.md, the multirun report and
scorecard.json only format it (docs/analysis.md explains each number). Per direction, for the main
metric's experiment rows (resid_pre, window 1, no head, no control):

- *pair check*: each pair's baseline gap (clean - corrupted) must point the way the direction
  assumes (2A: certain above uncertain, so gap > 0; 2B: gap < 0) and exceed its floor, the larger
  of the measured noise floor and two rounding steps at the logits' magnitude (a gap is a
  difference of two metrics, each known to one step). Pairs that fail are counted, named and
  excluded from every ratio, curve, locus and control below.
- *headline*: band-mean restoration at the last position as a ratio of means over the used pairs,
  with a pair bootstrap interval, beside the mean of per-pair ratios; `flags` says when the two
  disagree in sign or their intervals are disjoint. `all_pairs` is the same over every pair,
  descriptive only (what the exclusion changes).
- *locus*: the contiguous band of layers, around the normalised last-position profile's peak,
  where restoration's t interval lies above 0 (hallu/analysis/locus.py).
- *premise*: what every patching verdict presumes, over every pair (patching.premise).

Across directions, `difference` is the paired 2A - 2B band-mean difference over pairs used in
both, tested for equivalence (hallu/analysis/verdicts.py).
"""

from __future__ import annotations

from dataclasses import dataclass, field, replace
from typing import Any

import numpy as np

from hallu.analysis import bootstrap, locus
from hallu.analysis.behavior_rates import ConditionRate
from hallu.analysis.bootstrap import Interval
from hallu.analysis.directions import SHORT
from hallu.analysis.grid import PairGrid
from hallu.analysis.noise_flags import INSIDE, UNKNOWN

WRONG_SIGN, INSIDE_FLOOR = "wrong sign", "inside floor"


@dataclass(frozen=True)
class Options:
    """How the run is analysed; every output of one run uses one `Options`."""

    n_boot: int = 2000  # bootstrap resamples of pairs
    n_perm: int = 2000  # sign flips of the max-T permutation test (heatmap dots)
    alpha: float = 0.05  # family-wise error rate of the max-T test
    level: float = 0.95  # level of every bootstrap interval
    seed: int = 0
    band: list[int] | None = None  # headline layers; None: the upper half of the layers
    equivalence_margin: float = 0.05  # analysis.equivalence_margin, in restoration units
    min_pairs: int = 10  # analysis.min_pairs: fewer pairs (claims) used, no verdict
    max_excluded_share: float = 0.2  # analysis.max_excluded_share: the premise's limit
    locus_margin_layers: int = 2  # analysis.locus_margin_layers: an edge shift that counts

    def configured(self, analysis: dict[str, Any] | None) -> Options:
        """These options with the run's `analysis` config section (hallu/config.py) applied."""
        keys = ("equivalence_margin", "min_pairs", "max_excluded_share", "locus_margin_layers")
        return replace(self, **{k: v for k, v in (analysis or {}).items() if k in keys})


@dataclass(frozen=True)
class NoiseFloor:
    """The run's one noise floor: measured (noise_floor.json) or not; every output says which."""

    gap_floor: float | None  # None: not measured
    record: dict[str, Any] | None = None  # noise_floor.json as written by hallu/run/noise.py

    @property
    def measured(self) -> bool:
        return self.gap_floor is not None

    def describe(self) -> str:
        if self.gap_floor is None:
            return "noise floor not measured"
        return f"noise floor {self.gap_floor:.3g} logits (measured)"


@dataclass(frozen=True)
class PairCheck:
    used: list[str]
    excluded: dict[str, str]  # pair id -> WRONG_SIGN | INSIDE_FLOOR
    floor: float  # the largest per-pair gap floor applied
    noise_floor: float | None = None  # the measured part of it; None: not measured

    def count(self, reason: str) -> int:
        return sum(1 for r in self.excluded.values() if r == reason)

    def floor_text(self) -> str:
        """What the floor is made of, so it never reads as the (possibly unmeasured) noise floor."""
        if self.noise_floor is None:
            return f"two rounding steps {self.floor:.3g}; noise floor not measured"
        if self.floor > self.noise_floor:
            return f"two rounding steps {self.floor:.3g}, above the noise floor"
        return f"noise floor {self.floor:.3g}"

    def describe(self) -> str:
        return (
            f"{len(self.used)} pairs used, {self.count(WRONG_SIGN)} with a gap of the wrong sign "
            f"and {self.count(INSIDE_FLOOR)} inside the gap floor ({self.floor_text()}) excluded"
        )


Curve = tuple[np.ndarray, np.ndarray, np.ndarray]  # estimate, lo, hi per layer, last position


@dataclass(frozen=True)
class ControlResult:
    """One control in one direction, over the pairs the direction uses; t intervals.

    Raw band-mean changes patched - corrupted in logits: `real_change` (the real patch) and
    `change` (the control); `real_fraction` the real patch's as a fraction of its own source's
    gap (the headline's restoration) and `toward_own` the control's as a fraction of its own
    source's gap (None without a source prompt, NaN when its source's metric equals the
    target's). `excess`: |mean real change| - |mean control change| in logits: > 0 means the real
    patch moves the metric further than the control, in whichever direction the control moves
    it. `curve`: per-layer restoration toward its own source (None where that is undefined)."""

    name: str
    n_pairs: int
    toward_own: Interval | None
    change: Interval
    real_change: Interval
    real_fraction: Interval
    excess: Interval
    curve: Curve | None = None


@dataclass(frozen=True)
class Premise:
    """What every patching verdict on one direction presumes, checked over every pair:
    `gap` the mean baseline gap signed so the hypothesis makes it positive (t interval),
    `excluded_share` the share of pairs excluded; `fails` says which premise fails and with
    what numbers (empty: it holds)."""

    gap: Interval
    excluded_share: float
    fails: list[str] = field(default_factory=list)

    @property
    def holds(self) -> bool:
        return not self.fails


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
    cells: bootstrap.CellIntervals | None = None  # every cell, used pairs (curve, locus, compare)
    all_pairs: Interval | None = None  # ratio of means over every pair (descriptive)
    all_pairs_mor: Interval | None = None  # mean of per-pair ratios over every pair
    gap_all: Interval | None = None  # mean gap over every pair
    inside_noise: int = 0  # pairs whose |gap| is inside the measured noise floor
    gap_flag: str = UNKNOWN  # noise_flags.flag_gap of gap_all against the measured floor
    flags: list[str] = field(default_factory=list)
    controls: dict[str, ControlResult] = field(default_factory=dict)
    premise: Premise | None = None  # patching.premise; None until the pipeline checks it

    @property
    def short(self) -> str:
        return SHORT[self.direction]

    @property
    def used(self) -> PairGrid:
        """The grid of the pairs every ratio is over."""
        return self.grid.subset(self.check.used)

    @property
    def inside(self) -> bool:
        """The mean baseline gap is inside the measured noise floor: no ratio is a finding."""
        return self.gap_flag == INSIDE

    @property
    def curve(self) -> Curve | None:
        """Per-layer restoration at the last position, used pairs (the locus's curve)."""
        if self.cells is None or -1 not in self.grid.positions:
            return None
        j = self.grid.positions.index(-1)
        return self.cells.estimate[:, j], self.cells.lo[:, j], self.cells.hi[:, j]

    def baselines(self) -> dict[str, Any]:
        """Descriptive baselines over every pair (summary.json prints them)."""
        g = self.grid
        return {
            "n_pairs": len(g.pair_ids),
            "n_pairs_used": len(self.check.used),
            "n_cells": int(np.isfinite(g.patched).sum()),
            "clean_mean": float(g.clean.mean()),
            "corrupted_mean": float(g.corrupted.mean()),
            "gap_mean": float(g.gap.mean()),
            "gap_min_abs": float(np.abs(g.gap).min()),
            "pairs_with_zero_gap": int((g.gap == 0).sum()),
        }

    def headline_text(self) -> str:
        """The one line every output prints for this direction."""
        if self.headline is None:
            why = "last position not swept or no pair used"
            return f"{self.short} band-mean restoration n/a ({why}; {self.check.describe()})"
        return (
            f"{self.short} band-mean restoration {self.headline.fmt()} (ratio of means, layers "
            f"{self.band[0]}-{self.band[-1]} at the last position; {self.check.describe()})"
        )


@dataclass(frozen=True)
class Behaviour:
    """Experiment 1's numbers (hallu/analysis/behavior_check.py, behavior_rates.py)."""

    has_rows: bool
    has_labels: bool
    which: str = ""  # the answers used: 'sampled', 'greedy' or 'all'
    n_pairs: int = 0  # pairs with behaviour rows
    asymmetry: dict[str, Any] | None = None  # behavior_check.asymmetry
    tracking: dict[str, Any] | None = None  # behavior_check.metric_tracking
    rates: dict[str, ConditionRate] = field(default_factory=dict)  # per condition, per prompt
    rate_line: str = ""
    figure: dict[str, dict[str, list[float]]] = field(default_factory=dict)  # Figure 1's bars
    auroc: dict[str, Interval | None] = field(default_factory=dict)  # behavior_rates.tracking


@dataclass
class Results:
    options: Options
    n_layers: int
    noise: NoiseFloor
    directions: dict[str, DirectionResult]
    behaviour: Behaviour = field(default_factory=lambda: Behaviour(False, False))
    common_pairs: list[str] = field(default_factory=list)
    difference: Interval | None = None  # 2A - 2B band mean, paired t interval (intervals.py)
    difference_tost: Interval | None = None  # the same at level 1 - 2 alpha (for the TOST)
    margin: float | None = None  # analysis.equivalence_margin, restoration units
    # The instrument's limits in restoration units: one rounding step / mean |gap|, and the
    # measured noise floor / mean |gap| (absent when not measured).
    instrument: dict[str, float] = field(default_factory=dict)
    locus_shifts: locus.EdgeShifts | None = None  # 2B - 2A band edges, data and resamples
    per_pair_values: np.ndarray | None = None  # each common pair's own 2A - 2B band mean
    per_pair_difference: Interval | None = None  # mean of per_pair_values
    card: list[Any] = field(default_factory=list)  # the scorecard (hallu/analysis/scorecard.py)
    # What the rows patch when none is the main identity (a head-only sweep, say), in words.
    other_rows: list[str] = field(default_factory=list)

    @property
    def gap_floor(self) -> float | None:
        return self.noise.gap_floor
