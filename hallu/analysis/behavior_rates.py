"""Behaviour (Experiment 1) with one unit of analysis: the prompt.

A prompt's declarative rate is the mean over its answers (one greedy answer, or n samples), so
four samples of one prompt count once, not four times. A condition's rate is the mean over its
prompts, with a percentile bootstrap interval over claims (pairs): the claim is what was sampled
from the world, and the same claim appears in every condition. The terminal, the behaviour
summary, Figure 1 and the report print these numbers, formatted once by `rate_line`.

Metric tracking: the AUROC of the unpatched metric (`metric_value`) for telling declarative from
tentative answers, pooled and within each condition. Pooled, it can be high only because the
condition moves both the metric and the answer; within a condition it asks whether the metric
tracks the answer when the marker is held fixed.
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np
import pyarrow as pa
import pyarrow.compute as pc

from hallu.analysis.behavior_check import answers, label_column
from hallu.analysis.bootstrap import Interval, resample_weights, summarize
from hallu.analysis.proportions import auroc

CONDITIONS = ("certain", "uncertain", "neutral")
LABELS = ("declarative", "tentative", "mixed")


@dataclass(frozen=True)
class ConditionRate:
    condition: str
    rate: Interval  # mean over prompts of each prompt's declarative share
    n_prompts: int
    n_answers: int

    def describe(self) -> str:
        return (
            f"{self.condition} {self.rate.fmt()} ({self.n_prompts} prompts, "
            f"{self.n_answers} answers; per-prompt mean, bootstrap over claims)"
        )


def _labelled(beh: pa.Table, label: str) -> np.ndarray:
    col = label_column(beh)
    return np.asarray([str(v).lower() == label for v in beh[col].to_pylist()], float)


def _declarative(beh: pa.Table) -> np.ndarray:
    return _labelled(beh, "declarative")


def _chosen(beh: pa.Table, decoding: str | None) -> tuple[pa.Table, str]:
    """The answers to count: one decoding's, or the scorecard's choice (behavior_check.answers)."""
    if decoding is None or "decoding" not in beh.column_names:
        return answers(beh)
    return beh.filter(pc.equal(beh["decoding"], decoding)), decoding


def prompt_rates(
    beh: pa.Table,
    n_boot: int = 2000,
    seed: int = 0,
    label: str = "declarative",
    decoding: str | None = None,
) -> dict[str, ConditionRate]:
    """condition -> its `label` rate over prompts (module docstring); `decoding` None: the
    answers the scorecard uses (sampled if any, else greedy)."""
    if label_column(beh) is None:
        return {}
    beh, _ = _chosen(beh, decoding)
    pid = np.asarray(beh["pair_id"].to_pylist(), dtype=object)
    cond = np.asarray(beh["condition"].to_pylist(), dtype=object)
    hit = _labelled(beh, label)
    out = {}
    for c in CONDITIONS:
        sel = cond == c
        pairs = sorted(set(pid[sel]))
        if not pairs:
            continue
        share = np.array([hit[sel & (pid == p)].mean() for p in pairs])
        w = resample_weights(len(pairs), n_boot, seed) / len(pairs)
        out[c] = ConditionRate(c, summarize(w @ share), len(pairs), int(sel.sum()))
    return out


def rate_line(rates: dict[str, ConditionRate], which: str) -> str:
    """The one line the terminal, behavior/summary.md and the report print for the rates."""
    body = ", ".join(
        f"{c} {r.rate.fmt()} ({r.n_prompts} prompts, {r.n_answers} answers)"
        for c, r in rates.items()
    )
    return (
        f"behavior ({which} answers): declarative rate per prompt, mean over prompts "
        f"[95% bootstrap over claims]: {body}"
    )


def headline(beh: pa.Table, n_boot: int = 2000, seed: int = 0) -> tuple[str, str] | None:
    """(which answers, the rate line) for the answers the scorecard uses; None without labels."""
    if label_column(beh) is None:
        return None
    _, which = answers(beh)
    return which, rate_line(prompt_rates(beh, n_boot, seed), which)


def figure_data(
    beh: pa.Table, n_boot: int = 2000, seed: int = 0, decoding: str | None = None
) -> dict[str, dict[str, list[float]]]:
    """Figure 1's bars: label -> condition -> [rate, lo, hi], from `prompt_rates`."""
    return {
        lab: {
            c: [r.rate.estimate, r.rate.lo, r.rate.hi]
            for c, r in prompt_rates(beh, n_boot, seed, lab, decoding).items()
        }
        for lab in LABELS
    }


def _auroc(score: np.ndarray, pos: np.ndarray, pid: np.ndarray, n_boot: int, seed: int):
    if pos.all() or not pos.any():
        return None
    ids, inverse = np.unique(pid, return_inverse=True)
    w = resample_weights(len(ids), n_boot, seed)
    values = np.array(
        [auroc(score[pos], score[~pos], row[inverse][pos], row[inverse][~pos]) for row in w]
    )
    return summarize(values)


def tracking(
    beh: pa.Table, n_boot: int = 2000, seed: int = 0, decoding: str | None = None
) -> dict[str, Interval | None]:
    """'pooled' and each condition -> AUROC of metric_value (declarative vs tentative answers,
    mixed left out), bootstrap over claims; None where a class is empty."""
    if label_column(beh) is None or "metric_value" not in beh.column_names:
        return {}
    beh, _ = _chosen(beh, decoding)
    col = label_column(beh)
    keep = pc.is_in(
        pc.utf8_lower(beh[col].cast(pa.string())), pa.array(["declarative", "tentative"])
    )
    beh = beh.filter(pc.and_(keep, pc.is_valid(beh["metric_value"])))
    score = np.asarray(beh["metric_value"].to_pylist(), dtype=float)
    pos = _declarative(beh).astype(bool)
    pid = np.asarray(beh["pair_id"].to_pylist(), dtype=object)
    cond = np.asarray(beh["condition"].to_pylist(), dtype=object)
    out = {"pooled": _auroc(score, pos, pid, n_boot, seed)}
    for c in CONDITIONS:
        sel = cond == c
        if sel.any():
            out[c] = _auroc(score[sel], pos[sel], pid[sel], n_boot, seed)
    return out


def tracking_line(auc: dict[str, Interval | None]) -> str:
    """The AUROC line the behaviour summary and the report print."""
    return (
        "AUROC of the unpatched metric for declarative vs tentative answers [95% bootstrap over "
        "claims], pooled and within each condition (the marker held fixed): "
        + "; ".join(f"{k} {v.fmt() if v else 'n/a (one class empty)'}" for k, v in auc.items())
    )
