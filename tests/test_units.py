"""hallu/run/units.py: every kind of unit is skipped once stored, and stored once.

A unit stored a second time (its first worker died after storing it) keeps the first result and
says so; the noise floor is measured once per run. No model and no Ray: real LocalStore files."""

from __future__ import annotations

import json

import pyarrow as pa

from hallu.behavior.schema import FOLDER, SCHEMA, Chunk
from hallu.mechanism.schema import Unit
from hallu.run.plan import Shard
from hallu.run.units import NoiseFloor, stage, store_result, unfinished, unit_id
from hallu.store import schema
from hallu.store.local import LocalStore

from .conftest import tiny_config


def _units():
    shard = Shard("s1", "restore_confidence", ("p1",), (0, 1), 2, 1.0)
    control = Shard("s2", "restore_confidence", ("p1",), (0, 1), 2, 1.0, control="same_class")
    return [shard, control, Chunk("c1", "greedy", (("p1", "certain"),)), NoiseFloor()] + [
        Unit("capture", "m1", ("claim",), (0,))
    ]


def _result(u):
    if isinstance(u, Shard):
        return schema.to_table({n: [] for n in schema.SCHEMA.names})
    if isinstance(u, Chunk):
        return SCHEMA.empty_table()
    if isinstance(u, NoiseFloor):
        return {"metric_floor": 0.5}
    return pa.table({"unit_id": ["m1"]})


def test_each_kind_is_skipped_once_stored_and_kept_when_stored_twice(tmp_path):
    store = LocalStore(tmp_path, "units")
    store.create(tiny_config(), {})
    units = _units()
    assert [stage(u) for u in units] == [
        "patching", "controls", "behavior", "noise floor", "mechanism capture"
    ]  # fmt: skip
    assert unfinished(store, units) == units
    for u in units:
        assert store_result(store, u, _result(u)) is False, unit_id(u)
    assert unfinished(store, units) == []
    assert store.table_names(FOLDER) == {"c1"} and store.done_shards() == {"s1", "s2"}

    # Again (a retried unit whose first worker had stored it): refused, the first result kept.
    for u in units:
        other = {"metric_floor": 9.0} if isinstance(u, NoiseFloor) else _result(u)
        assert store_result(store, u, other) is True, unit_id(u)
    assert json.loads(store.read_file("noise_floor.json") or b"") == {"metric_floor": 0.5}
