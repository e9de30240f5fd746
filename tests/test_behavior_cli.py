"""Experiment 1 through `python -m hallu.launch`: alone, resumed, and beside patching."""

from __future__ import annotations

import json

import pytest

pytestmark = pytest.mark.slow

SMALL = ["sweep.pairs=4", "behavior.n_samples=2", "behavior.max_new_tokens=8"]


def test_behaviour_sweep_leaves_rows_figure_and_statistics_and_resumes(run_cli, tmp_path):
    proc = run_cli("+sweep=behavior", *SMALL, "run_id=b")
    assert proc.returncode == 0, proc.stderr
    run = tmp_path / "runs" / "b"
    out = run / "behavior"
    for name in ("figure1.png", "metric_check.png", "summary.md", "summary.json"):
        assert (out / name).stat().st_size > 0, name
    assert not list(run.glob("shards/*.parquet")) and not (run / "summary.json").exists()
    summary = json.loads((out / "summary.json").read_text())
    assert summary["n_answers"] == 4 * 3 * (1 + 2)
    cmp = summary["decodings"]["greedy"]["certain_vs_uncertain"]
    assert 0 <= cmp["fisher_p"] <= 1 and cmp["paired"]["n_claims"] == 4
    assert "behavior (sampled answers): declarative rate per prompt" in proc.stdout
    files = {p.name: p.stat().st_mtime_ns for p in (out / "responses").iterdir()}
    again = run_cli("+sweep=behavior", *SMALL, "run_id=b")
    assert again.returncode == 0, again.stderr
    assert "0 behaviour chunk(s) run" in again.stderr
    assert {p.name: p.stat().st_mtime_ns for p in (out / "responses").iterdir()} == files


def test_both_experiments_share_a_run_and_agree_on_the_metric(run_cli, tmp_path):
    proc = run_cli(
        "+sweep=debug",
        "sweep.experiments=[patching,behavior]",
        "sweep.controls=[random_source]",  # its rows' `clean` is the unrelated source's metric
        "behavior.decoding=[greedy]",
        "behavior.max_new_tokens=4",
        "run_id=both",
    )
    assert proc.returncode == 0, proc.stderr
    run = tmp_path / "runs" / "both"
    assert list(run.glob("shards/*.parquet")) and (run / "summary.md").exists()
    summary = json.loads((run / "behavior" / "summary.json").read_text())
    consistency = summary["patching_consistency"]
    # debug sweep: 2 pairs, certain and uncertain prompts of each.
    assert consistency["n_prompts"] == 4 and consistency["max_abs_diff"] < 1e-4
    assert "band-mean restoration" in proc.stdout and "behavior (greedy answers)" in proc.stdout
