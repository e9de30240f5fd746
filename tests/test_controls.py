"""Control patches: their rows, their sources, and that they leave the experiment untouched."""

from __future__ import annotations

import functools
import math

import pyarrow as pa
import pytest
import torch

from hallu.config import DIRECTIONS
from hallu.errors import UserError
from hallu.run.controls import norm_matched
from hallu.run.plan import UNRELATED_TEXT, same_class_partner, unrelated_ids
from hallu.run.prepare import prepare
from hallu.run.worker import Worker
from hallu.store import schema

from .conftest import tiny_config
from .naive import final_logits

SWEEP = ["sweep.pairs=3", "sweep.positions=last:4", "sweep.pairs_per_shard=3"]


def test_norm_matched_vectors_are_drawn_like_the_real_activations_at_each_layer():
    gen = torch.Generator().manual_seed(0)
    resid = torch.randn(3, 400, 16, generator=gen) * torch.arange(1, 17).float() + 5.0
    resid[..., 0] = 8192.0  # an outlier dimension, constant as on model=planted
    rand = norm_matched(resid, "0/restore_confidence/p")
    assert torch.equal(rand[..., 0], resid[..., 0])  # the outlier stays in its own dimension
    for layer in range(3):  # each dimension's mean and spread over positions, per layer
        r, x = resid[layer], rand[layer]
        assert torch.allclose(x.mean(0), r.mean(0), atol=0.25 * r.std(0).max().item())
        assert torch.allclose(x.std(0), r.std(0), rtol=0.15)
    norms = rand.norm(dim=-1) / resid.norm(dim=-1)
    assert (norms - 1).abs().max() < 0.01  # the norm matches in distribution
    cos = torch.nn.functional.cosine_similarity(rand[..., 1:], resid[..., 1:], dim=-1)
    assert cos.abs().max() < 0.9
    assert torch.equal(rand, norm_matched(resid, "0/restore_confidence/p"))  # seeded
    assert not torch.equal(rand, norm_matched(resid, "0/restore_confidence/q"))


def test_same_class_partner_is_another_pair_long_enough():
    ids = {"a": {"u": [1] * 5}, "b": {"u": [1] * 3}, "c": {"u": [1] * 6}}
    assert same_class_partner(ids, "a", "u") == "c"  # b is too short
    assert same_class_partner(ids, "c", "u") == "a"  # none long enough: the longest other
    assert same_class_partner(ids, "b", "u") == "c"


def test_control_rows_beside_unchanged_experiment_rows(tmp_path):
    plain = tiny_config(*SWEEP, root=tmp_path)
    with_controls = tiny_config(
        *SWEEP,
        "sweep.controls=[same_class,random_source,norm_matched,neutral_source]",
        root=tmp_path,
    )
    plan0, plan = prepare(plain).plan(), prepare(with_controls).plan()
    real = [s for s in plan.shards if s.control is None]
    assert [s.shard_id for s in real] == [s.shard_id for s in plan0.shards]
    worker = Worker(with_controls, "r")
    tables = {(s.direction, s.control): worker.run_shard(s) for s in plan.shards}
    table = pa.concat_tables(tables.values())
    assert table.schema == schema.SCHEMA and "control" in table.schema.names
    n_layers = 3
    for (direction, control), t in tables.items():
        rows = t.to_pylist()
        assert {r["control"] for r in rows} == {control}
        assert len(rows) == 3 * n_layers * 4, (direction, control)
        real_rows = {
            (r["pair_id"], r["layer"], r["position"]): r
            for r in tables[(direction, None)].to_pylist()
        }
        for r in rows:
            twin = real_rows[(r["pair_id"], r["layer"], r["position"])]
            # Controls are measured toward their own source's metric, from the real target's.
            assert r["corrupted"] == twin["corrupted"]
            if control is not None:
                assert r["clean"] == pytest.approx(
                    _own_source_metric(worker, r, control), abs=1e-4, nan_ok=True
                )
            if r["position_from_end"] == -1 and control in ("same_class", "random_source"):
                assert r["source_token"] == r["token"] == "[/INST]"  # aligned from the end
        if control == "random_source":
            words = {r["source_token"] for r in rows}
            assert words & set(UNRELATED_TEXT.lower().replace("?", " ?").split())
        if control == "norm_matched":
            assert {r["source_token"] for r in rows} == {"<random>"}
    # A same-class source differs from the target only in its claim: patching it at the last
    # layer's last position must move the metric (it is a different prompt's final state).
    sc = tables[("restore_confidence", "same_class")].to_pylist()
    last = [r for r in sc if r["layer"] == n_layers - 1 and r["position_from_end"] == -1]
    assert any(abs(r["patched"] - r["corrupted"]) > 1e-4 for r in last)


def _own_source_metric(worker: Worker, row: dict, control: str) -> float:
    """The metric of the control's source prompt, from an independent forward pass (NaN for
    norm_matched, whose source is a random vector, not a prompt)."""
    prep = worker.prep
    target_cond = DIRECTIONS[row["direction"]][1]
    if control == "norm_matched":
        return math.nan
    if control == "neutral_source":
        ids = prep.token_ids[row["pair_id"]]["neutral"]
    elif control == "same_class":
        ids = prep.token_ids[same_class_partner(prep.token_ids, row["pair_id"], target_cond)][
            target_cond
        ]
    else:
        ids = unrelated_ids(prep.tokenizer, prep.cfg.prompts, row["n_tokens"])
    return _metric_of(worker, tuple(ids))


@functools.cache
def _metric_of(worker: Worker, ids: tuple[int, ...]) -> float:
    """One forward pass per distinct source prompt (the rows of a pair share their source)."""
    return float(worker.prep.metric(final_logits(worker.model, list(ids))))


def test_same_class_needs_two_pairs(tmp_path):
    cfg = tiny_config("sweep.pairs=1", "sweep.controls=[same_class]", root=tmp_path)
    with pytest.raises(UserError, match="sweep.controls.*2 or more"):
        prepare(cfg).plan()


@pytest.mark.slow
def test_controls_through_the_fast_engine_equal_the_hook_route(tmp_path):
    """Every control's shards run by the fast engine's schedule and by one hook-route forward per
    cell: the same cells, patched metrics within 1e-5 (float32); known cells are the target's."""
    controls = ["same_class", "random_source", "norm_matched", "neutral_source"]
    args = [*SWEEP, "sweep.pairs=2", "sweep.directions=[restore_confidence]"]
    args.append(f"sweep.controls=[{','.join(controls)}]")
    rows: dict[str, dict[str, list[dict]]] = {}
    for engine in ("fast", "hooks"):
        cfg = tiny_config(*args, f"sweep.engine={engine}", root=tmp_path / engine)
        worker = Worker(cfg, "r")
        for s in prepare(cfg).plan().shards:
            if s.control is not None:
                got = worker.run_shard(s).to_pylist()
                rows.setdefault(s.control, {}).setdefault(engine, []).extend(got)
    key = ("direction", "pair_id", "layer", "position", "source_position")
    for control in controls:
        fast, hooks = rows[control]["fast"], rows[control]["hooks"]
        assert [tuple(r[k] for k in key) for r in fast] == [tuple(r[k] for k in key) for r in hooks]
        diff = max(abs(a["patched"] - b["patched"]) for a, b in zip(fast, hooks, strict=True))
        assert diff < 1e-5, (control, diff)
        for a, b in zip(fast, hooks, strict=True):
            assert a["clean"] == pytest.approx(b["clean"], abs=1e-5, nan_ok=True)
        assert not any(r["known"] for r in hooks)
        known = [r for r in fast if r["known"]]
        assert all(r["patched"] == r["corrupted"] for r in known)
        if control == "norm_matched":
            assert not known, control  # a random vector is never the target's own activation
        else:  # the template's closing tokens: the same embedding at layer 0
            assert known, control
            assert all(r["layer"] == 0 or r["position"] == r["source_position"] for r in known)
