"""A shard of several pairs runs as one engine schedule (hallu.engine.patch.Patcher.run):
its rows equal those of the same pairs run one pair per shard, and the schedule shares batches
between pairs (fewer layer calls than the pairs run alone)."""

from __future__ import annotations

import math

import pytest

from hallu.run.worker import Worker

from .conftest import tiny_config

KEY = ("pair_id", "direction", "metric", "layer", "head", "position", "source_position")


def _rows(worker: Worker) -> tuple[dict, int]:
    """{cell key: row} over every shard of the worker's plan, and the layer calls it made
    (counted at each layer's MLP down projection, which every way of running a layer calls
    once on the whole batch: transformers' layer in traces, the engine's pieces in patches)."""
    calls = [0]

    def count(*_args):
        calls[0] += 1

    handles = [b.mlp.down_proj.register_forward_pre_hook(count) for b in worker.adapter.layers]
    out = {}
    try:
        for shard in worker.prep.plan().shards:
            for row in worker.run_shard(shard).to_pylist():
                out[tuple(row[k] for k in KEY)] = row
    finally:
        for h in handles:
            h.remove()
    return out, calls[0]


@pytest.mark.parametrize(
    "component,window", [("resid_pre", 1), ("mlp_out", 2), ("head", 1)], ids=str
)
def test_shard_schedule_equals_pairs_alone(component, window):
    common = [
        "sweep.pairs=6",
        "sweep.positions=all",
        f"sweep.component={component}",
        f"sweep.window={window}",
        "sweep.directions=[restore_confidence]",
        "metric.extra=[kl_to_clean]",
    ]
    together = Worker(tiny_config(*common, "sweep.pairs_per_shard=6"), "t")
    alone = Worker(tiny_config(*common, "sweep.pairs_per_shard=1"), "t")
    (shard,) = together.prep.plan().shards
    assert len(shard.pair_ids) == 6
    lengths = [len(together.prep.token_ids[p]["uncertain"]) for p in shard.pair_ids]
    assert len(set(lengths)) < len(lengths), lengths  # some pairs share a batch
    got, calls_together = _rows(together)
    want, calls_alone = _rows(alone)
    assert calls_together < calls_alone
    assert got.keys() == want.keys() and len(got) > 0
    worst = 0.0
    for key, a in got.items():
        b = want[key]
        for col, value in a.items():
            if col == "shard_id":
                continue
            if col == "patched":
                worst = max(worst, abs(value - b[col]))
            if isinstance(value, float) and math.isnan(value):
                assert math.isnan(b[col]), (key, col)
            elif isinstance(value, float):  # patched and what derives from it (restoration)
                assert math.isclose(value, b[col], rel_tol=1e-4, abs_tol=1e-5), (key, col)
            else:
                assert value == b[col], (key, col, value, b[col])
    assert worst <= 1e-5, worst
