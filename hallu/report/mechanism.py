"""The report's "mechanism" section (+sweep=mechanism; numbers from hallu/analysis/mechanism.py).

`read(source)` loads the run's mechanism tables (local directory or s3://); `section(doc, ...)`
adds the direction similarity per layer, the ladder projections, the held-out AUROC, the
steering curves (real vs random directions) and the patch-and-generate table, each with claim
bootstrap intervals, and the claim-truth splits.
"""

from __future__ import annotations

import io
from typing import Any

import numpy as np
import pandas as pd

from hallu.analysis import mechanism as mech
from hallu.mechanism.schema import read_store
from hallu.store.factory import store_at

__all__ = ["mechanism_only", "read", "read_store", "section"]


def read(source: str) -> dict[str, pd.DataFrame]:
    """kind -> rows, for the kinds the run at `source` has (empty: no mechanism results)."""
    return read_store(store_at(source))


def mechanism_only(source: str) -> Any:
    """The report (a Doc) of a run with mechanism results and no patching shards, else None."""
    from hallu.report.doc import Doc

    store = store_at(source)
    if store.done_shards():
        return None
    tables = read_store(store)
    if not tables:
        return None
    doc = Doc(f"hallu report: run {store.run_id}")
    section(doc, tables)
    return doc


ZERO_DIRECTION = "n/a: a direction of length 0 (the prompts do not differ here yet)"


def _ci(t: tuple[float, float, float], digits: int = 3, why: str = "") -> str:
    """An estimate and interval; `why` (or 'n/a') instead of a bare nan."""
    est, lo, hi = t
    if not np.isfinite(est):
        return why or "n/a (no finite value)"
    if not (np.isfinite(lo) and np.isfinite(hi)):
        return f"{est:.{digits}f} (no interval: too few claims to resample)"
    return f"{est:.{digits}f} [{lo:.{digits}f}, {hi:.{digits}f}]"


def section(doc: Any, tables: dict[str, pd.DataFrame], top: int = 5) -> dict[str, Any]:
    """Add the mechanism section to `doc`; return its numbers (for the terminal and tests)."""
    doc.h("Mechanism: a certainty direction, steering, patch-and-generate")
    doc.p(
        "Intervals are 95% percentile bootstrap intervals over claims (1000 resamples); "
        "rates are per prompt (mean over its samples), then the mean over claims. "
        "docs/mechanism.md explains each analysis."
    )
    numbers: dict[str, Any] = {}
    if "capture" in tables:
        numbers["directions"] = _directions(doc, tables["capture"])
    if "steer" in tables:
        numbers["steering"] = _steering(doc, tables["steer"])
    if "patchgen" in tables:
        numbers["patchgen"] = _patchgen(doc, tables["patchgen"])
    if "heads" in tables:
        numbers["heads"] = _heads(doc, tables["heads"], top)
    return numbers


def _heads(doc: Any, heads: pd.DataFrame, top: int) -> list[dict[str, Any]]:
    rows = mech.head_table(heads, top)
    doc.p(
        "Which heads carry it: each head's output at the last position patched from the source, "
        "measured three ways. total: through every later layer. path (path patching to the "
        "logits, as Wang et al. 2022 do it): every later attention layer frozen at the target's "
        "output, MLPs recomputed, so it counts what the head sends through the residual stream "
        "and later MLPs but not through later heads. direct: only the head's straight path to "
        "the unembedding. Effects are patched - corrupted in logits, and as a fraction of the "
        "baseline gap; the top heads by |total effect| per direction, claim-bootstrap intervals."
    )
    doc.table(
        ["direction", "rank", "layer.head", "total (logits)", "path (logits)", "direct (logits)",
         "total / gap", "path / gap", "direct / gap"],
        [[r["direction"], r["rank"], f"{r['layer']}.{r['head']}", _ci(r["total"]),
          _ci(r["path"]), _ci(r["direct"]), _ci(r["total_restoration"]),
          _ci(r["path_restoration"]), _ci(r["direct_restoration"])]
         for r in rows],
    )  # fmt: skip
    return rows


def _directions(doc: Any, cap: pd.DataFrame) -> list[dict[str, Any]]:
    rows = mech.directions(cap)
    doc.p(
        "Directions per layer and site: d_certain = mean(certain - unmarked), d_uncertain = "
        "mean(uncertain - unmarked) over claims. cosine near -1: uncertainty is the opposite "
        "of certainty on one axis; near 0: a separate direction. lens = the metric's change "
        "(logits of confident - tentative) if the direction were added to the final residual "
        "(logit lens; the final norm's scale taken from each prompt's own). AUROC: a "
        "direction found on half the claims separates the other half's certain from "
        "uncertain prompts (mean and 2.5-97.5% over 20 halvings)."
    )
    table = []
    for r in rows:
        auc = mech.held_out_auroc(cap, r["layer"], r["site"])
        r["auroc"] = auc
        table.append(
            [r["layer"], r["site"], _ci(r["cosine"], why=ZERO_DIRECTION), _ci(r["norm_certain"], 2),
             _ci(r["norm_uncertain"], 2), f"{r['lens_certain']:.2f}",
             f"{r['lens_uncertain']:.2f}", _ci(auc)]
        )  # fmt: skip
    doc.table(
        ["layer", "site", "cosine(cert, unc)", "|d_cert|", "|d_unc|", "lens cert", "lens unc",
         "held-out AUROC"],
        table,
    )  # fmt: skip
    templates = sorted(cap.template.unique())
    if len(templates) > 1:
        doc.p("By template: cosine(certain, uncertain) per layer at the last token, per phrasing.")
        per = {t: mech.directions(cap[cap.template == t]) for t in templates}
        last = [r for r in rows if r["site"] == "last"]
        doc.table(
            ["layer", *templates],
            [[r["layer"], *[_ci(next(x for x in per[t] if x["layer"] == r["layer"]
                                     and x["site"] == "last")["cosine"], why=ZERO_DIRECTION)
                          for t in templates]]
             for r in last],
        )  # fmt: skip
    ladder = [r for r in rows if len(r["ladder"]) > 2]
    if ladder:
        doc.p(
            "Along the ladder: each rung's (rung - unmarked) projected on the unit certain "
            "direction, per layer and site; strengths from strong certainty (+) to doubt (-)."
        )
        rungs = [x["rung"] + f" ({x['strength']:+d})" for x in ladder[0]["ladder"]]
        doc.table(
            ["layer", "site", *rungs],
            [
                [r["layer"], r["site"], *[_ci(x["projection"], 2) for x in r["ladder"]]]
                for r in ladder
            ],
        )
    return rows


def _steering(doc: Any, steer: pd.DataFrame) -> list[dict[str, Any]]:
    curves = mech.steering_curves(steer)
    doc.p(
        "Steering: the unmarked prompts answered with alpha x d_certain added at the layer and "
        "site shown; 'found' is d_certain, 'random_K' a random direction of the same norm "
        "(the control). Declarative rate = share of sampled answers the lexicon labels "
        "declarative."
    )
    n = len({c["layer"] for c in curves})
    doc.figure(
        _steer_png(curves),
        "Steering: alpha x d_certain (solid, 95% band over claims) or a random direction of the "
        f"same norm (dotted) added to the unmarked prompts at {n} layer(s); left: share of "
        "sampled answers labelled declarative, right: the metric at the last prompt token "
        f"(logits); {max(c['n_claims'] for c in curves)} claims. Nothing is patched between "
        "prompts here.",
    )
    judged = any(np.isfinite(c["judge"][0]) for c in curves)
    doc.table(
        ["layer", "direction", "alpha", "declarative rate", "metric", "claims"]
        + (["judge: declarative"] if judged else []),
        [[c["layer"], c["direction"], f"{c['alpha']:+.2f}", _ci(c["declarative"]),
          _ci(c["metric"]), c["n_claims"]] + ([_ci(c["judge"])] if judged else [])
         for c in curves],
    )  # fmt: skip
    return curves


def _patchgen(doc: Any, pg: pd.DataFrame) -> list[dict[str, Any]]:
    table = mech.patchgen_table(pg)
    split = mech.patchgen_table(pg, by_truth=True)
    doc.p(
        "Patch-and-generate: each pair's target prompt answered with the source's resid_pre "
        "written in at one layer (site: " + ", ".join(sorted(pg.site.unique())) + ") and held "
        "while it answers; 'source' and 'target' are the unpatched prompts."
    )
    doc.table(
        ["direction", "setting", "layer", "declarative rate", "metric", "claims"],
        [[r["patch_direction"], r["setting"], _layer(r["layer"]), _ci(r["declarative"]),
          _ci(r["metric"]), r["n_claims"]] for r in table],
    )  # fmt: skip
    doc.p("The same, split by claim truth (true claims: hedging; false claims: sycophancy).")
    doc.table(
        ["direction", "setting", "layer", "claim true", "declarative rate", "claims"],
        [[r["patch_direction"], r["setting"], _layer(r["layer"]), r["claim_true"],
          _ci(r["declarative"]), r["n_claims"]] for r in split],
    )  # fmt: skip
    return table


def _layer(x: Any) -> str:
    return "-" if pd.isna(x) else str(int(x))


def _steer_png(curves: list[dict[str, Any]]) -> bytes:
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    fig, axes = plt.subplots(1, 2, figsize=(9, 3.4))
    df = pd.DataFrame(curves)
    for (layer, name), g in df.groupby(["layer", "direction"]):
        style = "-o" if name == "found" else ":"
        for ax, col in zip(axes, ("declarative", "metric"), strict=True):
            est = [v[0] for v in g[col]]
            ax.plot(g.alpha, est, style, label=f"L{layer} {name}", lw=2 if name == "found" else 1)
            if name == "found":
                ax.fill_between(g.alpha, [v[1] for v in g[col]], [v[2] for v in g[col]], alpha=0.2)
    axes[0].set(
        xlabel="alpha (steering coefficient)",
        ylabel="declarative rate (share of answers)",
        ylim=(-0.02, 1.02),
        title="answer style",
    )
    axes[1].set(
        xlabel="alpha (steering coefficient)",
        ylabel="metric at the last token (logits)",
        title="metric",
    )
    axes[0].legend(fontsize=7)
    fig.suptitle("Steering along the certainty direction (L = layer)", fontsize=10)
    fig.tight_layout()
    buf = io.BytesIO()
    fig.savefig(buf, format="png", dpi=90)
    plt.close(fig)
    return buf.getvalue()
