"""The disconfirmation scorecard: each of the source study's claims, a verdict, and the numbers
behind it, as `verdicts.Verdict`s (scorecard.json is `to_json(results.card)`).

Verdicts: `supports` (the interval lies on the study's side), `contradicts` (it lies on the other
side), `equivalent` (2A vs 2B only: within the margin), `inconclusive` (neither), `not run` (the
run lacks the data; the entry says what to run). The behaviour criteria are here; the patching
ones (2A vs 2B, locus, controls) are hallu/analysis/verdicts.py.
"""

from __future__ import annotations

from typing import TYPE_CHECKING

from hallu.analysis import verdicts
from hallu.analysis.bootstrap import Interval
from hallu.analysis.verdicts import CONTRADICTS, INCONCLUSIVE, NOT_RUN, SUPPORTS, Verdict

if TYPE_CHECKING:
    from hallu.analysis.results import Behaviour, Options, Results

NO_BEHAVIOR = "no behaviour results in this run: run `python -m hallu.launch +sweep=behavior`"
BEHAVIOUR_ASYMMETRY = "Behavioural asymmetry against the neutral baseline"
TRACKING = "Metric tracks generated behaviour"
# Every criterion, in the order every output lists them.
CRITERIA = (
    BEHAVIOUR_ASYMMETRY,
    TRACKING,
    verdicts.ASYMMETRY,
    verdicts.LOCUS,
    f"{verdicts.CONTROLS} (2A)",
    f"{verdicts.CONTROLS} (2B)",
)
QUESTIONS = {
    BEHAVIOUR_ASYMMETRY: "Does the user's certainty marker move answers toward declarative more "
    "than the uncertainty marker moves them toward tentative, measured from neutral answers? "
    "(E_c = certain - neutral, E_u = neutral - uncertain declarative rates; study: E_c > E_u)",
    TRACKING: "Does the unpatched metric at the last prompt position tell declarative from "
    "tentative generated answers of the same condition? (within-condition AUROC > 0.5; "
    "0.5 = no relation)",
}


def _side(iv: Interval, boundary: float) -> str:
    if iv.lo > boundary:
        return SUPPORTS
    if iv.hi < boundary:
        return CONTRADICTS
    return INCONCLUSIVE


def _used(b: Behaviour) -> str:
    return f"; {b.which} answers" if b.which else ""


def _few(n: int, opts: Options) -> list[str]:
    """The flag that makes a behaviour verdict inconclusive: too few claims."""
    if n >= opts.min_pairs:
        return []
    return [f"{n} claims, fewer than analysis.min_pairs {opts.min_pairs}"]


def behaviour_asymmetry(b: Behaviour, opts: Options) -> Verdict:
    if b.asymmetry is None:
        why = NO_BEHAVIOR + " (or +sweep=full)"
        if b.has_rows:
            why = "behaviour rows lack a certain, neutral and uncertain answer for 2+ pairs"
        return Verdict(BEHAVIOUR_ASYMMETRY, NOT_RUN, n_pairs_excluded=b.n_pairs, numbers=why)
    a = b.asymmetry
    d = a["difference"]
    few = _few(a["n_pairs"], opts)
    return Verdict(
        BEHAVIOUR_ASYMMETRY,
        INCONCLUSIVE if few else _side(d, 0.0),
        d.estimate,
        (d.lo, d.hi),
        a["n_pairs"],
        b.n_pairs - a["n_pairs"],
        few,
        numbers=f"E_c {a['certain_effect'].fmt()}; E_u {a['uncertain_effect'].fmt()}; "
        f"E_c - E_u {d.fmt()} (paired t interval over {a['n_pairs']} claims{_used(b)})",
        quantity="E_c - E_u, difference of declarative rates (95% t interval over claims)",
    )


def metric_tracking(b: Behaviour, opts: Options) -> Verdict:
    if b.tracking is None:
        why = NO_BEHAVIOR
        if b.has_rows:
            why = "behaviour rows lack both declarative and tentative answers with a metric"
        return Verdict(TRACKING, NOT_RUN, n_pairs_excluded=b.n_pairs, numbers=why)
    t = b.tracking
    a, pooled = t["auroc"], t["pooled"]
    few = _few(t["n_pairs"], opts)
    return Verdict(
        TRACKING,
        INCONCLUSIVE if few else _side(a, 0.5),
        a.estimate,
        (a.lo, a.hi),
        t["n_pairs"],
        b.n_pairs - t["n_pairs"],
        few,
        numbers=f"within-condition AUROC {a.fmt()} (decides); pooled AUROC {pooled.fmt()} (shown "
        f"only: a metric that encodes the condition alone scores high pooled); over "
        f"{t['n_responses']} answers of {t['n_pairs']} pairs (bootstrap over pairs{_used(b)})",
        quantity="AUROC of the unpatched metric, declarative vs tentative answers compared "
        "within each condition (stratified)",
    )


def build(res: Results) -> list[Verdict]:
    """Every criterion of the scorecard, in `CRITERIA` order."""
    b = res.behaviour
    return [
        behaviour_asymmetry(b, res.options),
        metric_tracking(b, res.options),
        *verdicts.patching(res),
    ]


def headline_lines(res: Results) -> list[str]:
    """The lines the terminal, summary.md and the report print, word for word: each direction's
    headline, then the 2A vs 2B verdict; a behaviour-only run's is its rate line."""
    if not res.directions:
        return [res.behaviour.rate_line] if res.behaviour.rate_line else []
    lines = [d.headline_text() for d in res.directions.values()]
    asym = [v for v in res.card if v.criterion == verdicts.ASYMMETRY]
    return lines + [f"{v.criterion}: {v.verdict}" for v in asym]
