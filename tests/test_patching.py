"""The patching engine against invariants and the naive reference, on tiny random models."""

from __future__ import annotations

import json
import math
from pathlib import Path

import pytest
import torch

from hallu.config import TinySpec
from hallu.engine.hooks import capture_resid_pre, patched_logits
from hallu.engine.metrics import LogitDiff
from hallu.engine.models import decoder_layers
from hallu.engine.tiny import build_model, build_tokenizer
from hallu.run.worker import Worker

from .conftest import tiny_config
from .naive import final_logits, naive_patched_logits

SPECS = [
    TinySpec(n_layers=3, d_model=32, n_heads=4, n_kv_heads=2, d_mlp=64, seed=1),
    TinySpec(n_layers=4, d_model=48, n_heads=6, n_kv_heads=6, d_mlp=96, seed=2),
    TinySpec(n_layers=2, d_model=64, n_heads=8, n_kv_heads=1, d_mlp=128, seed=3),
]
TOK = build_tokenizer()


def _ids(text: str) -> list[int]:
    return TOK(text)["input_ids"]


PAIRS = [  # (source, target): equal lengths, the marker is the only difference
    (
        _ids("the moon is definitely made of rock , right ?"),
        _ids("the moon is probably made of rock , right ?"),
    ),
    (
        _ids("i think paris is definitely the capital"),
        _ids("i think paris is probably the capital"),
    ),
]


@pytest.fixture(params=SPECS, ids=lambda s: f"L{s.n_layers}d{s.d_model}kv{s.n_kv_heads}")
def model(request):
    return build_model(request.param, len(TOK))


def test_clean_into_clean_changes_nothing(model):
    layers = decoder_layers(model)
    ids = PAIRS[0][0]
    resid, logits = capture_resid_pre(model, layers, ids)
    cells = [((layer, p, p),) for layer in range(len(layers)) for p in range(len(ids))]
    out = patched_logits(model, layers, ids, resid, cells, batch_size=7)
    assert out.shape == (len(cells), logits.shape[0])
    assert (out - logits).abs().max().item() < 1e-5


def test_patching_every_position_of_a_layer_restores_exactly(model):
    layers = decoder_layers(model)
    metric = LogitDiff((TOK.convert_tokens_to_ids("is"),), (TOK.convert_tokens_to_ids("might"),))
    for src, tgt in PAIRS:
        resid, src_logits = capture_resid_pre(model, layers, src)
        _, tgt_logits = capture_resid_pre(model, layers, tgt)
        clean, corrupted = metric(src_logits).item(), metric(tgt_logits).item()
        assert abs(clean - corrupted) > 1e-3, "the test needs pairs whose metric differs"
        whole = [tuple((layer, p, p) for p in range(len(tgt))) for layer in range(len(layers))]
        patched = metric(patched_logits(model, layers, tgt, resid, whole, batch_size=16))
        restoration = (patched - corrupted) / (clean - corrupted)
        assert torch.allclose(restoration, torch.ones_like(restoration), atol=1e-5), restoration


def test_same_token_at_layer_zero_restores_nothing(model):
    layers = decoder_layers(model)
    metric = LogitDiff((TOK.convert_tokens_to_ids("is"),), (TOK.convert_tokens_to_ids("might"),))
    src, tgt = PAIRS[0]
    resid, _ = capture_resid_pre(model, layers, src)
    _, tgt_logits = capture_resid_pre(model, layers, tgt)
    same = [p for p in range(len(tgt)) if src[p] == tgt[p]]
    assert len(same) == len(tgt) - 1
    out = metric(patched_logits(model, layers, tgt, resid, [((0, p, p),) for p in same], 64))
    assert (out - metric(tgt_logits)).abs().max().item() < 1e-5


def test_engine_matches_naive_reference_cell_by_cell(model):
    layers = decoder_layers(model)
    for src, tgt in PAIRS:
        resid, _ = capture_resid_pre(model, layers, src)
        cells = [(layer, p, p) for layer in range(len(layers)) for p in range(len(tgt))]
        engine = patched_logits(model, layers, tgt, resid, [(c,) for c in cells], batch_size=5)
        for row, (layer, t, s) in enumerate(cells):
            ref = naive_patched_logits(model, tgt, src, layer, t, s)
            assert (engine[row] - ref).abs().max().item() < 1e-5, (layer, t)


def _unequal_prompt_file(tmp_path: Path) -> Path:
    """A user's JSONL file with its own column names and labels; one pair of unequal lengths."""
    rows = [
        ("sky", "sure", "The sky is definitely blue, right?"),
        ("sky", "unsure", "The sky is quite possibly blue, right?"),
        ("rock", "sure", "The moon is definitely made of rock, right?"),
        ("rock", "unsure", "The moon is probably made of rock, right?"),
    ]
    path = tmp_path / "unequal.jsonl"
    path.write_text(
        "".join(json.dumps({"id": p, "cond": c, "utterance": t}) + "\n" for p, c, t in rows)
    )
    return path


@pytest.mark.parametrize("positions", ["last:6", "[-1,-3,-5]"])
def test_worker_rows_match_naive_reference(tmp_path, positions):
    """Whole shards through the chat template and the user-file path, unequal lengths included."""
    path = _unequal_prompt_file(tmp_path)
    cfg = tiny_config(
        f"prompts.path={path}",
        "prompts.columns.pair_id=id",
        "prompts.columns.condition=cond",
        "prompts.columns.text=utterance",
        "prompts.conditions.certain=sure",
        "prompts.conditions.uncertain=unsure",
        "sweep.pairs=all",
        f"sweep.positions={positions}",
        "sweep.batch_size=4",
        "sweep.pairs_per_shard=2",
    )
    worker = Worker(cfg, "test")
    plan = worker.prep.plan()
    assert len(plan.shards) == 2
    worst = 0.0
    n_rows = 0
    for shard in plan.shards:
        rows = worker.run_shard(shard).to_pylist()
        n_rows += len(rows)
        assert len(rows) == shard.n_cells
        src_cond, tgt_cond = (
            ("certain", "uncertain")
            if shard.direction == "restore_confidence"
            else ("uncertain", "certain")
        )
        for r in rows:
            ids = worker.prep.token_ids[r["pair_id"]]
            src, tgt = ids[src_cond], ids[tgt_cond]
            assert r["position"] - len(tgt) == r["position_from_end"]
            assert r["source_position"] - len(src) == r["position_from_end"]
            ref = worker.prep.metric(
                naive_patched_logits(
                    worker.model, tgt, src, r["layer"], r["position"], r["source_position"]
                )
            )
            clean = worker.prep.metric(final_logits(worker.model, src)).item()
            corrupted = worker.prep.metric(final_logits(worker.model, tgt)).item()
            worst = max(
                worst,
                abs(r["patched"] - ref.item()),
                abs(r["clean"] - clean),
                abs(r["corrupted"] - corrupted),
            )
            expected = (ref.item() - corrupted) / (clean - corrupted)
            assert math.isclose(r["restoration"], expected, rel_tol=1e-4, abs_tol=1e-4)
    assert n_rows == plan.n_cells > 0
    assert worst < 1e-5, worst
    lengths = {
        pid: (len(v["certain"]), len(v["uncertain"])) for pid, v in worker.prep.token_ids.items()
    }
    assert lengths["sky"][0] != lengths["sky"][1], "the file must hold a pair of unequal lengths"
