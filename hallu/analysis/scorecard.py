"""The disconfirmation scorecard: each of the seed's claims, a verdict, and the numbers behind it.

Verdicts: `supports` (the interval lies on the seed's side), `contradicts` (it lies on the other
side), `inconclusive` (it straddles the boundary), `not a finding (noise floor)` (the ratio's
denominator is inside the measured noise floor), `not run` (the run lacks the data; the entry
says what to run).
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

from hallu.analysis.bootstrap import Interval
from hallu.analysis.noise_flags import INSIDE
from hallu.analysis.run_stats import SHORT, RunStats

SUPPORTS, CONTRADICTS, INCONCLUSIVE = "supports", "contradicts", "inconclusive"
NOT_RUN, NOISE = "not run", "not a finding (noise floor)"

CRITERIA = (
    "Behavioural asymmetry against the neutral baseline",
    "2A - 2B interval excludes 0",
    "Controls restore less than the real patch",
    "Metric tracks generated behaviour",
    "Shared locus for 2A and 2B",
)


@dataclass(frozen=True)
class Entry:
    criterion: str
    question: str
    verdict: str
    numbers: str


def _side(iv: Interval, boundary: float) -> str:
    if iv.lo > boundary:
        return SUPPORTS
    if iv.hi < boundary:
        return CONTRADICTS
    return INCONCLUSIVE


def _noisy(stats: RunStats) -> list[str]:
    return [SHORT[d] for d, s in stats.directions.items() if s.gap_flag == INSIDE]


def build(
    stats: RunStats,
    asym: dict[str, Interval] | None,
    tracking: dict[str, Any] | None,
    has_behavior: bool,
    answers: str = "",
) -> list[Entry]:
    """The scorecard; `answers` names the behaviour answers used (e.g. 'greedy')."""
    used = f"; {answers} answers" if answers else ""
    out = []
    q = (
        "Does the user's certainty marker move answers toward declarative more than the "
        "uncertainty marker moves them toward tentative, measured from neutral answers? "
        "(E_c = certain - neutral, E_u = neutral - uncertain declarative rates; seed: E_c > E_u)"
    )
    if asym is None:
        why = (
            "no behaviour results in this run: run `python -m hallu.launch +sweep=behavior` "
            "(or +sweep=full)"
            if not has_behavior
            else "behaviour rows lack a certain, neutral and uncertain answer for 2+ pairs"
        )
        out.append(Entry(CRITERIA[0], q, NOT_RUN, why))
    else:
        d = asym["difference"]
        out.append(
            Entry(
                CRITERIA[0],
                q,
                _side(d, 0.0),
                f"E_c {asym['certain_effect'].fmt()}; E_u {asym['uncertain_effect'].fmt()}; "
                f"E_c - E_u {d.fmt()} (paired bootstrap over claims{used})",
            )
        )
    q = (
        "Is band-mean restoration of 2A (certain into uncertain) larger than that of 2B, with a "
        "95% interval that excludes 0? (seed: 1.000 vs 0.909)"
    )
    if stats.difference is None:
        out.append(Entry(CRITERIA[1], q, NOT_RUN, "needs both directions and the last position"))
    else:
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
        noisy = _noisy(stats)
        verdict = NOISE if noisy else _side(stats.difference, 0.0)
        if noisy:
            nums += f"; baseline gap of {', '.join(noisy)} inside the noise floor"
        out.append(Entry(CRITERIA[1], q, verdict, nums))
    q = (
        "Does the real patch restore more than every control (same-class source, unrelated "
        "source, norm-matched random vector) in the same band? (paired real - control > 0)"
    )
    diffs = [
        (d, c)
        for d, s in stats.directions.items()
        for c in s.controls.values()
        if c.real_minus_control is not None
    ]
    if not diffs:
        out.append(Entry(CRITERIA[2], q, NOT_RUN, "no control rows: run with +sweep=controls"))
    else:
        sides = [_side(c.real_minus_control, 0.0) for _, c in diffs]  # type: ignore[arg-type]
        verdict = (
            SUPPORTS
            if all(s == SUPPORTS for s in sides)
            else CONTRADICTS
            if CONTRADICTS in sides
            else INCONCLUSIVE
        )
        if _noisy(stats):
            verdict = NOISE
        nums = "; ".join(
            f"{SHORT[d]} {c.name}: control {c.headline.fmt() if c.headline else 'n/a'}, "
            f"real - control {c.real_minus_control.fmt()}"  # type: ignore[union-attr]
            for d, c in diffs
        )
        out.append(Entry(CRITERIA[2], q, verdict, nums))
    q = (
        "Does the unpatched metric at the last prompt position tell declarative from tentative "
        "generated answers? (AUROC > 0.5; 0.5 = no relation)"
    )
    if tracking is None:
        why = (
            "no behaviour results in this run: run `python -m hallu.launch +sweep=behavior`"
            if not has_behavior
            else "behaviour rows lack both declarative and tentative answers for patched pairs"
        )
        out.append(Entry(CRITERIA[3], q, NOT_RUN, why))
    else:
        a = tracking["auroc"]
        out.append(
            Entry(
                CRITERIA[3],
                q,
                _side(a, 0.5),
                f"AUROC {a.fmt()} over {tracking['n_responses']} answers of "
                f"{tracking['n_pairs']} pairs (bootstrap over pairs{used})",
            )
        )
    q = "Do 2A and 2B locate their effect in the same layer band? (seed: the same layers 20-39)"
    loci = {d: s.locus for d, s in stats.directions.items()}
    if len(loci) < 2 or any(v is None for v in loci.values()):
        out.append(Entry(CRITERIA[4], q, NOT_RUN, "needs both directions with a positive effect"))
    else:
        a, b = loci["restore_confidence"], loci["induce_tentativeness"]
        assert a is not None and b is not None
        overlap = max(0, min(a.last, b.last) - max(a.first, b.first) + 1)
        shorter = min(a.last - a.first, b.last - b.first) + 1
        verdict = (
            SUPPORTS if overlap >= shorter / 2 else CONTRADICTS if overlap == 0 else INCONCLUSIVE
        )
        out.append(
            Entry(
                CRITERIA[4],
                q,
                verdict,
                f"2A {a.describe()}; 2B {b.describe()}; overlap {overlap} of the shorter "
                f"band's {shorter} layers",
            )
        )
    return out
