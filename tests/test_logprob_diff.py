"""The logprob_diff metric against an independent teacher-forced reference (tests/naive.py)."""

from __future__ import annotations

import math

import pytest

from hallu.engine.hooks import capture_resid_pre, patched_logprobs
from hallu.engine.logprob_diff import from_config
from hallu.engine.models import load_tokenizer
from hallu.errors import UserError
from hallu.run.prepare import prepare
from hallu.run.worker import Worker

from .conftest import tiny_config
from .naive import naive_continuation_logprob

TOL = 1e-4
EXTRA = "metric.extra=[kl_to_clean,logprob_diff]"


def _naive_diff(model, tgt, conf, tent, src=None, cells=()):
    return naive_continuation_logprob(model, tgt, conf, src, cells) - naive_continuation_logprob(
        model, tgt, tent, src, cells
    )


@pytest.mark.parametrize("engine", ["fast", "hooks"])
def test_worker_rows_match_naive_teacher_forcing(engine):
    cfg = tiny_config(
        "sweep.pairs=1",
        "sweep.positions=all",
        "sweep.layers=[0,2]",
        "sweep.directions=[restore_confidence]",
        f"sweep.engine={engine}",
        EXTRA,
    )
    worker = Worker(cfg, "test")
    (shard,) = worker.prep.plan().shards
    rows = worker.run_shard(shard).to_pylist()
    lp = [r for r in rows if r["metric"] == "logprob_diff"]
    assert len(lp) == shard.n_cells and len(rows) == 3 * shard.n_cells
    ids = worker.prep.token_ids[lp[0]["pair_id"]]
    src, tgt = ids["certain"], ids["uncertain"]
    conf, tent = worker.prep.logprob_diff.confident_ids, worker.prep.logprob_diff.tentative_ids
    assert (
        len(conf) == 6 and len(tent) == 8
    )  # " Yes, that is right." / " Maybe, but I am not sure."
    clean, corrupted = (
        _naive_diff(worker.model, src, conf, tent),
        _naive_diff(worker.model, tgt, conf, tent),
    )
    assert abs(clean - corrupted) > 1e-3, "the test needs a pair whose metric differs"
    moved = 0
    for r in lp:
        assert abs(r["clean"] - clean) <= TOL and abs(r["corrupted"] - corrupted) <= TOL
        cell = (r["layer"], r["position"], r["source_position"])
        ref = _naive_diff(worker.model, tgt, conf, tent, src, [cell])
        assert abs(r["patched"] - ref) <= TOL, (cell, r["patched"], ref)
        gap = r["clean"] - r["corrupted"]
        assert math.isclose(r["restoration"], (r["patched"] - r["corrupted"]) / gap, rel_tol=1e-6)
        assert 0 < r["resolution"] <= abs(r["patched"]) * 2**-23
        if r["known"]:
            assert r["patched"] == r["corrupted"]
        moved += abs(r["patched"] - r["corrupted"]) > 1e-3
    assert engine == "hooks" or any(r["known"] for r in lp)
    assert moved > len(lp) // 4  # prompt patches do move the continuation's log-probabilities


def test_patching_every_position_of_a_layer_restores_exactly():
    """Every position of a layer, continuation included, restores at every layer; the prompt's
    positions alone restore only at layer 0, where the continuation's residual is its embedding
    (deeper, the continuation has already read the unpatched prompt)."""
    cfg = tiny_config("sweep.pairs=1", "sweep.directions=[restore_confidence]", EXTRA)
    worker = Worker(cfg, "test")
    metric = worker.prep.logprob_diff
    ids = next(iter(worker.prep.token_ids.values()))
    src, tgt = ids["certain"], ids["uncertain"]
    assert len(src) == len(tgt) and src != tgt
    model, layers = worker.model, worker.layers
    clean, corrupted = metric.unpatched(model, src), metric.unpatched(model, tgt)
    n = len(layers)

    def restoration(prompt_only: bool):
        out = []
        for cont in (metric.confident_ids, metric.tentative_ids):
            resid, _ = capture_resid_pre(model, layers, [*src, *cont])
            width = len(tgt) if prompt_only else len(tgt) + len(cont)
            whole = [tuple((layer, p, p) for p in range(width)) for layer in range(n)]
            out.append(patched_logprobs(model, layers, tgt, resid, whole, 2, cont))
        return ((out[0] - out[1]) - corrupted) / (clean - corrupted)

    everything, prompt = restoration(False), restoration(True)
    assert (everything - 1).abs().max().item() <= 1e-5, everything
    assert abs(prompt[0].item() - 1) <= 1e-5 and (prompt[1:] - 1).abs().min().item() > 1e-3
    whole = [(1, p, p) for p in range(len(tgt))]
    ref = _naive_diff(model, tgt, metric.confident_ids, metric.tentative_ids, src, whole)
    assert abs(((prompt[1] * (clean - corrupted)) + corrupted).item() - ref) <= TOL


def test_defaults_are_the_toy_answers_and_bad_continuations_name_the_key():
    cfg = tiny_config(EXTRA)
    tok = load_tokenizer(cfg.model)
    metric = from_config(cfg, tok)
    assert tok.convert_ids_to_tokens(list(metric.confident_ids)) == "yes , that is right .".split()
    assert tok.decode(list(metric.tentative_ids)) == "maybe , but i am not sure ."
    assert from_config(tiny_config(), tok) is None  # not asked for: nothing checked or run
    for key, text in [("confident_continuation", ""), ("tentative_continuation", " zzqq xyzzy")]:
        with pytest.raises(UserError, match=f"metric.{key}="):
            prepare(tiny_config(EXTRA, f"metric.{key}='{text}'"))
    with pytest.raises(UserError, match="sweep.component=mlp_out"):
        prepare(tiny_config(EXTRA, "sweep.component=mlp_out"))
