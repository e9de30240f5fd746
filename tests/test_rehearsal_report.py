"""A rehearsal's report (issue 25, item 4): a run whose resolved config has
model.weights=random says so at the top of report.md/html, summary.md and scorecard.json and
gives no verdicts; the same run without it gives them.

run.json's config is where the report reads the key; the run here is the tiny model's, with
`weights: random` set in its run.json as a rehearsal launch records it.
"""

from __future__ import annotations

import json

import pytest

from hallu.report.rehearsal import NOTE
from hallu.report.summary import aggregate
from hallu.store.local import LocalStore

from .conftest import run_module
from .test_progress import QUICK

VERDICT_WORDS = ("Disconfirmation scorecard", "supports", "contradicts", "inconclusive")


@pytest.mark.slow  # a run and two reports
def test_rehearsal_report_and_scorecard_say_so_and_give_no_verdicts(run_cli, tmp_path):
    assert run_cli(*QUICK, "run_id=r").returncode == 0
    run = tmp_path / "runs" / "r"
    fast = ("--n-boot", "100", "--n-perm", "100")
    assert run_module("hallu.report", str(run), *fast).returncode == 0
    real = (run / "report.md").read_text()
    assert NOTE not in real and "(rehearsal)" not in real
    assert "Disconfirmation scorecard" in real and "inconclusive" in real
    assert isinstance(json.loads((run / "scorecard.json").read_text()), list)

    meta = json.loads((run / "run.json").read_text())
    meta["config"]["model"]["weights"] = "random"
    (run / "run.json").write_text(json.dumps(meta))
    proc = run_module("hallu.report", str(run), *fast)
    assert proc.returncode == 0, proc.stderr[-2000:]
    md = (run / "report.md").read_text()
    top = md.splitlines()[:4]
    assert any("(rehearsal)" in ln for ln in top) and any(NOTE in ln for ln in top), top
    assert not any(w in md for w in VERDICT_WORDS), md[:3000]
    assert "REHEARSAL: random weights (model.weights=random)" in (run / "report.html").read_text()
    assert json.loads((run / "scorecard.json").read_text()) == {
        "rehearsal": True, "note": NOTE, "verdicts": []
    }  # fmt: skip
    summary = aggregate(LocalStore(tmp_path / "runs", "r"), n_layers=3)
    assert summary["headline_lines"] == [NOTE]
    assert NOTE in (run / "summary.md").read_text()
