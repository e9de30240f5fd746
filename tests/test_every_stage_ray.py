"""Every experiment on the Ray workers (issue 13, item 2), on a real local Ray (`num_cpus=2`).

`+sweep=full` (patching, controls, noise floor, behaviour) through `cluster=ray_local` stores the
same rows and the same noise_floor.json as `cluster=local`, while the launching process loads no
model at all (`hallu.engine.models.LOADS`, counted by the loader itself, stays unchanged in it;
the same count goes up when cluster=local runs). A worker killed while it generates loses
nothing: the chunk is run again on a worker and every answer is stored once.
"""

from __future__ import annotations

import json
import os
import re

import pytest

from hallu.behavior.schema import FOLDER, SCHEMA, plan_chunks
from hallu.engine import models
from hallu.run.launch import main
from hallu.run.local import run_behavior
from hallu.run.prepare import prepare
from hallu.store.local import LocalStore
from hallu.store.verify import read_verified

from .cluster_fixtures import (
    run_killing_a_worker,
    service_env,
    small_config,
    sorted_rows,
)
from .conftest import TINY

ray = pytest.importorskip("ray")
pytestmark = pytest.mark.slow  # full sweeps on a Ray cluster, a worker killed mid-chunk

SMALL_MODEL = ["model.tiny.n_layers=3", "model.tiny.d_model=32", "model.tiny.d_mlp=64"]
# Every stage, kept short: 3 pairs, last 3 positions, 2 sampled answers of 6 tokens.
FULL = [*TINY, *SMALL_MODEL, "+sweep=full", "sweep.pairs=3", "sweep.positions=last:3"]
FULL += ["behavior.n_samples=2", "behavior.max_new_tokens=6", "behavior.prompts_per_chunk=3"]
RAY = ["cluster=ray_local", "cluster.num_workers=2", "cluster.resources.num_cpus=1"]
FOUR_CONTROLS = {"same_class", "random_source", "norm_matched", "neutral_source"}
ANSWER = ["chunk_id", "prompt_id", "sample_index"]


@pytest.fixture(scope="module")
def cluster():
    """One local 2-CPU Ray for the module (see test_ray_executor.cluster for why not shared):
    the launches below with cluster=ray_local find Ray initialized and run on it."""
    with service_env():
        ray.init(address="local", num_cpus=2, include_dashboard=False, logging_level="ERROR")
        yield
        ray.shutdown()


def _one_thread(fn):
    """Run `fn` at one torch thread, as Ray gives a 1-CPU actor: rows agree bit for bit."""
    import torch

    threads = torch.get_num_threads()
    torch.set_num_threads(1)
    try:
        return fn()
    finally:
        torch.set_num_threads(threads)


def _same(a, b) -> bool:
    """Equal tables, NaN equal to NaN in the same place (norm_matched controls have no clean
    metric; Arrow's `equals` counts NaN != NaN)."""
    return a.schema == b.schema and a.to_pandas().equals(b.to_pandas())


def _answers(store: LocalStore):
    table = store.read_tables(FOLDER, SCHEMA).drop_columns(["run_id"])
    return table.sort_by([(c, "ascending") for c in ANSWER])


def _launch(root, *extra: str) -> int:
    """`python -m hallu.launch` in this process; how many models this process loaded."""
    before = sum(models.LOADS.values())
    assert main([*FULL, f"storage.root={root}", "run_id=r", *extra]) == 0
    return sum(models.LOADS.values()) - before


def test_full_sweep_on_the_workers_equals_local_and_the_driver_loads_no_model(
    cluster, tmp_path, capsys
):
    local_loads = _one_thread(lambda: _launch(tmp_path / "local"))
    assert local_loads == 1, "cluster=local loads the model once, in this process"
    capsys.readouterr()
    assert _launch(tmp_path / "ray", *RAY) == 0, "the Ray driver loaded a model"
    err = capsys.readouterr().err

    # Every stage's units ran on worker processes, none in this one; one replica per worker
    # (the worker that measured the noise floor made its other dtypes from its replica).
    line = next(ln for ln in err.splitlines() if ln.startswith("hallu: on 2 worker(s): "))
    for name, n in (("noise floor", 1), ("behavior", 6), ("patching", 2), ("controls", 8)):
        pids = re.search(rf"{name} {n} on worker pid\(s\) ([\d, ]+);", line)
        assert pids, (name, line)
        assert str(os.getpid()) not in pids.group(1).split(", ")
    loads = dict(re.findall(r"pid (\d+): (\d+)", line.split("model loads per worker")[1]))
    assert {p: int(n) for p, n in loads.items()} == {p: 1 for p in loads}, line

    local, on_ray = LocalStore(tmp_path / "local", "r"), LocalStore(tmp_path / "ray", "r")
    rows = read_verified(on_ray)
    assert _same(sorted_rows(rows), sorted_rows(read_verified(local)))
    assert set(rows["control"].to_pylist()) == {None, *FOUR_CONTROLS}, "controls are in the rows"
    assert _answers(on_ray).num_rows == 3 * 3 * (1 + 2)
    assert _same(_answers(on_ray), _answers(local))
    floor = [json.loads(s.read_file("noise_floor.json") or b"") for s in (local, on_ray)]
    assert floor[1] == floor[0] and floor[1]["n_prompts"] == 6

    # A rerun finds everything stored: nothing runs, nothing is loaded anywhere.
    capsys.readouterr()
    assert _launch(tmp_path / "ray", *RAY) == 0
    err = capsys.readouterr().err
    assert "0 shard(s) run, 10 already done" in err
    assert "0 behaviour chunk(s) run, 6 already done" in err
    assert "on 2 worker(s)" not in err


def test_worker_killed_while_generating_loses_no_answer(cluster, tmp_path):
    # Slow chunks (one prompt each, 24 new tokens, a deeper model) so the kill lands mid-chunk.
    cfg = small_config(
        "sweep.experiments=[behavior]",
        "sweep.pairs=6",
        "behavior.decoding=[greedy,sampled]",
        "behavior.n_samples=2",
        "behavior.max_new_tokens=24",
        "behavior.prompts_per_chunk=1",
        "behavior.batch_size=1",
        "model.tiny.n_layers=6",
        "model.tiny.d_model=128",
        "model.tiny.d_mlp=256",
        root=tmp_path,
    )
    prep = prepare(cfg)
    chunks = plan_chunks(cfg, {pid: set(c) for pid, c in prep.token_ids.items()})
    store = LocalStore(tmp_path / "ray", "kill")
    ran, _ = run_killing_a_worker(cfg, chunks, store, lambda: store.table_names(FOLDER), 180)
    assert ran == len(chunks) and store.table_names(FOLDER) == {c.chunk_id for c in chunks}

    reference = LocalStore(tmp_path / "local", "kill")
    _one_thread(lambda: run_behavior(prep, chunks, reference, {}))
    got = _answers(store)
    assert got.num_rows == 6 * 3 * (1 + 2), "every answer once"
    assert _same(got, _answers(reference))
