"""Behaviour (Experiment 1) numbers the scorecard needs, from the run's behaviour rows.

Rows come from the behaviour experiment (hallu/behavior/, `<run>/behavior/responses/*.parquet`):
one per answer with `pair_id`, `condition` (certain / uncertain / neutral), the lexicon's
`style_label` (declarative / tentative / mixed), `decoding` and `metric_value` (the patching
metric at the prompt's last position). Greedy answers are used when the run has them (one per
prompt, as in the behaviour summary), else every sampled answer. Rates are declarative shares;
intervals bootstrap over pairs (claims), paired across conditions, because the same claim appears
in every condition.
"""

from __future__ import annotations

from typing import Any

import numpy as np
import pyarrow as pa
import pyarrow.compute as pc

from hallu.analysis import intervals
from hallu.analysis.bootstrap import resample_weights, summarize
from hallu.analysis.proportions import auroc, wilson

LABEL_COLUMNS = ("style_label", "label")


def label_column(beh: pa.Table) -> str | None:
    return next((c for c in LABEL_COLUMNS if c in beh.column_names), None)


def answers(beh: pa.Table) -> tuple[pa.Table, str]:
    """The answers the scorecard uses, and which ('sampled', 'greedy' or 'all').

    Sampled answers first: their rates estimate the model's answer distribution, while greedy
    decoding keeps only each prompt's most likely answer and so exaggerates any majority (a
    model that is 60% tentative answers tentatively 100% of the time under greedy decoding).
    """
    if "decoding" not in beh.column_names:
        return beh, "all"
    for decoding in ("sampled", "greedy"):
        sub = beh.filter(pc.equal(beh["decoding"], decoding))
        if sub.num_rows:
            return sub, decoding
    return beh, "all"


def _shares(beh: pa.Table) -> tuple[list[str], dict[str, np.ndarray]]:
    """pair ids, and per condition each pair's declarative share (NaN if it has no response)."""
    col = label_column(beh)
    assert col is not None
    pid = np.asarray(beh["pair_id"].to_pylist(), dtype=object)
    cond = np.asarray(beh["condition"].to_pylist(), dtype=object)
    decl = np.asarray([str(v).lower() == "declarative" for v in beh[col].to_pylist()], dtype=float)
    pairs = sorted(set(pid))
    out = {}
    for c in ("certain", "uncertain", "neutral"):
        share = np.full(len(pairs), np.nan)
        for i, p in enumerate(pairs):
            sel = (pid == p) & (cond == c)
            if sel.any():
                share[i] = decl[sel].mean()
        out[c] = share
    return pairs, out


def rates(beh: pa.Table) -> dict[str, dict[str, float]]:
    """Declarative rate per condition over responses, with Wilson 95% intervals."""
    col = label_column(beh)
    out = {}
    for c in ("certain", "neutral", "uncertain"):
        sub = beh.filter(pc.equal(beh["condition"], c))
        n = sub.num_rows
        k = sum(str(v).lower() == "declarative" for v in sub[col].to_pylist())
        lo, hi = wilson(k, n)
        out[c] = {
            "n": n,
            "declarative": k,
            "rate": k / n if n else float("nan"),
            "lo": lo,
            "hi": hi,
        }
    return out


def asymmetry(beh: pa.Table, level: float = 0.95) -> dict[str, Any] | None:
    """E_c = certain - neutral, E_u = neutral - uncertain declarative shares; E_c - E_u.

    The source study reads 97.5% vs 57.5% as "mirrors certainty well, uncertainty badly";
    against the neutral baseline that predicts E_c > E_u. If neutral answers are already
    declarative, the certain user moves nothing and the asymmetry is the model's default, not a
    marker effect. Also `n_pairs`: the claims used (answered in every condition).
    """
    if label_column(beh) is None or "condition" not in beh.column_names:
        return None
    _, s = _shares(beh)
    keep = np.isfinite(s["certain"]) & np.isfinite(s["neutral"]) & np.isfinite(s["uncertain"])
    if keep.sum() < 2:
        return None
    c, n, u = s["certain"][keep], s["neutral"][keep], s["uncertain"][keep]
    return {  # t intervals over claims (hallu/analysis/intervals.py)
        "certain_effect": intervals.mean(c - n, level),
        "uncertain_effect": intervals.mean(n - u, level),
        "difference": intervals.mean((c - n) - (n - u), level),
        "n_pairs": int(keep.sum()),  # claims answered in all three conditions
    }


def metric_tracking(
    beh: pa.Table, table: pa.Table, n_boot: int, seed: int
) -> dict[str, Any] | None:
    """AUROC of the unpatched metric (per prompt) for telling declarative from tentative answers.

    The metric is the answer row's `metric_value` when it has one; otherwise a pair's certain and
    uncertain prompts take it from the patching baselines (2A: clean = certain, corrupted =
    uncertain). Mixed answers are left out. 0.5 = no tracking.
    """
    col = label_column(beh)
    if col is None:
        return None
    if "metric_value" in beh.column_names:  # measured on the very prompt that was answered
        rows = beh.select(["pair_id", "condition", col, "metric_value"]).to_pylist()
        scored = [
            (r["pair_id"], r["condition"], str(r[col]).lower(), r["metric_value"]) for r in rows
        ]
        return _tracking(scored, n_boot, seed)
    metric: dict[tuple[str, str], float] = {}
    for row in _last_per_pair(table).to_pylist():
        src, tgt = (
            ("certain", "uncertain")
            if row["direction"] == "restore_confidence"
            else ("uncertain", "certain")
        )
        metric[(row["pair_id"], src)] = row["clean"]
        metric[(row["pair_id"], tgt)] = row["corrupted"]
    scored = []
    for r in beh.select(["pair_id", "condition", col]).to_pylist():
        key = (r["pair_id"], r["condition"])
        if key in metric:
            scored.append((r["pair_id"], r["condition"], str(r[col]).lower(), metric[key]))
    return _tracking(scored, n_boot, seed)


def _last_per_pair(table: pa.Table) -> pa.Table:
    """Each pair's last experiment row (direction, pair_id, clean, corrupted), in row order.

    Every row of a pair sets both of its prompts' metrics, so the last one decides them; taking
    it in Arrow keeps memory at one Python row per pair, not per stored row."""
    real = table.filter(pc.is_null(table["control"])).select(
        ["direction", "pair_id", "clean", "corrupted"]
    )
    order = pa.array(np.arange(real.num_rows, dtype=np.int64))
    last = real.append_column("row", order).group_by("pair_id", use_threads=False)
    rows = last.aggregate([("row", "max")])["row_max"].to_numpy()
    return real.take(np.sort(rows))


def stratified_auroc(
    score: np.ndarray, pos: np.ndarray, strata: np.ndarray, weight: np.ndarray | None = None
) -> float:
    """AUROC counting only positive-negative comparisons within one stratum (condition): the
    share of within-condition (declarative, tentative) answer pairs the metric orders right,
    ties half. A metric that only encodes the condition scores exactly 0.5."""
    w = np.ones(len(score)) if weight is None else weight
    wins = total = 0.0
    for s in np.unique(strata):
        sel = strata == s
        p, q = sel & pos, sel & ~pos
        sp, sq = score[p][:, None], score[q][None, :]
        cmp = (sp > sq) + 0.5 * (sp == sq)
        wins += w[p] @ cmp @ w[q]
        total += w[p].sum() * w[q].sum()
    return float(wins / total) if total > 0 else float("nan")


def _tracking(scored: list[tuple[str, str, str, float]], n_boot: int, seed: int) -> dict | None:
    """(pair, condition, label, metric) per answer -> the within-condition (stratified) AUROC,
    which decides, and the pooled one, which is shown; bootstrap over pairs; mixed left out."""
    kept = [
        (p, c, lab == "declarative", m)
        for p, c, lab, m in scored
        if lab in ("declarative", "tentative") and m is not None and np.isfinite(m)
    ]
    if len({k[2] for k in kept}) < 2:
        return None
    pos = np.array([k[2] for k in kept])
    cond = np.array([k[1] for k in kept], dtype=object)
    score = np.array([k[3] for k in kept], dtype=float)
    ids, inverse = np.unique(np.array([k[0] for k in kept], dtype=object), return_inverse=True)
    w = resample_weights(len(ids), n_boot, seed)
    pooled = [auroc(score[pos], score[~pos], row[inverse][pos], row[inverse][~pos]) for row in w]
    within = [stratified_auroc(score, pos, cond, row[inverse]) for row in w]
    return {
        "auroc": summarize(np.array(within)),
        "pooled": summarize(np.array(pooled)),
        "n_responses": len(kept),
        "n_pairs": len(ids),
    }
