"""Behaviour with one unit of analysis: the terminal, behavior/summary.md, Figure 1's data and the
report print the same per-prompt rates (hallu/analysis/behavior_rates.py)."""

from __future__ import annotations

import json
import re
import subprocess
import sys

import pyarrow as pa
import pytest

from hallu.analysis import behavior_rates

pytestmark = pytest.mark.slow


def _table(rows: list[tuple[str, str, str, str, float]]) -> pa.Table:
    names = ["pair_id", "condition", "decoding", "style_label", "metric_value"]
    return pa.table({n: [r[i] for r in rows] for i, n in enumerate(names)})


def test_a_prompt_counts_once_and_claims_are_resampled():
    # Claim a: 4 samples, 3 declarative (share 0.75); claim b: 1 sample, declarative (share 1).
    rows = [("a", "certain", "sampled", lab, 1.0) for lab in ["declarative"] * 3 + ["tentative"]]
    rows += [("b", "certain", "sampled", "declarative", 2.0)]
    rates = behavior_rates.prompt_rates(_table(rows), n_boot=500, seed=1)
    r = rates["certain"]
    assert (r.n_prompts, r.n_answers) == (2, 5)
    assert r.rate.estimate == pytest.approx(0.875)  # pooled over answers would be 4/5 = 0.8
    assert {r.rate.lo, r.rate.hi} <= {0.75, 0.875, 1.0}  # resamples of 2 claims take 3 values


def test_auroc_within_each_condition_and_pooled():
    # Pooled, the metric separates the answers only through the condition: within a condition,
    # declarative and tentative answers have the same metric values, so the AUROC is 0.5 exactly.
    rows = []
    for i in range(40):
        noise = (i % 8) / 8
        rows.append(
            (f"p{i}", "certain", "greedy", "tentative" if i < 8 else "declarative", 3 + noise)
        )
        rows.append(
            (f"p{i}", "uncertain", "greedy", "declarative" if i < 8 else "tentative", noise)
        )
    auc = behavior_rates.tracking(_table(rows), n_boot=200, seed=0)
    assert set(auc) == {"pooled", "certain", "uncertain"}
    assert auc["pooled"].estimate == pytest.approx(0.8)  # (1024 + 128 + 128) / 1600
    assert auc["pooled"].lo > 0.5
    for cond in ("certain", "uncertain"):
        assert auc[cond].estimate == pytest.approx(0.5)
        assert auc[cond].lo < 0.5 < auc[cond].hi


def test_terminal_summary_figure1_and_report_print_the_same_rates(tmp_path):
    args = [
        "model=toy",
        "+sweep=full",
        "sweep.pairs=8",
        "sweep.positions=last:2",
        "sweep.controls=[]",
        "behavior.n_samples=3",
        "behavior.max_new_tokens=12",
        f"storage.root={tmp_path}",
        "run_id=r",
    ]
    launch = [sys.executable, "-m", "hallu.launch", *args]
    proc = subprocess.run(launch, capture_output=True, text=True, timeout=600, cwd=tmp_path)
    assert proc.returncode == 0, proc.stderr[-3000:]
    terminal = [line for line in proc.stdout.splitlines() if line.startswith("behavior (")]
    assert len(terminal) == 1 and "sampled answers" in terminal[0], proc.stdout
    line = terminal[0]
    run = tmp_path / "r"
    assert line in (run / "behavior" / "summary.md").read_text().splitlines()

    summary = json.loads((run / "behavior" / "summary.json").read_text())
    bars = summary["decodings"]["sampled"]["prompt_rates"]["declarative"]  # Figure 1's data
    for cond, (est, lo, hi) in bars.items():
        assert f"{cond} {est:.3f} [{lo:.3f}, {hi:.3f}] (8 prompts, 24 answers)" in line

    report = [sys.executable, "-m", "hallu.report", str(run), "--n-boot", "2000"]
    proc = subprocess.run(report, capture_output=True, text=True, timeout=600, cwd=tmp_path)
    assert proc.returncode == 0, proc.stderr[-3000:]
    md = (run / "report.md").read_text()
    assert line in md.splitlines()
    for cond, (est, lo, hi) in bars.items():
        assert re.search(rf"\| {cond} \| {est:.3f} \[{lo:.3f}, {hi:.3f}\] \| 8 \| 24 \|", md)
    assert "Wilson" not in md.split("## Figure 1")[1].split("##")[0]  # no pooled counts
