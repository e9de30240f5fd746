"""Experiment 1's numbers and figures, from the stored answers (behavior/responses/*.parquet).

Unit of analysis: the prompt. Rates are each prompt's share over its answers (one greedy answer,
or n samples), averaged over prompts, with a 95% bootstrap interval over claims
(hallu/analysis/behavior_rates.py); the terminal, summary.md, Figure 1 and the report print these
same numbers. The exact tests below need one answer per prompt: the greedy answer, or sample 0.

Per decoding:
- the rate of each style label per condition, per prompt, bootstrap over claims (Figure 1);
- on one answer per prompt: certain vs uncertain on the declarative rate: Fisher exact
  (two-sided), chi-square with Yates's correction, McNemar's exact test over claims answered
  in both conditions, and how many prompts per condition / claims would give 80% power for the
  observed difference;
- each condition's distance from the neutral baseline (Newcombe interval, Fisher p): a
  "certainty is mirrored, uncertainty is not" reading needs these, since a model that is
  declarative with a neutral user has no room to become more so;
- the metric check: AUROC of the patching metric at the prompt's last position for telling
  declarative from tentative answers, pooled and within each condition (bootstrap over claims),
  and a scatter of metric against stance.
"""

from __future__ import annotations

import json
import tempfile
from pathlib import Path
from typing import Any

import matplotlib

matplotlib.use("Agg")
import matplotlib.pyplot as plt  # noqa: E402
import numpy as np  # noqa: E402
import pyarrow as pa  # noqa: E402

from hallu.analysis import behavior_rates  # noqa: E402
from hallu.analysis import proportions as stats  # noqa: E402
from hallu.behavior.schema import FOLDER, SCHEMA  # noqa: E402
from hallu.report.doc import fmt  # noqa: E402
from hallu.store.base import Store  # noqa: E402

LABELS = ("declarative", "tentative", "mixed")
CONDITIONS = ("certain", "uncertain", "neutral")
COLOURS = {"declarative": "tab:blue", "tentative": "tab:orange", "mixed": "tab:grey"}


def read_responses(store: Store) -> pa.Table:
    """Every planned chunk's answers (run.json's behavior_chunks), each checked against its
    done marker; UserError naming the chunks missing or failing, strays ignored with a warning."""
    return store.read_tables(FOLDER, SCHEMA, (store.read_meta() or {}).get("behavior_chunks"))


def _rate(labels: list[str], label: str) -> dict[str, Any]:
    k, n = sum(x == label for x in labels), len(labels)
    lo, hi = stats.wilson(k, n)
    return {"k": k, "n": n, "rate": k / n if n else None, "wilson95": [lo, hi]}


def compare(a: dict[str, str], b: dict[str, str], label: str = "declarative") -> dict[str, Any]:
    """Condition a vs b on `label`; a and b map claim (pair id) -> label of its one answer."""
    ka, na = sum(v == label for v in a.values()), len(a)
    kb, nb = sum(v == label for v in b.values()), len(b)
    chi, p_chi = stats.chi2_yates(ka, na - ka, kb, nb - kb)
    lo, hi = stats.newcombe_diff(ka, na, kb, nb)
    out: dict[str, Any] = {
        "label": label,
        "table": [[ka, na - ka], [kb, nb - kb]],
        "difference": ka / na - kb / nb,
        "difference_newcombe95": [lo, hi],
        "fisher_p": stats.fisher_exact(ka, na - ka, kb, nb - kb),
        "chi2_yates": chi,
        "chi2_yates_p": p_chi,
        "n_per_condition_for_80pct_power": stats.n_per_group(ka / na, kb / nb),
    }
    both = sorted(set(a) & set(b))
    if both:
        n10 = sum(a[p] == label and b[p] != label for p in both)
        n01 = sum(a[p] != label and b[p] == label for p in both)
        out["paired"] = {
            "n_claims": len(both),
            "only_first": n10,
            "only_second": n01,
            "mcnemar_exact_p": stats.mcnemar_exact(n10, n01),
            "n_claims_for_80pct_power": stats.n_pairs_mcnemar(n10 / len(both), n01 / len(both)),
        }
    return out


def summarize(table: pa.Table) -> dict[str, Any]:
    rows = table.to_pylist()
    out: dict[str, Any] = {"n_answers": len(rows), "decodings": {}}
    for decoding in ("greedy", "sampled"):
        sub = [r for r in rows if r["decoding"] == decoding]
        if not sub:
            continue
        units = [r for r in sub if r["sample_index"] == 0]
        conds = [c for c in CONDITIONS if any(r["condition"] == c for r in units)]
        by_cond = {
            c: {r["pair_id"]: r["style_label"] for r in units if r["condition"] == c} for c in conds
        }
        d: dict[str, Any] = {
            "n_answers": len(sub),
            "unit": "one answer per prompt" + (" (sample 0)" if decoding == "sampled" else ""),
            "rates": {
                c: {lab: _rate(list(by_cond[c].values()), lab) for lab in LABELS} for c in conds
            },
            "finished_fraction": float(np.mean([r["finished"] for r in sub])),
        }
        if decoding == "sampled":
            d["rates_all_samples"] = {
                c: {
                    lab: sum(r["style_label"] == lab for r in sub if r["condition"] == c)
                    / max(1, sum(r["condition"] == c for r in sub))
                    for lab in LABELS
                }
                for c in conds
            }
        if "certain" in conds and "uncertain" in conds:
            d["certain_vs_uncertain"] = compare(by_cond["certain"], by_cond["uncertain"])
        if "neutral" in conds:
            d["distance_from_neutral"] = {
                c: compare(by_cond[c], by_cond["neutral"]) for c in conds if c != "neutral"
            }
        judged = [r for r in units if r["judge_model"] is not None]
        if judged:
            parsed = [r for r in judged if r["judge_label"] is not None]
            d["judge"] = {
                "model": judged[0]["judge_model"],
                "n_judged": len(judged),
                "n_parsed": len(parsed),
                "agreement_with_lexicon": float(
                    np.mean([r["judge_label"] == r["style_label"] for r in parsed])
                )
                if parsed
                else None,
            }
        d.update(_per_prompt(table, decoding))
        out["decodings"][decoding] = d
    head = behavior_rates.headline(table)
    if head is not None:  # the answers the scorecard and the report use
        out["headline_decoding"], out["headline_line"] = head
    return out


def _per_prompt(table: pa.Table, decoding: str) -> dict[str, Any]:
    """The per-prompt rates (Figure 1's bars) and AUROCs of one decoding (behavior_rates.py)."""
    auc = behavior_rates.tracking(table, decoding=decoding)
    return {
        "prompt_rates": behavior_rates.figure_data(table, decoding=decoding),
        "rate_line": behavior_rates.rate_line(
            behavior_rates.prompt_rates(table, decoding=decoding), decoding
        ),
        "tracking": {k: None if v is None else [v.estimate, v.lo, v.hi] for k, v in auc.items()},
        "tracking_line": behavior_rates.tracking_line(auc) if auc else None,
    }


def patching_consistency(table: pa.Table, patching: pa.Table | None) -> dict[str, Any] | None:
    """Largest gap between the metric stored with the answers and the patching run's baselines.

    restore_confidence's clean/corrupted runs are the certain/uncertain prompts unpatched; the
    two experiments compute them separately (batched with left padding vs alone), so they agree
    only to floating-point noise.
    """
    if patching is None or patching.num_rows == 0:
        return None
    import pyarrow.compute as pc

    from hallu.analysis.grid import MAIN_METRIC

    # The experiment's own rows (a control row's `clean` is its control source's metric), one
    # per pair: the baselines are the same in every cell of a pair.
    own = patching.filter(
        pc.and_kleene(
            pc.and_kleene(
                pc.equal(patching["direction"], "restore_confidence"),
                pc.equal(patching["metric"], MAIN_METRIC),
            ),
            pc.is_null(patching["control"]),
        )
    )
    firsts = own.group_by("pair_id", use_threads=False).aggregate(
        [("clean", "first"), ("corrupted", "first")]
    )
    base: dict[tuple[str, str], float] = {}
    for pid, clean, corrupted in zip(
        *(firsts[c].to_pylist() for c in ("pair_id", "clean_first", "corrupted_first")), strict=True
    ):
        base[(pid, "certain")], base[(pid, "uncertain")] = clean, corrupted
    rows = [
        r
        for r in table.select(["pair_id", "condition", "metric_value"]).to_pylist()
        if (r["pair_id"], r["condition"]) in base
    ]
    diffs = [abs(r["metric_value"] - base[(r["pair_id"], r["condition"])]) for r in rows]
    return {
        "n_prompts": len({(r["pair_id"], r["condition"]) for r in rows}),
        "n_answers": len(rows),
        "max_abs_diff": max(diffs) if diffs else None,
    }


def figure1_png(panels: dict[str, dict[str, dict[str, list[float]]]], n_prompts: int) -> bytes:
    """Figure 1: per decoding, each label's per-prompt rate per condition [95% over claims].

    `panels`: decoding -> label -> condition -> [rate, lo, hi] (behavior_rates.figure_data)."""
    import io

    fig, axes = plt.subplots(1, len(panels), figsize=(5 * len(panels), 3.8), squeeze=False)
    for ax, (dec, bars) in zip(axes[0], panels.items(), strict=True):
        conds = [c for c in CONDITIONS if c in bars.get("declarative", {})]
        width = 0.26
        for j, lab in enumerate(LABELS):
            xs = np.arange(len(conds)) + (j - 1) * width
            v = np.array([bars[lab][c] for c in conds], dtype=float).reshape(-1, 3)
            # clip: a percentile interval need not contain its estimate
            err = [np.clip(v[:, 0] - v[:, 1], 0, None), np.clip(v[:, 2] - v[:, 0], 0, None)]
            ax.bar(xs, v[:, 0], width, yerr=err, capsize=3, label=lab, color=COLOURS[lab])
            for x, row in zip(xs, v, strict=True):
                ax.text(x, row[2] + 0.02, f"{row[0]:.2f}", ha="center", fontsize=6)
        ax.set_xticks(range(len(conds)), [f"{c} user" for c in conds])
        ax.set_xlabel("user's stated certainty (condition)")
        ax.set_ylim(0, 1.3)
        ax.set_ylabel("share of answers (per-prompt mean)\n95% bootstrap over claims")
        ax.set_title(f"{dec} decoding, {n_prompts} prompts per condition", fontsize=9)
        ax.legend(fontsize=7, loc="upper center", ncol=3)
    fig.suptitle("Figure 1: answer style by the user's stated certainty", fontsize=10)
    fig.tight_layout()
    buf = io.BytesIO()
    fig.savefig(buf, format="png", dpi=120)
    plt.close(fig)
    return buf.getvalue()


def figure1(summary: dict[str, Any], path: str) -> None:
    panels = {dec: d["prompt_rates"] for dec, d in summary["decodings"].items()}
    # one answer per prompt in d["rates"], so its n counts the prompts of a condition
    decs = summary["decodings"].values()
    n = max(r["declarative"]["n"] for d in decs for r in d["rates"].values())
    Path(path).write_bytes(figure1_png(panels, n))


def scatter(table: pa.Table, summary: dict[str, Any], path: str) -> None:
    rows = table.to_pylist()  # every answer; the AUROC in the title is over the same answers
    decs = sorted({r["decoding"] for r in rows})
    fig, axes = plt.subplots(1, len(decs), figsize=(5 * len(decs), 3.8), squeeze=False)
    for ax, dec in zip(axes[0], decs, strict=True):
        for lab in LABELS:
            sel = [r for r in rows if r["decoding"] == dec and r["style_label"] == lab]
            ax.scatter(
                [r["metric_value"] for r in sel],
                [r["stance"] for r in sel],
                s=12,
                alpha=0.7,
                color=COLOURS[lab],
                label=f"{lab} ({len(sel)})",
            )
        ax.set_xlabel(f"{rows[0]['metric']} at the prompt's last position (logits)")
        ax.set_ylabel("answer stance, -1 to 1\n(boosters - hedges) / (boosters + hedges + 1)")
        auc = summary["decodings"][dec]["tracking"].get("pooled")
        auc_text = "n/a" if auc is None else "{:.2f} [{:.2f}, {:.2f}]".format(*auc)
        ax.set_title(
            f"Metric vs answer style, {dec} decoding\npooled AUROC declarative vs tentative "
            f"{auc_text}",
            fontsize=9,
        )
        ax.legend(fontsize=7)
    fig.tight_layout()
    fig.savefig(path, dpi=120)
    plt.close(fig)


def _power(n: int | None, unit: str) -> str:
    return f"80% power needs {n} {unit}" if n else "no difference to power"


def _fmt_cmp(c: dict[str, Any]) -> str:
    lo, hi = c["difference_newcombe95"]
    s = (
        f"difference {c['difference']:+.3f} [{lo:+.3f}, {hi:+.3f}]; Fisher p = "
        f"{c['fisher_p']:.3g}; chi-square (Yates) = {c['chi2_yates']:.3g}, p = "
        f"{c['chi2_yates_p']:.3g}; "
        + _power(c["n_per_condition_for_80pct_power"], "prompts per condition")
    )
    if "paired" in c:
        p = c["paired"]
        s += (
            f"; paired by claim ({p['n_claims']} claims, discordant {p['only_first']} vs "
            f"{p['only_second']}): McNemar exact p = {p['mcnemar_exact_p']:.3g}, "
            + _power(p["n_claims_for_80pct_power"], "claims")
        )
    return s


def _decoding_lines(dec: str, d: dict[str, Any]) -> list[str]:
    lines = [f"## {dec} decoding", "", f"- {d['rate_line']}"]
    for c in d["prompt_rates"]["declarative"]:
        lines.append(
            f"- {c} user, every label per prompt: "
            + "; ".join(
                "{} {:.3f} [{:.3f}, {:.3f}]".format(lab, *d["prompt_rates"][lab][c])
                for lab in LABELS
            )
        )
    lines.append(f"- {d['tracking_line'] or 'AUROC: no metric stored with the answers'}")
    lines.append(f"- answers ended by EOS: {d['finished_fraction']:.2f}")
    lines += ["", f"Exact tests on {d['unit']} (k/n declarative, Wilson for the counts):", ""]
    if "certain_vs_uncertain" in d:
        lines.append(
            "- **certain vs uncertain** (declarative): " + _fmt_cmp(d["certain_vs_uncertain"])
        )
    for c, cmp in d.get("distance_from_neutral", {}).items():
        lines.append(f"- {c} vs neutral (declarative): " + _fmt_cmp(cmp))
    if "judge" in d:
        j = d["judge"]
        agree = fmt(j["agreement_with_lexicon"])
        lines.append(
            f"- judge {j['model']}: {j['n_parsed']}/{j['n_judged']} replies parsed; "
            f"agreement with the lexicon {agree}"
        )
    return lines + [""]


def markdown(run_id: str, summary: dict[str, Any]) -> str:
    lines = [
        f"# Experiment 1 (behaviour), run {run_id}",
        "",
        f"{summary['n_answers']} answers. Labels from the lexicon classifier (answer text only). "
        "Rates: each prompt's share over its answers, averaged over prompts, with a 95% "
        "bootstrap interval over claims (hallu/analysis/behavior_rates.py). Figure: "
        "figure1.png (these rates); metric check: metric_check.png.",
        "",
    ]
    if "headline_line" in summary:
        lines += ["## Headline (the terminal and the report print the same)", ""]
        lines += [summary["headline_line"], ""]
    for dec, d in summary["decodings"].items():
        lines += _decoding_lines(dec, d)
    pc = summary.get("patching_consistency")
    if pc:
        lines.append(
            f"Metric stored with the answers vs the patching run's unpatched baselines: "
            f"{pc['n_prompts']} prompts ({pc['n_answers']} answers), largest difference "
            f"{pc['max_abs_diff']:.2e}."
        )
        lines.append("")
    return "\n".join(lines)


def _no_nan(x: Any) -> Any:
    """NaN (e.g. chi-square of a table with an empty column) becomes null: valid JSON."""
    if isinstance(x, float) and x != x:
        return None
    if isinstance(x, dict):
        return {k: _no_nan(v) for k, v in x.items()}
    if isinstance(x, list | tuple):
        return [_no_nan(v) for v in x]
    return x


def report(store: Store, patching: pa.Table | None = None) -> dict[str, Any]:
    """Write behavior/summary.{json,md}, figure1.png and metric_check.png; return the summary."""
    table = read_responses(store)
    summary = summarize(table)
    summary["run_id"] = store.run_id
    summary["patching_consistency"] = patching_consistency(table, patching)
    with tempfile.TemporaryDirectory() as tmp:  # drawn locally, stored through the store (S3 too)
        figure1(summary, f"{tmp}/figure1.png")
        scatter(table, summary, f"{tmp}/metric_check.png")
        for name in ("figure1.png", "metric_check.png"):
            store.write_file(f"behavior/{name}", Path(tmp, name).read_bytes())
    store.write_file("behavior/summary.json", json.dumps(_no_nan(summary), indent=2).encode())
    store.write_file("behavior/summary.md", markdown(store.run_id, summary).encode())
    return summary
