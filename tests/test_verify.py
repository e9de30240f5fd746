"""Results checked against the plan (hallu/store/verify.py): each verdict made to happen on the
rows of a real run of the tiny model."""

from __future__ import annotations

import json
import shutil

import pyarrow as pa
import pytest

from hallu.errors import UserError
from hallu.run.local import run_local
from hallu.run.prepare import prepare
from hallu.store import integrity, verify
from hallu.store.local import LocalStore

from .conftest import tiny_config


@pytest.fixture(scope="module")
def run(tmp_path_factory):
    root = tmp_path_factory.mktemp("verify")
    cfg = tiny_config(
        "sweep.pairs=4", "sweep.pairs_per_shard=2", "sweep.positions=last:2", root=root
    )
    prep = prepare(cfg)
    plan = prep.plan()
    store = LocalStore(root, "v")
    run_local(cfg, plan, store, run_meta={"plan": plan.to_json()})
    return store, plan


def test_an_undisturbed_run_passes(run):
    store, plan = run
    verdict = verify.verified(store)
    assert verdict.ok and sorted(verdict.tables) == sorted(s.shard_id for s in plan.shards)
    assert sum(t.num_rows for t in verdict.tables.values()) == plan.n_cells


def _spec(store, plan, i=0):
    spec = plan.to_json()[i]
    return store.read_shard(spec["shard_id"]), spec


def test_duplicated_rows_are_named(run):
    store, plan = run
    table, spec = _spec(store, plan)
    doubled = pa.concat_tables([table, table.slice(0, 3)])
    assert verify.cells_problem(doubled, spec, ["logit_diff"]) == "3 cell(s) stored more than once"


def test_missing_cells_are_named(run):
    store, plan = run
    table, spec = _spec(store, plan)
    short = table.slice(0, table.num_rows - 2)
    n = spec["n_cells"]
    assert (
        verify.cells_problem(short, spec, ["logit_diff"])
        == f"{n - 2} of {n} planned cells for metric logit_diff"
    )


def test_rows_of_another_shard_are_named(run):
    store, plan = run
    table, spec = _spec(store, plan)
    other, _ = _spec(store, plan, 1)
    mixed = pa.concat_tables([table, other.slice(0, 1)])
    why = verify.cells_problem(mixed, spec, ["logit_diff"])
    assert why is not None and why.startswith("rows with shard_id") and "outside its plan" in why


def test_a_shard_with_a_foreign_pair_is_named(run):
    store, plan = run
    table, spec = _spec(store, plan)
    pairs = table["pair_id"].to_pylist()
    swapped = table.set_column(
        table.schema.get_field_index("pair_id"), "pair_id", pa.array(["elsewhere"] + pairs[1:])
    )
    why = verify.cells_problem(swapped, spec, ["logit_diff"])
    assert why == "rows with pair_id ['elsewhere'] outside its plan"


def test_a_marked_shard_outside_the_plan_is_ignored_and_a_lost_one_named(run, tmp_path):
    store, plan = run
    copy = LocalStore(tmp_path, "v")
    shutil.copytree(store.dir, copy.dir)
    extra = copy.read_shard(plan.shards[0].shard_id)
    copy.write_shard("0000000000000000", extra)  # marked, but in no plan
    verdict = verify.check(copy, plan.to_json(), copy.read_meta())
    assert verdict.ok and verdict.unplanned == ["done/0000000000000000.json"]
    lost = plan.shards[1].shard_id
    (copy.done_dir / f"{lost}.json").unlink()
    (copy.shard_dir / f"{lost}.parquet").unlink()
    with pytest.raises(UserError, match=f"1 missing .{lost}.*run_id=v"):
        verify.verified(copy)


def test_marker_checks_length_sha_and_rows():
    from .test_store import _table

    data = integrity.encode(_table(4))
    note = json.loads(integrity.marker("s", data, 4))
    assert integrity.decode("s", data, note, None).num_rows == 4
    with pytest.raises(integrity.ShardUnreadable, match="bytes, its marker says"):
        integrity.decode("s", data + b"x", note, None)
    with pytest.raises(integrity.ShardUnreadable, match="SHA-256"):
        integrity.decode("s", data[:-5] + b"PAR1!", note, None)
    with pytest.raises(integrity.ShardUnreadable, match="3 rows, its marker says 4"):
        integrity.decode("s", integrity.encode(_table(3)), {"rows": 4}, None)


def test_an_empty_done_marker_is_named_and_repaired(run, tmp_path):
    """A 0-byte marker (a crash or a full disk between create and write) is a failed shard: the
    report names it, a resume moves it aside and runs the shard again."""
    store, plan = run
    shutil.copytree(store.dir, tmp_path / "v")
    copy = LocalStore(tmp_path, "v")
    empty = sorted(copy.done_shards())[0]
    (copy.done_dir / f"{empty}.json").write_bytes(b"")
    with pytest.raises(UserError, match=rf"{empty}: its done marker is unreadable \(0 bytes\)"):
        verify.verified(copy)
    assert verify.repair(copy, plan.to_json(), copy.read_meta() or {}) == [empty]
    assert empty not in copy.done_shards()
    assert len(list((copy.dir / "quarantine").glob(f"{empty}.*.json"))) == 1
