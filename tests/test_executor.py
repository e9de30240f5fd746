"""The one executor (hallu/run/executor.py) with cluster=local: every stage of a run goes through
one in-process runner, so the launching process loads the model once per run, whatever the
sweep (`hallu.engine.models.LOADS`, counted by the loader itself, as tests/test_every_stage_ray.py
counts it on Ray). run.json records the model's layer count, so the report needs no model."""

from __future__ import annotations

import json

import pytest
import torch

from hallu.engine import models
from hallu.run.launch import main
from hallu.store.local import LocalStore
from hallu.store.reader import Run, n_layers_of

from .conftest import TINY

SMALL_MODEL = ["model.tiny.n_layers=3", "model.tiny.d_model=32", "model.tiny.d_mlp=64"]
FULL = [*TINY, *SMALL_MODEL, "+sweep=full", "sweep.pairs=4", "sweep.positions=last:2"]
FULL += ["behavior.n_samples=2", "behavior.max_new_tokens=4", "behavior.prompts_per_chunk=4"]
MECHANISM = [
    *TINY, "+sweep=mechanism", "prompts=marker_ladder", "sweep.pairs=3",
    "sweep.mechanism.alphas=[-1,1]", "sweep.mechanism.n_random=1",
    "sweep.mechanism.n_samples=1", "sweep.mechanism.patch_layers=[-1]",
    "sweep.mechanism.max_new_tokens=2", "sweep.mechanism.claims_per_shard=2",
]  # fmt: skip


def _loads(*argv: str) -> int:
    """`python -m hallu.launch argv` in this process; how many models this process loaded."""
    before = sum(models.LOADS.values())
    assert main(list(argv)) == 0
    return sum(models.LOADS.values()) - before


def test_full_sweep_loads_the_model_once(tmp_path, capsys):
    # Patching, controls, behaviour (and below the noise floor) on one replica: one load.
    root = f"storage.root={tmp_path}"
    assert _loads(*FULL, "sweep.noise_floor=false", root, "run_id=a") == 1
    err = capsys.readouterr().err
    assert "behaviour chunk(s) run, 0 already done" in err and "shard(s) run, 0 already" in err
    # The noise floor measures on the same replica and makes the other dtypes from it in memory.
    loads = _loads(*FULL, root, "run_id=b")
    floor = json.loads((tmp_path / "b" / "noise_floor.json").read_text())
    others = [d for d in floor["per_dtype"] if d != floor["run_dtype"]]
    assert len(others) == 2 and loads == 1, (loads, floor["per_dtype"])
    assert all("batch" in floor["per_dtype"][d] for d in others), floor["per_dtype"]
    # A rerun finds every unit stored: nothing runs, nothing loads.
    assert _loads(*FULL, root, "run_id=b") == 0


def test_mechanism_loads_the_model_once_for_both_stages(tmp_path):
    assert _loads(*MECHANISM, f"storage.root={tmp_path}", "run_id=m") == 1
    store = LocalStore(tmp_path, "m")
    for kind in ("capture", "steer", "patchgen", "heads"):
        assert store.table_names(f"mechanism/{kind}"), kind
    assert (tmp_path / "m" / "mechanism" / "summary.md").is_file()


def test_run_json_records_n_layers_and_the_report_reads_it_without_the_model(tmp_path, capsys):
    only_patching = ["sweep.experiments=[patching]", "sweep.controls=[]", "sweep.noise_floor=false"]
    assert _loads(*FULL, *only_patching, f"storage.root={tmp_path}", "run_id=n") == 1
    meta = LocalStore(tmp_path, "n").read_meta()
    assert meta is not None and meta["n_layers"] == 3
    import pyarrow as pa

    rows = pa.table({"layer": [0, 1]})
    assert n_layers_of(Run("n", meta, rows)) == 3
    # A run.json from before n_layers (a hub model: no shape, no in-code spec) falls back on
    # the rows, and says so when the sweep did not cover every layer.
    old = {"config": {"model": {"name_or_path": "some/model"}, "sweep": {"layers": [0, 1]}}}
    capsys.readouterr()
    assert n_layers_of(Run("old", old, rows, location="runs/old")) == 2
    assert "records no n_layers" in capsys.readouterr().err
    # The command the report names for a run without a noise floor measures it into the run.
    from hallu.run import noise

    assert not (tmp_path / "n" / noise.FILE).exists()
    assert noise.main([str(tmp_path / "n")]) == 0
    assert json.loads((tmp_path / "n" / noise.FILE).read_text())["n_prompts"] == 8


@pytest.mark.skipif(torch.cuda.is_available(), reason="the failing load is a CUDA device on CPU")
def test_a_model_that_fails_to_load_leaves_no_run(tmp_path, capsys):
    # The in-process runner loads before run.json is written (the loader's own error, exit 2).
    argv = [*TINY, "+sweep=debug", "model.device=cuda", f"storage.root={tmp_path}", "run_id=x"]
    assert main(argv) == 2
    assert "no CUDA GPU is visible" in capsys.readouterr().err
    assert not (tmp_path / "x").exists()
