"""Every study can be reported: a head-only, attn_out-only, mlp_out-only and behaviour-only run
each give report.md and scorecard.json with exit 0, and "not run" (with the reason) for what
was not run."""

from __future__ import annotations

import json

import pytest

from hallu.analysis import verdicts
from hallu.analysis.scorecard import CRITERIA

from .conftest import TINY, run_module

pytestmark = pytest.mark.slow  # a launch and a report each (8-10 s on 2 CPU cores)

SMALL = [*TINY, "model.tiny.n_layers=2", "model.tiny.d_model=32", "model.tiny.d_mlp=64"]
PATCHING = ["sweep.experiments=[patching]", "sweep.pairs=2", "sweep.positions=last:1"]


def _card(run_cli, tmp_path, run_id: str, *args: str) -> tuple[dict[str, dict], str]:
    done = run_cli(*SMALL, *args, f"run_id={run_id}")
    assert done.returncode == 0, done.stderr[-2000:]
    run = tmp_path / "runs" / run_id
    report = run_module("hallu.report", str(run), "--n-boot", "100", "--n-perm", "100")
    assert report.returncode == 0, report.stderr[-2000:]
    card = json.loads((run / "scorecard.json").read_text())
    assert [e["criterion"] for e in card] == list(CRITERIA)
    return {e["criterion"]: e for e in card}, (run / "report.md").read_text()


@pytest.mark.parametrize(
    ("component", "named"),
    [("head", "head head 0"), ("attn_out", "attn_out"), ("mlp_out", "mlp_out")],
)
def test_a_sweep_of_another_component_reports_with_not_run_and_why(
    run_cli, tmp_path, component: str, named: str
):
    card, md = _card(run_cli, tmp_path, component, *PATCHING, f"sweep.component={component}")
    for e in card.values():
        assert e["verdict"] == verdicts.NOT_RUN, e
    why = card[verdicts.ASYMMETRY]["numbers"]
    assert f"this run's rows patch only {named}" in why and "resid_pre" in why
    assert "Strongest cells" in md and "Disconfirmation scorecard" in md


def test_a_behaviour_only_run_reports(run_cli, tmp_path):
    beh = ["+sweep=behavior", "sweep.pairs=2", "behavior.n_samples=1", "behavior.max_new_tokens=4"]
    card, md = _card(run_cli, tmp_path, "beh", *beh)
    for name in CRITERIA[2:]:
        assert card[name]["verdict"] == verdicts.NOT_RUN
    # 2 claims: below analysis.min_pairs, a behaviour verdict that ran is inconclusive
    ran = [card[n] for n in CRITERIA[:2] if card[n]["verdict"] != verdicts.NOT_RUN]
    for e in ran:
        assert (
            e["verdict"] == verdicts.INCONCLUSIVE
            and "fewer than analysis.min_pairs" in e["flags"][0]
        )
    assert "Disconfirmation scorecard" in md
