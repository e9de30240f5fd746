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


ASYMMETRY = Criterion(
    "Behavioural asymmetry against the neutral baseline",
    "Does the user's certainty marker move answers toward declarative more than the "
    "uncertainty marker moves them toward tentative, measured from neutral answers? "
    "(E_c = certain - neutral, E_u = neutral - uncertain declarative rates; study: E_c > E_u)",
    _asymmetry,
)
TRACKING = Criterion(
    "Metric tracks generated behaviour",
    "Does the unpatched metric at the last prompt position tell declarative from tentative "
    "generated answers? (AUROC > 0.5; 0.5 = no relation)",
    _tracking,
)
# The patching criteria (2A vs 2B, locus, controls) are hallu/analysis/verdicts.py.
CRITERIA = (ASYMMETRY, TRACKING)


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
