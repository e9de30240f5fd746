"""The combined reading of a multirun over models: does the study replicate?

For each scorecard criterion: how many models support, contradict, are equivalent or
inconclusive (from each study's own scorecard, hallu/analysis/scorecard.py), and a random-effects
summary (hallu/analysis/pooling.py) where the criterion's quantity means the same thing for every
model, or why it is not pooled. Also which models' patching premise fails, in which direction
(the "premise fails" flags of their scorecards), and whether the weights were random (a
rehearsal: the numbers test the pipeline, not a model). hallu/report/multirun.py puts these
tables after its side-by-side ones.
"""

from __future__ import annotations

from typing import Any

from hallu.analysis import verdicts
from hallu.analysis.directions import SHORT
from hallu.analysis.pooling import random_effects, se_from_interval
from hallu.analysis.scorecard import BEHAVIOUR_ASYMMETRY, CRITERIA, TRACKING

READINGS = (verdicts.SUPPORTS, verdicts.CONTRADICTS, verdicts.EQUIVALENT, verdicts.INCONCLUSIVE,
            verdicts.NOT_RUN)  # fmt: skip
# The criteria that rest on the patching premise (2A vs 2B, locus, controls per direction).
PATCHING = (verdicts.ASYMMETRY, verdicts.LOCUS, verdicts.CONTROLS)


def _coverage(criterion: str, level: float) -> float | None:
    """The coverage of the criterion's interval if its quantity can be pooled across models."""
    if criterion in (BEHAVIOUR_ASYMMETRY, TRACKING):
        return level
    if criterion == verdicts.ASYMMETRY:
        return 1 - 2 * (1 - level)  # the TOST's interval
    return None


WHY = {
    BEHAVIOUR_ASYMMETRY: "pooled: a difference of declarative rates, the same scale for every "
    "model",
    TRACKING: "pooled: an AUROC, the same scale for every model",
    verdicts.ASYMMETRY: "pooled: restoration is a fraction of each model's own clean - corrupted "
    "gap, so 2A - 2B is unitless",
    verdicts.LOCUS: "not pooled: a shift in layers, and the models differ in depth (the figure "
    "lines them up by relative depth instead)",
    verdicts.CONTROLS: "not pooled: a change in logits, whose scale differs between models and "
    "tokenizers",
}


def _why(criterion: str) -> str:
    return next((t for name, t in WHY.items() if criterion.startswith(name)), "not pooled")


def _entry(card: list[Any] | None, criterion: str) -> Any:
    return next((e for e in card or [] if e.criterion == criterion), None)


def combined(studies: list[Any], level: float) -> tuple[list[str], list[list[str]]]:
    """(header, rows): per criterion, the count of each reading and the pooled estimate."""
    head = ["criterion", *READINGS, "other", "random-effects summary", "why (not) pooled"]
    rows = []
    for criterion in CRITERIA:
        entries = [_entry(s.card, criterion) for s in studies if s.card is not None]
        counts = [sum(1 for e in entries if e and e.verdict == r) for r in READINGS]
        counts[-1] += sum(1 for e in entries if e is None)
        other = sorted({e.verdict for e in entries if e and e.verdict not in READINGS})
        summary, why = "n/a", _why(criterion)
        cov = _coverage(criterion, level)
        usable = [e for e in entries if e and e.estimate is not None and e.interval is not None]
        usable = [e for e in usable if e.interval[1] > e.interval[0]]
        if cov is not None and usable:
            ses = [se_from_interval(*e.interval, cov) for e in usable]
            summary = random_effects([e.estimate for e in usable], ses, level).fmt()
        elif cov is not None:
            why += "; no model has an interval of positive width to weigh it by"
        rows.append([criterion, *map(str, counts), ", ".join(other) or "-", summary, why])
    return head, rows


def premise_failures(card: list[Any] | None) -> dict[str, list[str]] | None:
    """Per direction (2A, 2B), why its premise fails, from the "premise fails: ..." flags of a
    scorecard's patching entries (hallu/analysis/verdicts.py `gates`; each reason starts with
    the direction's short name); {} when it holds, None when no patching criterion ran (no
    premise was checked)."""
    patching = [e for e in card or [] if e.criterion.startswith(PATCHING)]
    if not any(e.verdict != verdicts.NOT_RUN for e in patching):
        return None
    out: dict[str, list[str]] = {}
    for e in patching:
        for flag in e.flags:
            if flag.startswith(f"{verdicts.PREMISE_FAILS}: "):
                why = flag.removeprefix(f"{verdicts.PREMISE_FAILS}: ")
                short = next((d for d in SHORT.values() if why.startswith(d)), "?")
                if why not in out.setdefault(short, []):
                    out[short].append(why)
    return out


def premise(studies: list[Any]) -> str:
    """Which models' patching premise fails, and in which direction (from each scorecard)."""
    checked = [(name, f) for name, s in studies if (f := premise_failures(s.card)) is not None]
    if not checked:
        return "Premise check: no study ran a patching criterion, so none was checked."
    failed = [(n, f) for n, f in checked if f]
    if not failed:
        return f"Premise check: holds for all {len(checked)} models whose patching ran."
    which = "; ".join(f"{n} ({', '.join(sorted(f))})" for n, f in failed)
    return (
        f"Premise check fails for {len(failed)} of {len(checked)} models: {which}; their "
        "patching verdicts on that direction are inconclusive and do not test the study's claim "
        "(each scorecard's 'premise fails' flags say why)."
    )


def rehearsal_text(studies: list[Any]) -> str:
    """A warning naming the studies run on random weights (model.weights=random), or ''."""
    random = [name for name, s in studies if s.weights == "random"]
    if not random:
        return ""
    which = f"all {len(random)} studies" if len(random) == len(studies) else ", ".join(random)
    return (
        f"REHEARSAL: random weights ({which}): the architectures and chat templates "
        "are the real models', the weights are not, so these numbers test the pipeline and "
        "say nothing about the models."
    )
