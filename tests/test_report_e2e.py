"""End to end: `hallu.launch +sweep=controls` on the tiny model, then `hallu.report` on it."""

from __future__ import annotations

import json
import subprocess

import pyarrow.parquet as pq
import pytest

from hallu.analysis.scorecard import CRITERIA

from .conftest import TINY, run_module
from .test_report import chromium_check

pytestmark = pytest.mark.slow

SMALL = [
    *TINY,
    "model.tiny.d_model=32",
    "model.tiny.d_mlp=64",
    "sweep.pairs=6",
    "sweep.positions=last:4",
]


def _report(*args: str) -> subprocess.CompletedProcess:
    return run_module("hallu.report", *args, "--n-boot", "300", "--n-perm", "300")


def test_controls_run_then_report_then_compare(run_cli, tmp_path):
    a = run_cli("+sweep=controls", *SMALL, "run_id=a")
    assert a.returncode == 0, a.stderr
    run = tmp_path / "runs" / "a"
    table = pq.read_table(run / "shards")
    controls = set(table["control"].to_pylist())
    assert controls == {None, "same_class", "random_source", "norm_matched", "neutral_source"}
    noise = json.loads((run / "noise_floor.json").read_text())
    assert noise["run_dtype"] == "float32" and noise["per_dtype"]["bfloat16"]
    # bf16 rounding moves a float32 model's metric: the measurement is not a constant.
    assert noise["per_dtype"]["bfloat16"]["precision_vs_float32"]["max"] > 0

    proc = _report(str(run))
    assert proc.returncode == 0, proc.stderr
    md = (run / "report.md").read_text()
    for criterion in CRITERIA:
        assert criterion in md
    assert "floor not measured" not in md and "No controls in this run" not in md
    assert f"{len(json.loads((run / 'run.json').read_text())['plan'])} of " in md  # timed shards
    # 2 experiment heatmaps, 4 controls x 2 directions, curves, headlines, noise
    assert chromium_check(run / "report.html", tmp_path) == "hallu report ok: 13 figures"

    # 2 pairs of the tiny random model: both have a gap of the wrong sign, so no pair is used
    # and there is nothing to compare; the message says so, with the numbers.
    few = run_cli("+sweep=debug", "model.tiny.n_layers=2", "run_id=few")
    assert few.returncode == 0, few.stderr
    proc = _report(str(run), "--compare", str(tmp_path / "runs" / "few"))
    assert proc.returncode == 2 and "run B 2A: 0 of 2 pairs used" in proc.stderr, proc.stderr
    assert "Traceback" not in proc.stderr
    b = run_cli("+sweep=debug", "sweep.pairs=6", "model.tiny.n_layers=2", "run_id=b")
    assert b.returncode == 0, b.stderr
    proc = _report(str(run), "--compare", str(tmp_path / "runs" / "b"))
    assert proc.returncode == 0, proc.stderr
    assert (run / "compare_b.html").stat().st_size > 0
    assert chromium_check(run / "compare_b.html", tmp_path).startswith("hallu report ok")
