"""One analysis, every output: the report's tables, scorecard.json, summary.md and the terminal
print the numbers of one `pipeline.analyse` and can never disagree again.

Runs the toy model's +sweep=full (small), a patching-only run without a noise floor and a
behaviour-only run, then reads every output back.
"""

from __future__ import annotations

import json
import math
import subprocess
import sys
from dataclasses import replace
from pathlib import Path

import pytest

from hallu.analysis import scorecard, verdicts
from hallu.analysis.pipeline import analyse
from hallu.analysis.results import Options
from hallu.report import multirun
from hallu.report.html import main, open_any
from hallu.report.sections import CONTROLS_HEADER, LOCUS_HEADER, report_context

pytestmark = pytest.mark.slow

SMALL = ["sweep.pairs=6", "sweep.positions=last:3", "behavior.n_samples=1",
         "behavior.max_new_tokens=6"]  # fmt: skip
FAST = ["--n-boot", "300", "--n-perm", "300"]
OPTS = Options(n_boot=300, n_perm=300)


def _launch(root: Path, run_id: str, *args: str) -> subprocess.CompletedProcess:
    cmd = [sys.executable, "-m", "hallu.launch", *args, *SMALL]
    cmd += [f"storage.root={root}", f"run_id={run_id}"]
    out = subprocess.run(cmd, cwd=root, capture_output=True, text=True, timeout=600)
    assert out.returncode == 0, out.stderr[-3000:]
    return out


@pytest.fixture(scope="module")
def runs(tmp_path_factory) -> dict[str, tuple[Path, subprocess.CompletedProcess]]:
    """The toy's full sweep, a patching-only run with no noise floor, a behaviour-only run."""
    root = tmp_path_factory.mktemp("runs")
    out = {
        "full": _launch(root, "full", "+sweep=full"),
        "patching": _launch(root, "patching", "+sweep=controls", "sweep.noise_floor=false"),
        "behavior": _launch(root, "behavior", "+sweep=behavior"),
    }
    for name in out:
        assert main([str(root / name), *FAST]) == 0
    return {name: (root / name, proc) for name, proc in out.items()}


def _table(doc, header: list[str]) -> list[list]:
    return next(v[1] for k, v in doc.blocks if k == "table" and v[0] == header)


def _card(run: Path) -> dict[str, dict]:
    return {e["criterion"]: e for e in json.loads((run / "scorecard.json").read_text())}


def test_report_tables_equal_the_results_and_the_scorecard(runs):
    run, launched = runs["full"]
    ctx = report_context(open_any(str(run)), OPTS)
    res, card = ctx.res, _card(run)
    # scorecard.json is the results' scorecard, entry for entry
    assert [e.to_json()["criterion"] for e in res.card] == list(card) == list(scorecard.CRITERIA)
    assert verdicts.scorecard_json(res.card) == (run / "scorecard.json").read_text()

    controls = _table(ctx.doc, CONTROLS_HEADER)
    assert len(controls) == sum(len(d.controls) for d in res.directions.values()) == 8
    for row in controls:
        d = next(d for d in res.directions.values() if d.short == row[0])
        c = d.controls[row[1]]
        entry = card[f"{verdicts.CONTROLS} ({d.short})"]
        assert row[2] == c.n_pairs <= len(d.check.used)
        assert row[4] == c.real_change.fmt() and row[5] == c.change.fmt()
        assert row[3] == f"{abs(c.real_change.estimate):.3f} vs {abs(c.change.estimate):.3f}"
        assert row[6] == verdicts.fraction_text(c.real_fraction)
        assert row[7] == verdicts.fraction_text(c.toward_own) and row[8] == c.excess.fmt()
        # the scorecard prints the same numbers and the same side for this control
        line = verdicts.control_line(c, row[9])
        assert line in entry["numbers"]
        for cell in row[3:9]:
            assert cell.split(" [")[0] in line
        assert "nan" not in " ".join(str(x) for x in row)
    for d in res.directions.values():
        entry = card[f"{verdicts.CONTROLS} ({d.short})"]
        worst = min(d.controls.values(), key=lambda c: c.excess.lo)
        assert entry["estimate"] == worst.excess.estimate
        assert entry["interval"] == [worst.excess.lo, worst.excess.hi]

    locus = _table(ctx.doc, LOCUS_HEADER)
    entry = card[verdicts.LOCUS]
    for row in locus:
        d = next(d for d in res.directions.values() if d.short == row[0])
        assert row[1] == len(d.check.used) and d.locus is not None
        assert row[2] == d.locus.describe() and f"{d.short} {row[2]}" in entry["numbers"]
    a, b = (res.directions[n].locus for n in ("restore_confidence", "induce_tentativeness"))
    assert entry["estimate"] == b.first - a.first and entry["interval"] is not None

    # the headline: word for word in the terminal, summary.md, the report and the scorecard;
    # the terminal and summary.md resample as often as the report's default (2000 times)
    summary_md = (run / "summary.md").read_text()
    report_md = (run / "report.md").read_text()
    asym = card[verdicts.ASYMMETRY]
    for line in ctx.headline:
        assert line in report_md.splitlines()
    stored = open_any(str(run))
    default = analyse(stored.table, res.n_layers, stored.noise, None, replace(OPTS, n_boot=2000))
    assert len(scorecard.headline_lines(default)) == 3
    for line in scorecard.headline_lines(default):
        assert line in launched.stdout.splitlines()
        assert f"- {line}" in summary_md.splitlines()
    for d in res.directions.values():
        assert d.headline_text() in asym["numbers"]
    assert asym["estimate"] == res.difference.estimate

    # one noise floor, measured: the same value wherever a floor is printed
    floor = res.noise.gap_floor
    assert floor is not None and floor > 0
    assert json.loads((run / "summary.json").read_text())["noise_floor"] == floor
    assert f"noise floor {floor:.3g}" in report_md and "not measured" not in report_md
    assert "nan" not in report_md.replace("nanmean", "")


def test_every_scorecard_entry_that_ran_carries_its_numbers_in_fields(runs):
    ran = {
        "full": set(scorecard.CRITERIA),
        "patching": set(scorecard.CRITERIA[2:]),
        "behavior": set(scorecard.CRITERIA[:2]),
    }
    for name, (run, _) in runs.items():
        card = _card(run)
        assert list(card) == list(scorecard.CRITERIA), name
        for criterion, e in card.items():
            if criterion not in ran[name]:
                assert e["verdict"] == verdicts.NOT_RUN, (name, criterion)
                continue
            assert e["verdict"] != verdicts.NOT_RUN, (name, criterion, e["numbers"])
            assert isinstance(e["estimate"], float) and math.isfinite(e["estimate"]), e
            assert len(e["interval"]) == 2 and all(math.isfinite(x) for x in e["interval"]), e
            assert e["interval"][0] <= e["interval"][1], e
            assert e["n_pairs_used"] > 0 and e["n_pairs_excluded"] >= 0, e
            assert e["quantity"], e
    assert _card(runs["full"][0])[scorecard.TRACKING]["n_pairs_used"] == 6


def test_an_unmeasured_noise_floor_reads_not_measured_everywhere(runs):
    run, launched = runs["patching"]
    md = (run / "report.md").read_text()
    assert "noise floor not measured" in md
    assert "noise floor 0" not in md and "noise floor 0" not in (run / "scorecard.json").read_text()
    assert "Red line" not in md and "measured noise floor (red)" not in md
    assert json.loads((run / "summary.json").read_text())["noise_floor"] is None
    for line in launched.stdout.splitlines():
        if "band-mean restoration" in line:
            assert "noise floor not measured" in line


def test_multirun_shows_every_criterion_and_names_identical_studies(runs):
    studies = []
    for name in ("full", "full", "patching"):  # the same study twice, and another
        label = f"{name}{len(studies)}"
        study = multirun.Study(label, [f"x={label}"], "done")
        multirun._analyse(str(runs[name][0]), study, OPTS)
        studies.append(study)
    tabs = {title: rows for title, _, rows in multirun.tables(studies)}
    card = tabs["Disconfirmation scorecard, per study"]
    assert [r[0] for r in card] == list(scorecard.CRITERIA)
    full = _card(runs["full"][0])
    for row in card:
        e = full[row[0]]
        assert row[1].startswith(e["verdict"]) and f"{e['estimate']:.3f}" in row[1]
        assert row[1] == row[2]  # the same study twice
    assert multirun.identical(studies) == [["x=full0", "x=full1"]]
    assert "IDENTICAL STUDIES: x=full0 = x=full1" in multirun.identity_text(studies)
    assert multirun.identity_text(studies[1:]).startswith("Every study differs")
