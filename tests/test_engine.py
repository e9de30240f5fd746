"""The fast engine against the naive one-forward-per-cell reference (tests/naive.py).

Every optimisation is switched on alone and in every combination, on several seeds, pairs of
equal and unequal length (positions aligned from the end), every component, windows, GQA heads,
and every model family; the limit is 1e-4 max abs difference of the last-position logits.
"""

from __future__ import annotations

import dataclasses
import itertools

import pytest
import torch

from hallu.bench import parse_args
from hallu.engine.adapters import Adapter
from hallu.engine.attribution import screen
from hallu.engine.cells import is_known, known_cells, make_cells, patch_cells, shared_prefix
from hallu.engine.fast import BatchOptions, plan_batches, trace
from hallu.engine.metrics import LogitDiff, resolution
from hallu.errors import UserError
from hallu.run.worker import Worker

from .conftest import tiny_config
from .families import build, random_pair
from .matmuls import WeightMatmuls
from .naive import final_logits, naive_component_logits

TOL = 1e-4


def _naive(model, src, tgt, component, cells):
    return torch.stack(
        [
            naive_component_logits(
                model, tgt, src, component, list(c.layers()), c.position, c.source_position, c.head
            )
            for c in cells
        ]
    )


def _aligned_from_end(src, tgt, k):
    return [(len(tgt) - j, len(src) - j) for j in range(k, 0, -1)]


# Each optimisation's off switch: resume, suffix, batching (one row per forward, or every
# position merged into big batches), known cells.
SWITCHES = list(itertools.product([True, False], repeat=4))


@pytest.mark.parametrize("seed", [11, 12, 13])
@pytest.mark.parametrize("lengths", [(9, 9), (8, 10)], ids=["equal", "unequal"])
def test_every_optimisation_alone_and_combined_matches_naive(seed, lengths):
    model = build("llama", seed, n_layers=3, d=32, heads=4, kv=2)
    ad = Adapter(model)
    src, tgt = random_pair(seed, n_target=lengths[1], n_source=lengths[0], first_diff=3)
    positions = (
        [(t, t) for t in range(len(tgt))]
        if len(src) == len(tgt)
        else _aligned_from_end(src, tgt, min(len(src), len(tgt)))
    )
    cells = make_cells("resid_pre", range(3), positions, 3)
    ref = _naive(model, src, tgt, "resid_pre", cells)
    source, target = trace(ad, src), trace(ad, tgt)
    n_known = []
    for resume, suffix, batched, skip_known in SWITCHES:
        opts = BatchOptions(
            resume=resume,
            suffix=suffix,
            max_rows=64 if batched else 1,
            target_tokens=10_000 if batched else 1,
        )
        out, known = patch_cells(ad, "resid_pre", source, target, cells, opts, skip_known)
        worst = (out - ref).abs().max().item()
        assert worst <= TOL, (resume, suffix, batched, skip_known, worst)
        n_known.append(sum(known))
    # Known, only when skipping is on: the shared leading tokens at every layer (equal lengths),
    # and layer 0 wherever the two tokens are equal (a Llama's layer-0 input is the token's
    # embedding, whatever its position), aligned or not.
    expected = sum(
        is_known(c, src, tgt) or (c.layer == 0 and src[c.source_position] == tgt[c.position])
        for c in cells
    )
    assert expected > (9 if len(src) == len(tgt) else 0)
    assert set(n_known) == {0, expected}


@pytest.mark.parametrize("seed", [5, 6])
@pytest.mark.parametrize("family", ["llama", "mistral", "qwen2", "gpt2", "gpt_neox"])
def test_every_component_and_family_matches_naive(family, seed):
    model = build(family, seed=seed, n_layers=3, d=32, heads=4, kv=2)
    ad = Adapter(model)
    src, tgt = random_pair(seed, n_target=8, n_source=8, first_diff=3)
    positions = [(2, 2), (3, 3), (5, 5), (7, 7)]  # a known position, the first difference, ...
    for component, window in [
        ("resid_pre", 1),
        ("attn_out", 1),
        ("mlp_out", 1),
        ("attn_out", 2),
        ("mlp_out", 3),
        ("head", 1),
    ]:
        cells = make_cells(
            component, [0, 2] if window == 1 else [0, 1], positions, 3, window, ad.n_heads
        )
        source, target = trace(ad, src, [component]), trace(ad, tgt, [component])
        out, known = patch_cells(
            ad, component, source, target, cells, BatchOptions(target_tokens=40)
        )
        worst = (out - _naive(model, src, tgt, component, cells)).abs().max().item()
        assert worst <= TOL, (family, component, window, worst)
        assert any(known) and not all(known)


def test_gqa_heads_are_query_heads():
    """With 8 query heads sharing 2 key/value heads, each query head is its own cell."""
    model = build("llama", seed=3, n_layers=2, d=64, heads=8, kv=2)
    ad = Adapter(model)
    src, tgt = random_pair(3, 8, 8, first_diff=2)
    cells = make_cells("head", [0], [(2, 2)], 2, 1, ad.n_heads)
    assert [c.head for c in cells] == list(range(8))
    source, target = trace(ad, src, ["head"]), trace(ad, tgt, ["head"])
    out, _ = patch_cells(ad, "head", source, target, cells)
    assert (out - _naive(model, src, tgt, "head", cells)).abs().max().item() <= TOL
    # Heads sharing a key/value head still give different results.
    assert (out[0] - out[1]).abs().max().item() > 1e-4


def test_memory_budget_splits_batches_and_keeps_the_numbers():
    model = build("llama", seed=7, n_layers=3, d=32, heads=4, kv=2)
    ad = Adapter(model)
    src, tgt = random_pair(7, 10, 10, first_diff=2)
    cells = make_cells("resid_pre", range(3), [(t, t) for t in range(10)], 3)
    source, target = trace(ad, src), trace(ad, tgt)
    big, _ = patch_cells(ad, "resid_pre", source, target, cells, BatchOptions(target_tokens=10_000))
    small, _ = patch_cells(ad, "resid_pre", source, target, cells, BatchOptions(memory_bytes=1))
    assert (big - small).abs().max().item() <= TOL

    starts = [(t, layer) for t in range(10) for layer in range(3)]
    by_budget = plan_batches(starts, 10, 64, lambda s: s * 100, 100 * 10 * 4, 10_000)
    assert sorted(i for b in by_budget for i in b) == list(range(30))
    for batch in by_budget:  # rows x suffix length of the batch's first position fit the budget
        s = 10 - min(starts[i][0] for i in batch)
        assert len(batch) * s * 100 <= 4000
    merged = plan_batches(starts, 10, 64, lambda s: 1, 10**9, 10_000)
    assert len(merged) == 1
    per_position = plan_batches(starts, 10, 64, lambda s: 1, 10**9, 1)
    assert [sorted({starts[i][0] for i in b}) for b in per_position] == [[t] for t in range(10)]


def test_known_rule():
    src, tgt = [1, 2, 3, 9, 5], [1, 2, 3, 4, 5]
    assert shared_prefix(src, tgt) == 3
    cells = make_cells("resid_pre", [0, 1], [(t, t) for t in range(5)], 2)
    assert [c.position for c in cells if is_known(c, src, tgt)] == [0, 1, 2, 0, 1, 2]
    shifted = make_cells("resid_pre", [0], [(0, 1), (1, 2)], 1)
    assert not any(is_known(c, [7, 1, 2, 3], [1, 2, 3]) for c in shifted)


@pytest.mark.parametrize("family", ["llama", "gpt2"])
def test_known_by_value(family):
    """A patch that writes the target's own activation is known, beyond the tokens' rule: layer 0
    where the tokens agree; at shifted positions too for a Llama (its layer-0 input is the
    token's embedding) but not for GPT-2 (which adds the absolute position's embedding). Known or
    not, every cell equals the naive reference."""
    model = build(family, seed=41, n_layers=2, d=32, heads=4, kv=2)
    ad = Adapter(model)
    tgt = [5, 6, 7, 8, 9, 10, 11, 12]
    src = [5, 6, 20, 21, 9, 10, 11, 12]  # differs at 2-3
    cells = make_cells("resid_pre", [0, 1], [(t, t) for t in range(8)] + [(5, 4)], 2)
    source, target = trace(ad, src), trace(ad, tgt)
    known = known_cells("resid_pre", source, target, cells, ad.head_dim)
    got = {(c.layer, c.position, c.source_position) for c, k in zip(cells, known) if k}  # noqa: B905
    # The tokens' rule: 0-1 at both layers; by value: layer 0 at 4-7 (same token, same place).
    # (5, 4) reads another token (9 for 10): never known.
    assert got == {(0, 0, 0), (0, 1, 1), (1, 0, 0), (1, 1, 1)} | {(0, t, t) for t in range(4, 8)}
    shifted_src = [5, 5, 6, 7, 8, 9, 10, 11]  # the target's token 6 (position 1) sits at 2
    moved = make_cells("resid_pre", [0, 1], [(1, 2)], 2)
    out, flags = patch_cells(ad, "resid_pre", trace(ad, shifted_src), target, moved)
    assert flags == [family == "llama", False]
    ref = _naive(model, shifted_src, tgt, "resid_pre", moved)
    assert (out - ref).abs().max().item() <= TOL


@pytest.mark.parametrize("component", ["resid_pre", "attn_out", "mlp_out", "head"])
def test_the_value_rule_alone_for_every_component(component):
    """A source whose activations are the target's (its token ids hidden, so the tokens' rule
    says nothing) makes every cell known: every layer, position, head and window; one changed
    value unknows exactly the cells that write it; a real other prompt leaves some to compute."""
    model = build("llama", seed=43, n_layers=3, d=32, heads=4, kv=2)
    ad = Adapter(model)
    src, tgt = random_pair(43, n_target=7, n_source=7, first_diff=2)
    target = trace(ad, tgt, [component])
    twin = dataclasses.replace(target, ids=[-1] * len(tgt))
    # A second twin differs in one value: layer 1, position 4 (head 2 only, for heads).
    acts = (target.resid if component == "resid_pre" else target.sites[component]).clone()
    hd = ad.head_dim
    acts[1, 4, 2 * hd : 3 * hd] += 1.0
    if component == "resid_pre":
        changed = dataclasses.replace(twin, resid=acts)
    else:
        changed = dataclasses.replace(twin, sites={component: acts})
    for window in (1, 2):
        cells = make_cells(component, range(3), [(t, t) for t in range(7)], 3, window, ad.n_heads)
        assert not any(is_known(c, twin.ids, target.ids) for c in cells)
        assert all(known_cells(component, twin, target, cells, hd))
        got = known_cells(component, changed, target, cells, hd)
        touched = [1 in c.layers() and c.position == 4 and c.head in (None, 2) for c in cells]
        assert got == [not t for t in touched]
        other = known_cells(component, trace(ad, src, [component]), target, cells, hd)
        assert any(other) and not all(other)


@pytest.mark.parametrize(
    "component,window", [("resid_pre", 1), ("head", 1), ("mlp_out", 2)], ids=str
)
def test_worker_rows_for_components(component, window):
    cfg = tiny_config(
        "sweep.pairs=1",
        "sweep.positions=last:5",
        "sweep.layers=[0,2]",
        f"sweep.component={component}",
        f"sweep.window={window}",
        "sweep.directions=[restore_confidence]",
    )
    worker = Worker(cfg, "test")
    (shard,) = worker.prep.plan().shards
    rows = worker.run_shard(shard).to_pylist()
    n_heads = worker.adapter.n_heads
    assert len(rows) == shard.n_cells == 2 * 5 * (n_heads if component == "head" else 1)
    ids = worker.prep.token_ids[rows[0]["pair_id"]]
    src, tgt = ids["certain"], ids["uncertain"]
    for r in rows[:: max(1, len(rows) // 8)]:
        assert r["component"] == component
        assert r["layer_window"] == min(window, 3 - r["layer"])
        assert (r["head"] is not None) == (component == "head")
        layers = list(range(r["layer"], r["layer"] + r["layer_window"]))
        ref = naive_component_logits(
            worker.model, tgt, src, component, layers, r["position"], r["source_position"],
            r["head"],
        )  # fmt: skip
        assert abs(worker.prep.metric(ref).item() - r["patched"]) <= TOL
        if r["known"]:
            assert r["patched"] == r["corrupted"]


def test_hook_engine_gives_the_same_rows():
    rows = {}
    for engine in ("fast", "hooks"):
        cfg = tiny_config("sweep.pairs=1", "sweep.positions=all", f"sweep.engine={engine}")
        worker = Worker(cfg, "test")
        rows[engine] = [
            r for s in worker.prep.plan().shards for r in worker.run_shard(s).to_pylist()
        ]
    fast, hooks = rows["fast"], rows["hooks"]
    assert len(fast) == len(hooks) > 0
    assert any(r["known"] for r in fast) and not any(r["known"] for r in hooks)
    for a, b in zip(fast, hooks, strict=True):
        assert (a["layer"], a["position"], a["direction"]) == (
            b["layer"],
            b["position"],
            b["direction"],
        )
        assert abs(a["patched"] - b["patched"]) <= TOL


def test_bad_component_settings_name_the_key():
    with pytest.raises(UserError, match="sweep.window=3"):
        tiny_config("sweep.window=3")
    cfg = tiny_config("sweep.component=head", "sweep.engine=hooks")
    with pytest.raises(UserError, match="sweep.component=head needs the fast engine"):
        Worker(cfg, "test")


def test_bench_arguments():
    args = parse_args(["--gpu", "--gpu-layers", "2", "--gpu-tokens", "16"])
    assert args.gpu and args.gpu_layers == 2 and args.gpu_tokens == 16
    assert parse_args([]).case == ["a", "b", "c"] and parse_args([]).repeats == 3
    assert parse_args(["--case", "b", "--repeats", "1"]).case == ["b"]
    for bad in (["--repeats", "0"], ["--gpu-layers", "-1"], ["--case", "d"], ["--shape", "7b"]):
        with pytest.raises(SystemExit):
            parse_args(bad)


def test_extra_metric_rows_and_resolution():
    cfg = tiny_config(
        "sweep.pairs=1",
        "sweep.positions=last:3",
        "sweep.directions=[restore_confidence]",
        "metric.extra=[kl_to_clean]",
    )
    worker = Worker(cfg, "test")
    (shard,) = worker.prep.plan().shards
    rows = worker.run_shard(shard).to_pylist()
    by_metric = {m: [r for r in rows if r["metric"] == m] for m in ("logit_diff", "kl_to_clean")}
    assert len(by_metric["logit_diff"]) == len(by_metric["kl_to_clean"]) == shard.n_cells
    ids = worker.prep.token_ids[rows[0]["pair_id"]]
    src, tgt = ids["certain"], ids["uncertain"]
    clean_p = torch.log_softmax(final_logits(worker.model, src), -1)
    for r in by_metric["kl_to_clean"]:
        assert r["clean"] == 0.0 and r["corrupted"] > 0
        ref = naive_component_logits(
            worker.model, tgt, src, "resid_pre", [r["layer"]], r["position"], r["source_position"]
        )
        kl = (clean_p.exp() * (clean_p - torch.log_softmax(ref, -1))).sum().item()
        assert abs(kl - r["patched"]) <= TOL
    for r in by_metric["kl_to_clean"]:  # float32 spacing at the value
        assert 0 < r["resolution"] <= max(abs(r["patched"]), 1e-30) * 2**-23
    metric = worker.prep.metric
    ids_used = list(metric.confident_ids) + list(metric.tentative_ids)
    for r in by_metric["logit_diff"]:  # float32 spacing at the largest logit subtracted
        ref = naive_component_logits(
            worker.model, tgt, src, "resid_pre", [r["layer"]], r["position"], r["source_position"]
        )
        top = ref[ids_used].abs().max().reshape(1)
        assert r["resolution"] == resolution(top, torch.float32).item()
        assert r["resolution"] >= max(abs(r["patched"]), 1e-30) * 2**-25


def test_resolution_at_the_logits_magnitude_in_bfloat16():
    """The issue's example: a bf16 logit near 10 is known to 0.0625, however small the metric."""
    metric = LogitDiff((0,), (1,))
    logits = torch.tensor([[10.26, 10.24, 0.0], [-3.0, 0.5, 7.0]])
    steps = metric.resolution(logits, torch.bfloat16)
    assert steps.tolist() == [0.0625, 0.015625]  # |10.26| in [8, 16); |-3.0| in [2, 4)
    assert metric.resolution(logits, torch.float32)[0].item() == 2**-20
    bf16 = LogitDiff((0,), (1,), torch.bfloat16)  # bf16 metric arithmetic on a float32 model
    assert bf16.resolution(logits, torch.float32)[0].item() == 0.0625
    assert bf16(logits)[0].item() == 0.0  # 10.26 and 10.24 both round to 10.25 in bf16
    assert abs(metric(logits)[0].item() - 0.02) < 1e-5


def test_resolution_is_one_rounding_step():
    v = torch.tensor([1.0, 3.0, -0.3, 1000.0])
    for dtype in (torch.float32, torch.float16, torch.bfloat16):
        step = resolution(v, dtype)
        as_dtype = v.to(dtype)
        up = (v.abs() + step).to(dtype)  # one step up is representable and distinct
        assert torch.all(up.float() - as_dtype.float().abs() == step)
        assert torch.all((v.abs() + step / 4).to(dtype).float() == as_dtype.float().abs())


def test_attribution_screen_then_exact_top_k():
    model = build("llama", seed=9, n_layers=3, d=32, heads=4, kv=2)
    ad = Adapter(model)
    src, tgt = random_pair(9, 8, 8, first_diff=2)
    cells = make_cells("resid_pre", range(3), [(t, t) for t in range(8)], 3)

    def metric(logits):
        return logits[..., 5] - logits[..., 7]

    source, target = trace(ad, src), trace(ad, tgt)
    result = screen(ad, source, target, cells, metric, k=6)
    # Independent gradient: Hugging Face's own forward, its hidden states kept in the graph.
    with torch.enable_grad():
        out = model(torch.tensor([tgt]), output_hidden_states=True)
        hidden = out.hidden_states[:3]
        for h in hidden:
            h.retain_grad()
        metric(out.logits[0, -1]).backward()
    with torch.no_grad():
        src_hidden = model(torch.tensor([src]), output_hidden_states=True).hidden_states
    expected = torch.stack(
        [
            ((src_hidden[c.layer][0, c.position] - hidden[c.layer][0, c.position])
             * hidden[c.layer].grad[0, c.position]).sum()
            for c in cells
        ]
    )  # fmt: skip
    assert (result.approx - expected).abs().max().item() <= TOL
    assert len(result.top) == 6 and len(set(result.top)) == 6
    assert result.approx[result.top].abs().min() == sorted(result.approx.abs().tolist())[-6]
    ref = _naive(model, src, tgt, "resid_pre", [cells[i] for i in result.top])
    base = metric(target.logits)
    assert (result.exact - (metric(ref) - base)).abs().max().item() <= TOL
    assert -1.0 <= result.spearman <= 1.0


def test_worker_attribution_screen_rows():
    cfg = tiny_config(
        "sweep.pairs=1",
        "sweep.positions=all",
        "sweep.directions=[restore_confidence]",
        "sweep.screen_top_k=5",
    )
    worker = Worker(cfg, "test")
    (shard,) = worker.prep.plan().shards
    rows = worker.run_shard(shard).to_pylist()
    assert len(rows) == shard.n_cells
    exact = [r for r in rows if r["patched"] == r["patched"]]  # not NaN
    assert len([r for r in exact if not r["known"]]) == 5
    assert all(r["approx"] is not None for r in rows)
    assert -1.0 <= rows[0]["screen_spearman"] <= 1.0
    ids = worker.prep.token_ids[rows[0]["pair_id"]]
    src, tgt = ids["certain"], ids["uncertain"]
    for r in exact:
        ref = naive_component_logits(
            worker.model, tgt, src, "resid_pre", [r["layer"]], r["position"], r["position"]
        )
        assert abs(worker.prep.metric(ref).item() - r["patched"]) <= TOL
    screened = sorted(rows, key=lambda r: -abs(r["approx"]))[:5]
    assert {(r["layer"], r["position"]) for r in screened} <= {
        (r["layer"], r["position"]) for r in exact
    }
    with pytest.raises(UserError, match="sweep.screen_top_k=5 screens resid_pre"):
        tiny_config("sweep.screen_top_k=5", "sweep.component=mlp_out")


def test_a_merged_batch_computes_each_rows_own_positions_only():
    """Rows patched at different positions in one batch (Llama family, run in pieces): each
    row's weight matmuls cover its own suffix only, exactly as hallu.engine.cost prices them
    (and below a shared start), with the logits of one batch per position."""
    from hallu.bench_cases import flops_per_token
    from hallu.engine.cost import cell_flops, schedule_flops
    from hallu.engine.fast import Write, batch_limits, run_patches

    model = build("llama", seed=9, n_layers=4, d=32, heads=4, kv=2)
    ad = Adapter(model)
    src, tgt = random_pair(9, 12, 12, first_diff=1)
    source, target = trace(ad, src), trace(ad, tgt)
    rows = [(t, layer) for t in (2, 5, 9, 11) for layer in (0, 1, 3)]
    patches = [(Write(layer, "resid_pre", t, source.resid[layer, t]),) for t, layer in rows]
    opts = BatchOptions(target_tokens=10_000)
    target.queries.clear()
    with WeightMatmuls() as counted:
        merged = run_patches(ad, target, patches, opts)
    f = flops_per_token(model)
    rb, budget, tokens = batch_limits(ad, opts, len(tgt))
    priced = schedule_flops(4, len(tgt), rows, 1, f, rb, budget, tokens)
    assert counted.flops == pytest.approx(priced, rel=1e-9)
    shared_start = sum(cell_flops(4, layer, len(tgt) - 2, f) for _, layer in rows)
    assert counted.flops < 0.8 * shared_start
    apart = run_patches(ad, target, patches, BatchOptions(target_tokens=1))
    assert (merged - apart).abs().max().item() <= 1e-5
    ref = torch.stack(
        [naive_component_logits(model, tgt, src, "resid_pre", [lay], t, t, None) for t, lay in rows]
    )
    assert (merged - ref).abs().max().item() <= TOL
