"""Run directories: run.json first, shard files never overwritten, resume skips finished work."""

from __future__ import annotations

import json

import pyarrow as pa
import pytest

from hallu.errors import UserError
from hallu.run.local import run_local
from hallu.run.prepare import prepare
from hallu.store import schema
from hallu.store.local import LocalStore

from .conftest import tiny_config


def _table(n: int, shard_id: str = "s1") -> pa.Table:
    cols = {f.name: [None] * n for f in schema.SCHEMA}
    cols.update(
        run_id=["r"] * n,
        shard_id=[shard_id] * n,
        layer=list(range(n)),
        patched=[0.5 * i for i in range(n)],
        direction=["restore_confidence"] * n,
    )
    return schema.to_table(cols)


def test_shard_round_trip_and_overwrite_refused(tmp_path):
    cfg = tiny_config(root=tmp_path)
    store = LocalStore(tmp_path, "r")
    store.create(cfg, {})
    assert json.loads((store.dir / "run.json").read_text())["study_hash"] == cfg.study_hash()
    store.write_shard("s1", _table(3))
    with pytest.raises(FileExistsError):
        store.write_shard("s1", _table(5))
    back = store.read_results()
    assert back.schema == schema.SCHEMA
    assert back.column("layer").to_pylist() == [0, 1, 2]
    assert store.done_shards() == {"s1"}
    assert not list(store.shard_dir.glob(".*")), "no temp files left behind"


def test_schema_rejects_missing_or_unknown_columns():
    cols = {f.name: [] for f in schema.SCHEMA}
    del cols["layer"]
    with pytest.raises(KeyError, match="layer"):
        schema.to_table(cols)
    with pytest.raises(KeyError, match="bogus"):
        schema.to_table({**{f.name: [] for f in schema.SCHEMA}, "bogus": []})


def test_rerun_with_other_config_is_refused_and_keeps_results(tmp_path):
    store = LocalStore(tmp_path, "r")
    store.create(tiny_config(root=tmp_path), {})
    store.write_shard("s1", _table(2))
    with pytest.raises(UserError, match="run_id=r.*different config"):
        store.check_compatible(tiny_config("sweep.pairs=3", root=tmp_path))
    assert store.done_shards() == {"s1"}


def test_resume_skips_finished_shards(tmp_path):
    cfg = tiny_config("+sweep=debug", root=tmp_path)
    plan = prepare(cfg).plan()
    store = LocalStore(tmp_path, "resume")
    # A driver that died after one shard: only that shard's file exists.
    first = plan.shards[0]
    from hallu.run.plan import Plan

    assert run_local(cfg, Plan((first,), plan.n_layers), store, {}) == 1
    before = (store.shard_dir / f"{first.shard_id}.parquet").stat().st_mtime_ns
    ran = run_local(cfg, plan, store, {})
    assert ran == len(plan.shards) - 1
    assert (store.shard_dir / f"{first.shard_id}.parquet").stat().st_mtime_ns == before
    rows = store.read_results()
    assert rows.num_rows == plan.n_cells
    keys = set(
        zip(
            *(rows[c].to_pylist() for c in ("direction", "pair_id", "layer", "position")),
            strict=True,
        )
    )
    assert len(keys) == rows.num_rows, "every cell exactly once"
    assert run_local(cfg, plan, store, {}) == 0
