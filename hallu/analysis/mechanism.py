"""Numbers of the mechanism experiment, from its stored rows (numpy only; no torch).

Directions: per layer and site, the difference of means rung - unmarked over claims (each claim
contributes the mean over its pairs, e.g. its templates). Intervals resample *claims* with
replacement (a percentile bootstrap, 1000 draws, row 0 the data), recomputing both directions in
every draw, so the cosine's interval carries the uncertainty of both. The held-out check finds
certain - neutral on a random half of the claims and scores the other half's certain and
uncertain prompts by their projection on it (AUROC, 0.5 = no information); 20 random halvings,
reported as their mean and 2.5-97.5 percentiles.

Rates (steering, patch-and-generate): the unit is the prompt (the mean label over its samples),
then the mean over claims, with the claim bootstrap; never samples pooled as if independent.
"""

from __future__ import annotations

from typing import Any

import numpy as np
import pandas as pd

N_BOOT, LEVEL, N_SPLITS = 1000, 0.95, 20


def _weights(n: int, seed: int) -> np.ndarray:
    rng = np.random.default_rng(seed)
    w = rng.multinomial(n, np.full(n, 1.0 / n), size=N_BOOT).astype(float)
    return np.vstack([np.ones(n), w]) / n  # [B+1, n] mean weights; row 0 the data


def _ci(samples: np.ndarray) -> tuple[float, float, float]:
    finite = samples[1:][np.isfinite(samples[1:])]
    if not np.isfinite(samples[0]) or finite.size == 0:
        return float(samples[0]), float("nan"), float("nan")
    lo, hi = np.quantile(finite, [(1 - LEVEL) / 2, (1 + LEVEL) / 2])
    return float(samples[0]), float(lo), float(hi)


def claim_diffs(cap: pd.DataFrame, rung: str, base: str) -> tuple[list[str], np.ndarray]:
    """(claims, [n_claims, d] mean over each claim's pairs of vector(rung) - vector(base))."""
    a = cap[cap.rung == rung].set_index("pair_id")
    b = cap[cap.rung == base].set_index("pair_id")
    common = a.index.intersection(b.index)
    diff = np.stack(a.loc[common, "vector"].to_numpy()) - np.stack(
        b.loc[common, "vector"].to_numpy()
    )
    claims = a.loc[common, "claim_id"].to_numpy()
    keys = sorted(set(claims))
    return keys, np.stack([diff[claims == k].mean(0) for k in keys])


def _cos(x: np.ndarray, y: np.ndarray) -> np.ndarray:
    nx, ny = np.linalg.norm(x, axis=-1), np.linalg.norm(y, axis=-1)
    with np.errstate(invalid="ignore", divide="ignore"):
        return np.where((nx > 0) & (ny > 0), (x * y).sum(-1) / (nx * ny), np.nan)


def rung_labels(cap: pd.DataFrame) -> dict[str, str]:
    """condition -> rung label used for it (certain/uncertain/neutral -> e.g. definitely)."""
    pairs = cap.dropna(subset=["condition"]).drop_duplicates("condition")
    return dict(zip(pairs.condition, pairs.rung, strict=True))


def directions(cap: pd.DataFrame, seed: int = 0) -> list[dict[str, Any]]:
    """Per layer x site: norms, cosine(certain dir, uncertain dir) and every rung's projection
    on the certain direction, each with a claim-bootstrap interval; lens readings."""
    labels = rung_labels(cap)
    rungs = cap.drop_duplicates("rung").sort_values("strength", ascending=False)
    out = []
    for (layer, site), g in cap.groupby(["layer", "site"], sort=True):
        claims, cert = claim_diffs(g, labels["certain"], labels["neutral"])
        _, unc = claim_diffs(g, labels["uncertain"], labels["neutral"])
        w = _weights(len(claims), seed)
        dc, du = w @ cert, w @ unc  # [B+1, d]
        lens = g.groupby("rung").lens.mean()
        row = {
            "layer": int(layer),
            "site": site,
            "n_claims": len(claims),
            "cosine": _ci(_cos(dc, du)),
            "norm_certain": _ci(np.linalg.norm(dc, axis=-1)),
            "norm_uncertain": _ci(np.linalg.norm(du, axis=-1)),
            "lens_certain": float(lens[labels["certain"]] - lens[labels["neutral"]]),
            "lens_uncertain": float(lens[labels["uncertain"]] - lens[labels["neutral"]]),
            "ladder": [],
        }
        unit = dc / np.maximum(np.linalg.norm(dc, axis=-1, keepdims=True), 1e-30)
        for rung, strength in zip(rungs.rung, rungs.strength, strict=True):
            if rung == labels["neutral"]:
                continue
            _, d = claim_diffs(g, rung, labels["neutral"])
            proj = ((w @ d) * unit).sum(-1)
            row["ladder"].append({"rung": rung, "strength": int(strength), "projection": _ci(proj)})
        out.append(row)
    return out


def auroc(pos: np.ndarray, neg: np.ndarray) -> float:
    """P(score of a positive > score of a negative), ties counting one half (Mann-Whitney)."""
    if pos.size == 0 or neg.size == 0:
        return float("nan")
    diff = pos[:, None] - neg[None, :]
    return float((diff > 0).mean() + 0.5 * (diff == 0).mean())


def held_out_auroc(cap: pd.DataFrame, layer: int, site: str, seed: int = 0) -> tuple:
    """(mean, lo, hi) over random halvings of the claims: certain - neutral found on one half
    separates the other half's certain from uncertain prompts by projection."""
    labels = rung_labels(cap)
    g = cap[(cap.layer == layer) & (cap.site == site)]
    claims, cert = claim_diffs(g, labels["certain"], labels["neutral"])
    if len(claims) < 4:
        return float("nan"), float("nan"), float("nan")
    rng = np.random.default_rng(seed)
    scores = []
    for _ in range(N_SPLITS):
        train = set(rng.permutation(claims)[: len(claims) // 2])
        d = cert[[c in train for c in claims]].mean(0)
        test = g[~g.claim_id.isin(train)]
        proj = {c: np.stack(test[test.rung == labels[c]].vector.to_numpy()) @ d for c in labels}
        scores.append(auroc(proj["certain"], proj["uncertain"]))
    s = np.array(scores)
    return float(s.mean()), float(np.quantile(s, 0.025)), float(np.quantile(s, 0.975))


def _rate_by_claim(df: pd.DataFrame, keys: list[str]) -> pd.DataFrame:
    """Per prompt the declarative fraction over its samples, then per claim the mean."""
    judged = "judge_label" in df and df.judge_label.notna().any()
    df = df.assign(
        declarative=(df.style_label == "declarative").astype(float),
        # an unparsed judge reply (null) is missing, not "not declarative"
        judge=np.where(df.judge_label.isna(), np.nan, df.judge_label == "declarative")
        if judged
        else np.nan,
    )
    per_prompt = df.groupby([*keys, "claim_id", "sample_key"], dropna=False).agg(
        declarative=("declarative", "mean"),
        metric=("metric_value", "mean"),
        judge=("judge", "mean"),
    )
    return per_prompt.groupby([*keys, "claim_id"], dropna=False).mean().reset_index()


def rates(df: pd.DataFrame, keys: list[str], seed: int = 0) -> list[dict[str, Any]]:
    """Declarative rate and mean metric per setting `keys`, bootstrap over claims."""
    per_claim = _rate_by_claim(df, keys)
    claims = sorted(per_claim.claim_id.unique())
    w = _weights(len(claims), seed)
    out = []
    for key, g in per_claim.groupby(keys, dropna=False, sort=True):
        g = g.set_index("claim_id").reindex(claims)
        row = dict(zip(keys, key if isinstance(key, tuple) else (key,), strict=True))
        for col in ("declarative", "metric", "judge"):
            v = g[col].to_numpy()
            ok = np.isfinite(v)
            with np.errstate(invalid="ignore", divide="ignore"):  # a draw with none of them
                row[col] = _ci((w[:, ok] @ v[ok]) / w[:, ok].sum(1))
        row["n_claims"] = int(np.isfinite(g.declarative.to_numpy()).sum())
        out.append(row)
    return out


def steering_curves(steer: pd.DataFrame, by_truth: bool = False) -> list[dict[str, Any]]:
    keys = ["layer", "direction", "alpha"] + (["claim_true"] if by_truth else [])
    return rates(steer.assign(sample_key=steer.prompt_id), keys)


def monotone(curve: list[float], tol: float = 0.0) -> bool:
    """Non-decreasing up to `tol` at every step."""
    return all(b >= a - tol for a, b in zip(curve, curve[1:], strict=False))


def patchgen_table(pg: pd.DataFrame, by_truth: bool = False) -> list[dict[str, Any]]:
    keys = ["patch_direction", "setting", "layer"] + (["claim_true"] if by_truth else [])
    return rates(pg.assign(sample_key=pg.pair_id), keys)


def head_table(heads: pd.DataFrame, top: int, seed: int = 0) -> list[dict[str, Any]]:
    """Per direction, the `top` heads by |mean total effect| (patched - corrupted, logits),
    with their path effect (later heads frozen, MLPs recomputed), their direct effect (the head's
    straight path to the unembedding) and each as a fraction of the baseline gap (ratio
    of means over claims); claim-bootstrap intervals."""
    out = []
    for direction, g in heads.groupby("patch_direction", sort=True):
        per_claim = g.groupby(["layer", "head", "claim_id"]).mean(numeric_only=True).reset_index()
        claims = sorted(per_claim.claim_id.unique())
        w = _weights(len(claims), seed)
        rows = []
        for (layer, head), h in per_claim.groupby(["layer", "head"]):
            h = h.set_index("claim_id").reindex(claims)
            gap = w @ (h.clean - h.corrupted).to_numpy()
            row = {"direction": direction, "layer": int(layer), "head": int(head)}
            for kind in ("total", "path", "direct"):
                eff = w @ (h[kind] - h.corrupted).to_numpy()
                row[kind] = _ci(eff)
                with np.errstate(invalid="ignore", divide="ignore"):
                    row[f"{kind}_restoration"] = _ci(np.where(gap != 0, eff / gap, np.nan))
            rows.append(row)
        rows.sort(key=lambda r: -abs(r["total"][0]))
        for rank, r in enumerate(rows[:top], start=1):
            out.append({**r, "rank": rank})
    return out
