"""The disconfirmation scorecard: each of the source study's claims, a verdict, and the numbers
behind it.

Verdicts: `supports` (the interval lies on the study's side), `contradicts` (it lies on the other
side), `inconclusive` (it straddles the boundary), `not a finding (noise floor)` (the ratio's
denominator is inside the measured noise floor), `not run` (the run lacks the data; the entry
says what to run).

Each criterion is a `Criterion`: a name, the question it asks, and a `decide` function from the
run's `Evidence` to (verdict, numbers). `build` asks every criterion in `CRITERIA` in turn.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass
from typing import Any

from hallu.analysis.bootstrap import Interval
from hallu.analysis.noise_flags import INSIDE
from hallu.analysis.run_stats import SHORT, RunStats

SUPPORTS, CONTRADICTS, INCONCLUSIVE = "supports", "contradicts", "inconclusive"
NOT_RUN, NOISE = "not run", "not a finding (noise floor)"

NO_BEHAVIOR = "no behaviour results in this run: run `python -m hallu.launch +sweep=behavior`"


@dataclass(frozen=True)
class Entry:
    criterion: str
    question: str
    verdict: str
    numbers: str


@dataclass(frozen=True)
class Evidence:
    """What the criteria decide from: the patching statistics and the behaviour numbers."""

    stats: RunStats
    asym: dict[str, Interval] | None  # behavior_check.asymmetry
    tracking: dict[str, Any] | None  # behavior_check.metric_tracking
    has_behavior: bool
    answers: str = ""  # which behaviour answers were used, e.g. 'sampled'

    @property
    def used(self) -> str:
        return f"; {self.answers} answers" if self.answers else ""

    @property
    def noisy(self) -> list[str]:
        """Directions whose baseline gap is inside the noise floor."""
        return [SHORT[d] for d, s in self.stats.directions.items() if s.gap_flag == INSIDE]


@dataclass(frozen=True)
class Criterion:
    name: str
    question: str
    decide: Callable[[Evidence], tuple[str, str]]  # -> (verdict, numbers)

    def entry(self, ev: Evidence) -> Entry:
        verdict, numbers = self.decide(ev)
        return Entry(self.name, self.question, verdict, numbers)


def _side(iv: Interval, boundary: float) -> str:
    if iv.lo > boundary:
        return SUPPORTS
    if iv.hi < boundary:
        return CONTRADICTS
    return INCONCLUSIVE


def _asymmetry(ev: Evidence) -> tuple[str, str]:
    if ev.asym is None:
        if not ev.has_behavior:
            return NOT_RUN, NO_BEHAVIOR + " (or +sweep=full)"
        return NOT_RUN, "behaviour rows lack a certain, neutral and uncertain answer for 2+ pairs"
    a = ev.asym
    d = a["difference"]
    return _side(d, 0.0), (
        f"E_c {a['certain_effect'].fmt()}; E_u {a['uncertain_effect'].fmt()}; "
        f"E_c - E_u {d.fmt()} (paired bootstrap over claims{ev.used})"
    )


def _difference(ev: Evidence) -> tuple[str, str]:
    stats = ev.stats
    if stats.difference is None:
        return NOT_RUN, "needs both directions and the last position"
    heads = "; ".join(
        f"{SHORT[d]} {s.headline.fmt()} (gap {s.gap.fmt()})"
        for d, s in stats.directions.items()
        if s.headline is not None
    )
    nums = (
        f"{heads}; 2A - 2B {stats.difference.fmt()} (paired bootstrap over "
        f"{len(stats.common_pairs)} pairs)"
    )
    if stats.per_pair_difference is not None:
        nums += f"; mean per-pair difference {stats.per_pair_difference.fmt()}"
    if ev.noisy:
        return NOISE, nums + f"; baseline gap of {', '.join(ev.noisy)} inside the noise floor"
    return _side(stats.difference, 0.0), nums


def _controls(ev: Evidence) -> tuple[str, str]:
    diffs = [
        (d, c, c.real_minus_control)
        for d, s in ev.stats.directions.items()
        for c in s.controls.values()
        if c.real_minus_control is not None
    ]
    if not diffs:
        return NOT_RUN, "no control rows: run with +sweep=controls"
    sides = [_side(iv, 0.0) for _, _, iv in diffs]
    if ev.noisy:
        verdict = NOISE
    elif all(s == SUPPORTS for s in sides):
        verdict = SUPPORTS
    else:
        verdict = CONTRADICTS if CONTRADICTS in sides else INCONCLUSIVE
    nums = "; ".join(
        f"{SHORT[d]} {c.name}: control {c.headline.fmt() if c.headline else 'n/a'}, "
        f"real - control {iv.fmt()}"
        for d, c, iv in diffs
    )
    return verdict, nums


def _tracking(ev: Evidence) -> tuple[str, str]:
    if ev.tracking is None:
        if not ev.has_behavior:
            return NOT_RUN, NO_BEHAVIOR
        return (
            NOT_RUN,
            "behaviour rows lack both declarative and tentative answers for patched pairs",
        )
    t = ev.tracking
    a = t["auroc"]
    return _side(a, 0.5), (
        f"AUROC {a.fmt()} over {t['n_responses']} answers of "
        f"{t['n_pairs']} pairs (bootstrap over pairs{ev.used})"
    )


def _locus(ev: Evidence) -> tuple[str, str]:
    loci = {d: s.locus for d, s in ev.stats.directions.items()}
    a, b = loci.get("restore_confidence"), loci.get("induce_tentativeness")
    if len(loci) < 2 or a is None or b is None:
        return NOT_RUN, "needs both directions with a positive effect"
    overlap = max(0, min(a.last, b.last) - max(a.first, b.first) + 1)
    shorter = min(a.last - a.first, b.last - b.first) + 1
    verdict = SUPPORTS if overlap >= shorter / 2 else CONTRADICTS if overlap == 0 else INCONCLUSIVE
    return verdict, (
        f"2A {a.describe()}; 2B {b.describe()}; overlap {overlap} of the shorter "
        f"band's {shorter} layers"
    )


ASYMMETRY = Criterion(
    "Behavioural asymmetry against the neutral baseline",
    "Does the user's certainty marker move answers toward declarative more than the "
    "uncertainty marker moves them toward tentative, measured from neutral answers? "
    "(E_c = certain - neutral, E_u = neutral - uncertain declarative rates; study: E_c > E_u)",
    _asymmetry,
)
DIFFERENCE = Criterion(
    "2A - 2B interval excludes 0",
    "Is band-mean restoration of 2A (certain into uncertain) larger than that of 2B, with a "
    "95% interval that excludes 0? (study: 1.000 vs 0.909)",
    _difference,
)
CONTROLS = Criterion(
    "Controls restore less than the real patch",
    "Does the real patch restore more than every control (same-class source, unrelated "
    "source, norm-matched random vector) in the same band? (paired real - control > 0)",
    _controls,
)
TRACKING = Criterion(
    "Metric tracks generated behaviour",
    "Does the unpatched metric at the last prompt position tell declarative from tentative "
    "generated answers? (AUROC > 0.5; 0.5 = no relation)",
    _tracking,
)
LOCUS = Criterion(
    "Shared locus for 2A and 2B",
    "Do 2A and 2B locate their effect in the same layer band? (study: the same layers 20-39)",
    _locus,
)
CRITERIA = (ASYMMETRY, DIFFERENCE, CONTROLS, TRACKING, LOCUS)


def build(
    stats: RunStats,
    asym: dict[str, Interval] | None,
    tracking: dict[str, Any] | None,
    has_behavior: bool,
    answers: str = "",
) -> list[Entry]:
    """The scorecard; `answers` names the behaviour answers used (e.g. 'greedy')."""
    ev = Evidence(stats, asym, tracking, has_behavior, answers)
    return [c.entry(ev) for c in CRITERIA]
