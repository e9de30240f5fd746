"""Verdicts on the seed's patching claims, from `pipeline.analyse`: each can fail for the right
reason, and each has a test that makes every outcome happen (tests/test_verdicts.py). Every
interval is a t interval over pairs (hallu/analysis/intervals.py; coverage in docs/analysis.md).

Before any rule, three gates, each making the verdict `inconclusive` with a flag that says why:
the *premise* (patching.premise: over every pair, the direction's baseline gap lies on the
hypothesised side and at most analysis.max_excluded_share of pairs are excluded: "premise
fails"), fewer than analysis.min_pairs pairs used, and (2A vs 2B) an instrument coarser than the
margin.

- 2A vs 2B: two one-sided tests (TOST) on the paired band-mean difference against the margin m =
  analysis.equivalence_margin (restoration units). With the (1 - 2 alpha) interval [lo, hi] of
  2A - 2B: `supports` if lo > m, `contradicts` if hi < -m, `equivalent` if -m < lo and hi < m,
  else `inconclusive`. Resolution and noise floor never widen m: when either (/ mean |gap|)
  exceeds m the verdict is `inconclusive`, "below the instrument's resolution".
- Shared locus: each direction's band (hallu/analysis/locus.py), recomputed in every bootstrap
  resample of pairs; an equivalence test on 2B - 2A of each edge (first and last layer) against
  m = analysis.locus_margin_layers (a shift of m layers counts as different): `supports` if both
  edges' intervals lie inside +-m, `contradicts` if one lies entirely outside, else
  `inconclusive`; also `inconclusive` if a direction has no band or only one position was swept.
- Controls, per direction (2A and 2B never merged): |mean real change| - |mean control change|
  in logits, paired over pairs. `supports` if for every control its interval lies above the
  pairs' gap floor, `contradicts` if for any control it lies below 0 (the control moves the
  metric further than the real patch, in either direction), else `inconclusive`.
"""

from __future__ import annotations

import math
from dataclasses import asdict, dataclass, field
from typing import Any

from hallu.analysis.bootstrap import Interval
from hallu.analysis.directions import DIRECTION_NAMES, SHORT
from hallu.analysis.locus import EdgeShifts
from hallu.analysis.results import ControlResult, Results

SUPPORTS, CONTRADICTS, EQUIVALENT = "supports", "contradicts", "equivalent"
INCONCLUSIVE, NOT_RUN = "inconclusive", "not run"
ASYMMETRY = "2A restores more than 2B"
LOCUS = "Shared locus for 2A and 2B"
CONTROLS = "Controls move the metric less than the real patch"


@dataclass(frozen=True)
class Verdict:
    """One scorecard entry; every number the prose `numbers` cites for the verdict is also in a
    field (`quantity` says what `estimate` and `interval` measure)."""

    criterion: str
    verdict: str
    estimate: float | None = None
    interval: tuple[float, float] | None = None
    n_pairs_used: int = 0
    n_pairs_excluded: int = 0
    flags: list[str] = field(default_factory=list)
    numbers: str = ""  # the human-readable line the report prints
    quantity: str = ""  # what estimate and interval are, with their unit
    cannot_tell: str = ""  # what this verdict cannot tell, and what would

    def to_json(self) -> dict[str, Any]:
        d = asdict(self)
        d["interval"] = list(self.interval) if self.interval is not None else None
        return d


def _excluded(res: Results) -> int:
    return len({p for d in res.directions.values() for p in d.check.excluded})


PREMISE_FAILS = "premise fails"
RESOLUTION = "below the instrument's resolution"
CANNOT_TELL_ASYMMETRY = (
    "A larger restoration ratio does not mean a weaker pathway: restoration is an interaction "
    "between the routes a patch splits (on model=planted with the uncertain pathway six times "
    "stronger, gains 1/6, 2A still restores more than 2B). What would: each pathway's own "
    "effect, the head and path patching of +sweep=mechanism."
)


def _not_run_why(res: Results, why: str) -> str:
    """Why a patching criterion was not run, naming what the rows patch when it is not the main
    identity (resid_pre, window 1, no head, main metric)."""
    if not res.other_rows:
        return why
    return (
        f"{why}; this run's rows patch only {', '.join(res.other_rows)}: the patching criteria "
        "read resid_pre rows (window 1, no head) of the main metric; see the maps and strongest "
        "cells"
    )


def gates(res: Results, directions: list[str], n_used: int) -> list[str]:
    """The flags that make a patching verdict inconclusive whatever its interval: the premise of
    each direction named, and fewer than analysis.min_pairs pairs used."""
    out = []
    for name in directions:
        p = res.directions[name].premise
        if p is not None and not p.holds:
            out += [f"{PREMISE_FAILS}: {why}" for why in p.fails]
    if n_used < res.options.min_pairs:
        out.append(
            f"{n_used} pairs used, fewer than analysis.min_pairs {res.options.min_pairs}: "
            "too few pairs for a verdict"
        )
    return out


def tost(lo: float, hi: float, margin: float) -> str:
    """The verdict of a (1 - 2 alpha) interval [lo, hi] of 2A - 2B against margin m."""
    if lo > margin:
        return SUPPORTS
    if hi < -margin:
        return CONTRADICTS
    if -margin < lo and hi < margin:
        return EQUIVALENT
    return INCONCLUSIVE


def asymmetry(res: Results) -> Verdict:
    flags = [f"{d.short}: {f}" for d in res.directions.values() for f in d.flags]
    if res.difference is None or res.difference_tost is None or res.margin is None:
        why = "needs both directions, the last position and 2+ pairs used in both"
        verdict, why = NOT_RUN, _not_run_why(res, why)
        if len(res.directions) == 2 and _excluded(res):  # the data exist; no pair can carry
            verdict = INCONCLUSIVE
            flags = gates(res, list(res.directions), 0) + flags
            why = "fewer than 2 pairs clear the gap checks: " + "; ".join(
                d.headline_text() for d in res.directions.values()
            )
        return Verdict(
            ASYMMETRY, verdict, n_pairs_excluded=_excluded(res), flags=flags, numbers=why
        )
    t, m = res.difference_tost, res.margin
    blocked = gates(res, list(DIRECTION_NAMES), len(res.common_pairs))
    coarse = {k: v for k, v in res.instrument.items() if v > m}
    if coarse:
        blocked.append(
            f"{RESOLUTION}: "
            + ", ".join(f"{k} {v:.3g}" for k, v in coarse.items())
            + f" (restoration units) exceeds the margin {m:.3g}"
        )
    verdict = INCONCLUSIVE if blocked else tost(t.lo, t.hi, m)
    limits_ = ", ".join(f"{k} {v:.3g}" for k, v in res.instrument.items())
    if not res.noise.measured:
        limits_ += "; noise floor not measured"
    heads = "; ".join(d.headline_text() for d in res.directions.values())
    tost_level = 1 - 2 * (1 - res.options.level)
    numbers = (
        f"{heads}; 2A - 2B {res.difference.fmt()} ({res.options.level:.0%}), "
        f"[{t.lo:.3f}, {t.hi:.3f}] ({tost_level:.0%}, for the TOST) over "
        f"{len(res.common_pairs)} pairs; margin {m:.3g} (analysis.equivalence_margin); "
        f"instrument: {limits_}"
    )
    return Verdict(
        ASYMMETRY,
        verdict,
        res.difference.estimate,
        (t.lo, t.hi),
        len(res.common_pairs),
        _excluded(res),
        blocked + flags,
        numbers,
        f"2A - 2B band-mean restoration (fraction of the gap); paired t interval at "
        f"{tost_level:.0%} for the TOST",
        CANNOT_TELL_ASYMMETRY,
    )


def locus_shared(res: Results) -> Verdict:
    ds = [res.directions.get(d) for d in DIRECTION_NAMES]
    used = min((len(d.check.used) for d in res.directions.values()), default=0)
    if any(d is None or d.curve is None for d in ds):
        why = _not_run_why(res, "needs both directions with the last position swept")
        return Verdict(
            LOCUS, NOT_RUN, n_pairs_used=used, n_pairs_excluded=_excluded(res), numbers=why
        )
    a, b = (d.locus for d in ds)  # type: ignore[union-attr]
    m = res.options.locus_margin_layers
    flags = gates(res, list(DIRECTION_NAMES), used)
    flags += [
        f"{d.short}: no layer's restoration interval lies above 0"
        for d in ds
        if d is not None and d.locus is None
    ]
    if any(len(d.grid.positions) == 1 for d in res.directions.values()):
        # the source study's 40 layers x 1 position: where the effect enters is unseen
        flags.append("one position swept: a shared band there cannot say where the effect is")
    if a is None or b is None:
        return Verdict(LOCUS, INCONCLUSIVE, None, None, used, _excluded(res), flags, "no band")
    sh = res.locus_shifts
    assert sh is not None  # patching.add_locus_shifts ran: both directions have a band
    verdict = INCONCLUSIVE if flags else locus_test(sh, m)
    first, last = sh.intervals()
    missing = (
        f"; {sh.n_missing} of {len(sh.samples) - 1} resamples lack a band in a direction, "
        "counted against either verdict"
        if sh.n_missing
        else ""
    )
    return Verdict(
        LOCUS,
        verdict,
        first.estimate,
        (first.lo, first.hi),
        used,
        _excluded(res),
        flags,
        f"2A {a.describe()}; 2B {b.describe()}; 2B - 2A: first layer {first.fmt(1)}, last "
        f"layer {last.fmt(1)} ({sh.level:.0%} bootstrap over pairs{missing}); shared if both "
        f"intervals lie strictly inside +-{m} layers (analysis.locus_margin_layers={m})",
        "2B's band first layer - 2A's (layers), with its bootstrap interval over pairs; the last "
        "layer's shift is in `numbers`",
    )


def locus_test(sh: EdgeShifts, margin: int) -> str:
    """The equivalence test on the band edges: `supports` if both shifts' intervals lie inside
    +-margin (a shift of `margin` layers counts as different), `contradicts` if one lies
    entirely outside, else `inconclusive`. A resample with no band counts against each: as a
    shift of `margin` for `supports`, of 0 for `contradicts`."""
    if all(-margin < iv.lo and iv.hi < margin for iv in sh.intervals(missing=margin)):
        return SUPPORTS
    if any(iv.lo >= margin or iv.hi <= -margin for iv in sh.intervals(missing=0.0)):
        return CONTRADICTS
    return INCONCLUSIVE


def limits(cfg: dict[str, Any], res: Results | None) -> list[str]:
    """The choices in this run that limit what it can conclude (the seed's, among others)."""
    out = []
    sweep, prompts = cfg.get("sweep", {}), cfg.get("prompts", {})
    if sweep.get("positions") in ("last:1", [-1]):
        out.append(
            "single position: only the last token was patched, so the locus and any "
            "effect carried at the marker are invisible"
        )
    if prompts.get("chat_template") is False:
        out.append(
            "raw text: no chat template, so the model continues the user's sentence "
            "instead of answering it"
        )
    if cfg.get("metric", {}).get("dtype") == "bfloat16" or cfg.get("model", {}).get("dtype") in (
        "bfloat16",
        "float16",
    ):
        out.append("low precision: a 16-bit logit near 10 is known only to 0.0625 (bf16)")
    if res is not None and res.margin is not None:
        step = res.instrument.get("resolution", 0.0)
        if step > res.margin:
            out.append(
                f"an instrument coarser than the margin: one rounding step is {step:.3f} in "
                f"restoration units, above analysis.equivalence_margin {res.margin:.3g}, so 2A "
                "vs 2B can be neither equivalent nor different"
            )
    return out


def control_side(excess: Interval, floor: float) -> str:
    """One control's side: the real patch moves the metric further by more than the gap floor,
    the control moves it further (either direction), or neither."""
    if excess.lo > floor:
        return SUPPORTS
    if excess.hi < 0:
        return CONTRADICTS
    return INCONCLUSIVE


def fraction_text(iv: Interval | None) -> str:
    if iv is None:
        return "n/a (no source prompt)"
    if not math.isfinite(iv.estimate):
        return "n/a (its source's metric equals the target's)"
    return iv.fmt()


def control_line(c: ControlResult, side: str) -> str:
    """One control as the table, its caption and the scorecard all state it."""
    return (
        f"{c.name}: |real| vs |control| {abs(c.real_change.estimate):.3f} vs "
        f"{abs(c.change.estimate):.3f} logits (changes: real {c.real_change.fmt()}, control "
        f"{c.change.fmt()}); as a fraction of its own source's gap: real "
        f"{fraction_text(c.real_fraction)}, control {fraction_text(c.toward_own)}; "
        f"|real| - |control| {c.excess.fmt()} logits ({side})"
    )


def controls(res: Results, direction: str) -> Verdict:
    """The controls criterion for one direction (module docstring)."""
    name = f"{CONTROLS} ({SHORT[direction]})"
    d = res.directions.get(direction)
    if d is not None and not d.controls and len(d.check.used) < 2 and d.check.excluded:
        why = f"fewer than 2 pairs clear the gap checks ({d.check.describe()})"
        flags = gates(res, [direction], len(d.check.used))
        return Verdict(
            name, INCONCLUSIVE, n_pairs_excluded=len(d.check.excluded), flags=flags, numbers=why
        )
    if d is None or not d.controls:
        why = _not_run_why(res, "no control rows: run with +sweep=controls")
        return Verdict(name, NOT_RUN, numbers=why)
    floor = d.check.floor
    sides = {c.name: control_side(c.excess, floor) for c in d.controls.values()}
    n_used = min(c.n_pairs for c in d.controls.values())
    blocked = gates(res, [direction], n_used)
    verdict = (
        INCONCLUSIVE
        if blocked
        else SUPPORTS
        if all(v == SUPPORTS for v in sides.values())
        else CONTRADICTS
        if CONTRADICTS in sides.values()
        else INCONCLUSIVE
    )
    numbers = "; ".join(control_line(c, sides[c.name]) for c in d.controls.values())
    worst = min(d.controls.values(), key=lambda c: c.excess.lo)
    return Verdict(
        name,
        verdict,
        worst.excess.estimate,
        (worst.excess.lo, worst.excess.hi),
        n_used,
        len(d.check.excluded),
        blocked + [f"gap floor: {d.check.floor_text()} (logits)"] + list(d.flags),
        numbers,
        f"|real| - |control| band-mean change (logits, t interval) of the control with the "
        f"lowest interval, {worst.name}",
    )


def patching(res: Results) -> list[Verdict]:
    """The patching criteria, in the order every output lists them."""
    return [asymmetry(res), locus_shared(res), *(controls(res, d) for d in DIRECTION_NAMES)]


def scorecard_json(entries: list[Verdict]) -> str:
    """scorecard.json: a list of {criterion, verdict, estimate, interval, n_pairs_used,
    n_pairs_excluded, flags, numbers, quantity}; NaN written as null. Every criterion that ran
    has its estimate, interval and pair counts in these fields, not only in `numbers`."""
    import json
    import math

    def clean(v: object) -> object:
        if isinstance(v, float) and not math.isfinite(v):
            return None
        if isinstance(v, list):
            return [clean(x) for x in v]
        if isinstance(v, dict):
            return {k: clean(x) for k, x in v.items()}
        return v

    return json.dumps([clean(e.to_json()) for e in entries], indent=2) + "\n"
