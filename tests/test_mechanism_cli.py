"""`python -m hallu.launch +sweep=mechanism` end to end on the tiny model: local and ray_local
store the same units and numbers, a rerun skips them, and the report shows the section."""

from __future__ import annotations

import json
import re

import numpy as np
import pytest

from hallu.analysis.scorecard import CRITERIA
from hallu.report.mechanism import read

from .conftest import run_module

SMALL = [
    "+sweep=mechanism", "prompts=marker_ladder", "sweep.pairs=3",
    "sweep.mechanism.alphas=[-1,0,1]", "sweep.mechanism.n_random=1",
    "sweep.mechanism.n_samples=2", "sweep.mechanism.patch_layers=[0,-1]",
    "sweep.mechanism.max_new_tokens=3", "sweep.mechanism.claims_per_shard=2",
]  # fmt: skip


def _tables(run_dir):
    t = read(str(run_dir))
    assert set(t) == {"capture", "steer", "patchgen", "heads"}
    return t


@pytest.mark.slow
def test_mechanism_runs_locally_and_on_ray_with_the_same_numbers(run_cli, tmp_path):
    local = run_cli(*SMALL, "run_id=local")
    assert local.returncode == 0, local.stderr
    assert "cosine(certain, uncertain)" in local.stdout
    again = run_cli(*SMALL, "run_id=local")
    assert again.returncode == 0 and "mechanism capture" not in again.stderr  # all units stored
    # A subprocess: the launch starts (and stops) its own local Ray, as the user's would.
    on_ray = run_cli(*SMALL, "run_id=ray", "cluster=ray_local", in_subprocess=True)
    assert on_ray.returncode == 0, on_ray.stderr[-2000:]
    # Both stages ran on the same actors, each of which loaded the model once.
    said = r"mechanism on (\d+) worker\(s\): .*model loads per worker (.*)"
    line = re.search(said, on_ray.stderr)
    assert line is not None, on_ray.stderr[-2000:]
    loads = [int(n) for n in re.findall(r"pid \d+: (\d+)", line.group(2))]
    assert loads and set(loads) == {1} and len(loads) <= int(line.group(1)), line.group(0)
    a, b = _tables(tmp_path / "runs" / "local"), _tables(tmp_path / "runs" / "ray")
    for kind in a:
        assert sorted(a[kind].unit_id.unique()) == sorted(b[kind].unit_id.unique()), kind
        assert len(a[kind]) == len(b[kind]), kind
    key = ["prompt_id", "layer", "site"]
    ca, cb = (t["capture"].sort_values(key).reset_index(drop=True) for t in (a, b))
    np.testing.assert_allclose(np.stack(ca.vector), np.stack(cb.vector), atol=1e-4)
    key = ["pair_id", "patch_direction", "layer", "head"]
    ha, hb = (t["heads"].sort_values(key).reset_index(drop=True) for t in (a, b))
    np.testing.assert_allclose(ha[["total", "direct"]], hb[["total", "direct"]], atol=1e-4)
    report = run_module("hallu.report", str(tmp_path / "runs" / "local"))
    assert report.returncode == 0, report.stderr
    md = (tmp_path / "runs" / "local" / "report.md").read_text()
    for heading in ("cosine(cert, unc)", "held-out AUROC", "declarative rate", "layer.head"):
        assert heading in md
    assert "| 3 | found | +1.00 |" in md  # the steering row of the found direction, last layer
    # a scorecard too, every criterion "not run" (a mechanism-only run has no patching rows)
    card = json.loads((tmp_path / "runs" / "local" / "scorecard.json").read_text())
    assert [e["criterion"] for e in card] == list(CRITERIA)
    assert {e["verdict"] for e in card} == {"not run"} and "Disconfirmation scorecard" in md


def test_a_bad_steer_layer_is_one_line(run_cli):
    out = run_cli(*SMALL, "sweep.mechanism.steer_layers=[9]", "mode=run")
    assert out.returncode == 2
    assert "sweep.mechanism.steer_layers: layer 9 is out of range" in out.stderr
    assert len(out.stderr.strip().splitlines()) == 1
