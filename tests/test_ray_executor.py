"""The Ray executor on a real local Ray (`ray.init(num_cpus=2)`), shared by this module's tests.

Each run is compared with the in-process executor on the same config: the same rows, bit for bit
(both at one torch thread, as Ray gives a 1-CPU actor), every cell exactly once.
"""

from __future__ import annotations

import signal
import subprocess
import sys
import time

import pytest

from hallu.config import compose
from hallu.errors import UserError
from hallu.run.launch import main
from hallu.run.prepare import prepare
from hallu.run.ray import RayStats, run_ray
from hallu.store.local import LocalStore
from hallu.store.s3 import S3Store

from .cluster_fixtures import (
    cell_keys,
    local_reference,
    run_killing_a_worker,
    service_env,
    small_config,
    sorted_rows,
)

ray = pytest.importorskip("ray")
pytestmark = pytest.mark.slow  # runs on a Ray cluster: worker start-up, kills, a local reference


@pytest.fixture(scope="module")
def cluster():
    """One local Ray for the module, started with the test credentials in the environment (its
    worker processes keep them). Its own, not shared with other modules: a driver in this
    process joins a separately started head only with Ray's auth settings read at `import ray`
    (a token file in ~/.ray turns token auth on), so the in-process driver starts its own."""
    with service_env():
        ray.init(address="local", num_cpus=2, include_dashboard=False, logging_level="ERROR")
    yield ray.get_runtime_context().gcs_address
    ray.shutdown()


def _assert_same_rows(got, want):
    assert len(set(cell_keys(got))) == got.num_rows, "every cell exactly once"
    assert got.num_rows == want.num_rows
    assert sorted_rows(got).equals(want)


def test_ray_run_to_s3_gives_exactly_the_rows_of_the_local_run(cluster, moto, tmp_path):
    cfg = small_config(*moto.overrides("ray-s3"), root=tmp_path)
    plan = prepare(cfg).plan()
    store = S3Store.open(cfg.storage, "r1")
    stats = RayStats()
    assert run_ray(cfg, plan, store, {"plan": plan.to_json()}, stats) == len(plan.shards)
    assert stats.workers == 2 and stats.shards_run == len(plan.shards)
    assert stats.worker_failures == 0 and stats.requeued == 0
    keys = set(moto.keys("ray-s3/r1/"))
    assert "ray-s3/r1/run.json" in keys
    for s in plan.shards:
        assert f"ray-s3/r1/shards/{s.shard_id}.parquet" in keys
        assert f"ray-s3/r1/done/{s.shard_id}.json" in keys
    _assert_same_rows(store.read_results(), local_reference(cfg, tmp_path, plan))
    assert run_ray(cfg, plan, store, {}) == 0, "a finished run has nothing left to do"


def test_killed_worker_is_replaced_and_rows_stay_exactly_once(cluster, tmp_path):
    # Slower shards (more layers, small batches) so that the kill lands mid-shard.
    cfg = small_config(
        "+sweep=full",
        "sweep.controls=[]",  # the fault tests count experiment cells; controls have their own
        "sweep.noise_floor=false",
        "sweep.pairs=8",
        "sweep.pairs_per_shard=1",
        "model.tiny.n_layers=6",
        "sweep.batch_size=2",
        root=tmp_path,
    )
    plan = prepare(cfg).plan()
    store = LocalStore(tmp_path, "kill")
    # a worker of *this* Ray (a descendant of this process), once a shard has been stored
    ran, _ = run_killing_a_worker(cfg, plan.shards, store, store.done_shards)
    assert ran == len(plan.shards)
    _assert_same_rows(store.read_results(), local_reference(cfg, tmp_path, plan))


def test_model_that_fails_to_load_stops_the_run_with_its_error(cluster, tmp_path):
    """A model directory whose weights were never staged: config and tokenizer load (planning
    works), the weights do not; the run stops naming the worker and the cause, and writes
    nothing."""
    from hallu.config import TinySpec
    from hallu.engine.tiny import build_model, build_tokenizer

    tok = build_tokenizer()
    model = build_model(
        TinySpec(n_layers=2, d_model=32, n_heads=4, n_kv_heads=2, d_mlp=64), len(tok)
    )
    model.save_pretrained(tmp_path / "m")
    tok.save_pretrained(tmp_path / "m")
    for f in (tmp_path / "m").glob("*.safetensors"):
        f.unlink()
    cfg = small_config(
        "+sweep=debug",
        "cluster.num_workers=1",
        f"model.name_or_path={tmp_path / 'm'}",
        "model.tiny=null",
        "model.device=cpu",
        root=tmp_path,
    )
    plan = prepare(cfg).plan()
    store = LocalStore(tmp_path, "noweights")
    started = time.monotonic()
    with pytest.raises(
        UserError, match=r"worker \d .*could not load the model.*model\.name_or_path"
    ):
        run_ray(cfg, plan, store, {})
    assert time.monotonic() - started < 120
    assert not store.dir.exists(), "no run.json, no shards"


def test_shard_that_keeps_failing_stops_the_run_and_is_named(cluster, tmp_path):
    """Every write fails (the shard folder was replaced by a file): after
    cluster.max_shard_failures attempts the run stops, naming the shard."""
    cfg = small_config(
        "+sweep=debug", "cluster.num_workers=1", "cluster.max_shard_failures=2", root=tmp_path
    )
    plan = prepare(cfg).plan()
    store = LocalStore(tmp_path, "failing")
    store.create(cfg, {})
    store.shard_dir.rmdir()
    store.shard_dir.write_text("not a directory")
    with pytest.raises(UserError) as info:
        run_ray(cfg, plan, store, {})
    msg = str(info.value)
    assert "failed 2 times (cluster.max_shard_failures=2)" in msg
    assert any(s.shard_id in msg for s in plan.shards) and "NotADirectoryError" in msg
    assert f"run_id={store.run_id}" in msg


def test_killed_driver_is_resumed_by_rerunning(cluster, moto, tmp_path, capsys):
    """A driver (the CLI, joined to this module's Ray) killed after some shards; rerunning the
    same run_id runs only the rest, replaces nothing, and every cell is stored exactly once."""
    args = [
        sys.executable,
        "-m",
        "hallu.launch",
        "+sweep=full",
        "sweep.controls=[]",  # the fault tests count experiment cells; controls have their own
        "sweep.noise_floor=false",
        "sweep.pairs=16",
        "sweep.pairs_per_shard=2",
        "sweep.batch_size=2",
        "cluster=ray",
        f"cluster.address={cluster}",
        "cluster.num_workers=2",
        "cluster.resources.num_cpus=1",
        "cluster.resources.num_gpus=0",
        "run_id=resume",
        *moto.overrides("resume"),
    ]
    cfg = compose(args[3:])  # the subprocess's config, for the checks
    plan = prepare(cfg).plan()
    store = S3Store(cfg.storage, "resume")
    first = subprocess.Popen(args, stdout=subprocess.DEVNULL, stderr=subprocess.PIPE, text=True)
    deadline = time.monotonic() + 180
    while len(store.done_shards()) < 3 and first.poll() is None and time.monotonic() < deadline:
        time.sleep(0.2)
    first.send_signal(signal.SIGKILL)
    first.wait()
    before = store.done_shards()
    assert 3 <= len(before) < len(plan.shards), "the driver was killed part way"
    etags = {k: _etag(moto, k) for k in moto.keys("resume/resume/shards/")}

    # The rerun: the same command, in this process (it joins the same Ray).
    assert main(args[3:]) == 0
    err = capsys.readouterr().err
    assert f"{len(plan.shards) - len(before)} shard(s) run, {len(before)} already done" in err
    assert {k: _etag(moto, k) for k in etags} == etags, "no stored shard was replaced"
    rows = store.read_results()
    assert rows.num_rows == plan.n_cells == len(set(cell_keys(rows)))
    assert store.done_shards() == {s.shard_id for s in plan.shards}


def _etag(moto, key: str) -> str:
    return moto.client().head_object(Bucket=moto.bucket, Key=key)["ETag"]
