"""Verdicts on the seed's patching claims, from `pipeline.analyse`: each can fail for the right
reason, and each has a test that makes every outcome happen (tests/test_verdicts.py).

- 2A vs 2B: two one-sided tests (TOST) on the paired band-mean difference against a margin `m`,
  the largest of analysis.equivalence_margin, one rounding step at the logits' magnitude and the
  measured noise floor, each divided by the mean |gap| (restoration units). With the (1 - 2 alpha)
  bootstrap interval [lo, hi] of 2A - 2B: `supports` if lo > m (2A restores more than 2B by more
  than the margin), `contradicts` if hi < -m, `equivalent` if -m < lo and hi < m, else
  `inconclusive`. A difference smaller than one rounding step can never be `supports`.
- Controls, per direction (2A and 2B never merged): each control's paired (real - control) raw
  band change in logits, signed the way the direction should move the metric. `supports` if for
  every control its interval lies above the pairs' gap floor, `contradicts` if for any control it
  lies below 0 (the control moves the metric the hypothesised way at least as far), else
  `inconclusive`.
- Shared locus: `supports` if the bootstrap intervals of the first layers overlap and those of the
  last layers overlap, `contradicts` if either pair is disjoint, `inconclusive` if a direction
  found a band in under 95% of resamples or only one position was swept.
"""

from __future__ import annotations

import math
from dataclasses import asdict, dataclass, field
from typing import Any

import numpy as np

from hallu.analysis.bootstrap import Interval
from hallu.analysis.directions import DIRECTION_NAMES, SHORT
from hallu.analysis.results import Results

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

    def to_json(self) -> dict[str, Any]:
        d = asdict(self)
        d["interval"] = list(self.interval) if self.interval is not None else None
        return d


def _excluded(res: Results) -> int:
    return len({p for d in res.directions.values() for p in d.check.excluded})


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
        verdict, why = NOT_RUN, "needs both directions, the last position and 2+ pairs used in both"
        if len(res.directions) == 2 and _excluded(res):  # the data exist; no pair can carry
            verdict = INCONCLUSIVE
            why = "fewer than 2 pairs clear the gap checks: " + "; ".join(
                d.headline_text() for d in res.directions.values()
            )
        return Verdict(
            ASYMMETRY, verdict, n_pairs_excluded=_excluded(res), flags=flags, numbers=why
        )
    t, m = res.difference_tost, res.margin
    verdict = tost(t.lo, t.hi, m)
    parts = ", ".join(f"{k} {v:.3g}" for k, v in res.margin_parts.items())
    if not res.noise.measured:
        parts += "; noise floor not measured"
    heads = "; ".join(d.headline_text() for d in res.directions.values())
    numbers = (
        f"{heads}; 2A - 2B {res.difference.fmt()} ({res.options.level:.0%}), "
        f"[{t.lo:.3f}, {t.hi:.3f}] ({1 - 2 * (1 - res.options.level):.0%}, for the TOST) over "
        f"{len(res.common_pairs)} pairs; margin {m:.3g} (largest of {parts})"
    )
    if abs(res.difference.estimate) < res.margin_parts.get("resolution", 0.0):
        flags.append("the difference is smaller than one rounding step at the logits' magnitude")
    return Verdict(
        ASYMMETRY,
        verdict,
        res.difference.estimate,
        (t.lo, t.hi),
        len(res.common_pairs),
        _excluded(res),
        flags,
        numbers,
        f"2A - 2B band-mean restoration (fraction of the gap); interval at "
        f"{1 - 2 * (1 - res.options.level):.0%} for the TOST",
    )


def _overlap(a: tuple[float, float], b: tuple[float, float]) -> bool:
    return a[0] <= b[1] and b[0] <= a[1]


def locus_shared(res: Results) -> Verdict:
    loci = {d: res.directions[d].locus if d in res.directions else None for d in DIRECTION_NAMES}
    a, b = loci["restore_confidence"], loci["induce_tentativeness"]
    used = min((len(d.check.used) for d in res.directions.values()), default=0)
    if a is None or b is None:
        why = "needs both directions with a positive effect at the last position"
        return Verdict(
            LOCUS, NOT_RUN, n_pairs_used=used, n_pairs_excluded=_excluded(res), numbers=why
        )
    single = any(len(d.grid.positions) == 1 for d in res.directions.values())
    if not (_overlap(a.first_ci, b.first_ci) and _overlap(a.last_ci, b.last_ci)):
        verdict = CONTRADICTS
    elif min(a.found_in, b.found_in) < 0.95 or single:
        verdict = INCONCLUSIVE
    else:
        verdict = SUPPORTS
    flags = [
        f"{n}: a band in only {loc.found_in:.0%} of resamples"
        for n, loc in (("2A", a), ("2B", b))
        if loc.found_in < 0.95
    ]
    if single:  # the source study's 40 layers x 1 position: where the effect enters is unseen
        flags.append("one position swept: a shared band there cannot say where the effect is")
    lo, hi = _first_shift(a.first_samples, b.first_samples, res.options.level)
    return Verdict(
        LOCUS,
        verdict,
        float(b.first - a.first),
        (lo, hi),
        used,
        _excluded(res),
        flags,
        f"2A {a.describe()}; 2B {b.describe()}; 2B's first layer - 2A's {b.first - a.first} "
        f"[{lo:.0f}, {hi:.0f}]",
        f"2B's locus first layer - 2A's (layers); {res.options.level:.0%} percentile interval "
        "over the bootstrap resamples where both directions found a band",
    )


def _first_shift(a: np.ndarray, b: np.ndarray, level: float) -> tuple[float, float]:
    """Percentile interval of 2B's first layer - 2A's over the resamples where both directions
    found a band (one seed: with as many pairs used in both, resample k draws the same pairs)."""
    n = min(len(a), len(b))
    d = (b[:n] - a[:n])[np.isfinite(b[:n] - a[:n])]
    if not len(d):
        return math.nan, math.nan
    q = 100 * (1 - level) / 2
    return float(np.percentile(d, q)), float(np.percentile(d, 100 - q))


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
    if res is not None and res.difference is not None:
        step = res.margin_parts.get("resolution", 0.0)
        if abs(res.difference.estimate) < step:
            out.append(
                f"a difference below the resolution: 2A - 2B = {res.difference.estimate:.3f} is "
                f"smaller than one rounding step ({step:.3f} in restoration units)"
            )
    return out


def control_side(real_minus_control: Interval, floor: float) -> str:
    """One control's side: above the gap floor, below 0, or neither."""
    if real_minus_control.lo > floor:
        return SUPPORTS
    if real_minus_control.hi < 0:
        return CONTRADICTS
    return INCONCLUSIVE


def toward_text(iv: Interval | None) -> str:
    if iv is None:
        return "n/a (no source prompt)"
    if not math.isfinite(iv.estimate):
        return "n/a (its source's metric equals the target's)"
    return iv.fmt()


def controls(res: Results, direction: str) -> Verdict:
    """The controls criterion for one direction (module docstring)."""
    name = f"{CONTROLS} ({SHORT[direction]})"
    d = res.directions.get(direction)
    if d is not None and not d.controls and len(d.check.used) < 2 and d.check.excluded:
        why = f"fewer than 2 pairs clear the gap checks ({d.check.describe()})"
        return Verdict(name, INCONCLUSIVE, n_pairs_excluded=len(d.check.excluded), numbers=why)
    if d is None or not d.controls:
        return Verdict(name, NOT_RUN, numbers="no control rows: run with +sweep=controls")
    floor = d.check.floor
    sides = {c.name: control_side(c.real_minus_control, floor) for c in d.controls.values()}
    verdict = (
        SUPPORTS
        if all(v == SUPPORTS for v in sides.values())
        else CONTRADICTS
        if CONTRADICTS in sides.values()
        else INCONCLUSIVE
    )
    numbers = "; ".join(
        f"{c.name}: change {c.change.fmt()} logits, toward its own source "
        f"{toward_text(c.toward_own)}, real - control "
        f"{c.real_minus_control.fmt()} logits ({sides[c.name]})"
        for c in d.controls.values()
    )
    worst = min(d.controls.values(), key=lambda c: c.real_minus_control.lo)
    return Verdict(
        name,
        verdict,
        worst.real_minus_control.estimate,
        (worst.real_minus_control.lo, worst.real_minus_control.hi),
        min(c.n_pairs for c in d.controls.values()),
        len(d.check.excluded),
        [f"gap floor: {d.check.floor_text()} (logits)"] + list(d.flags),
        numbers,
        f"real - control band-mean change (logits) of the control with the lowest interval, "
        f"{worst.name}",
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
