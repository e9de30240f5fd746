"""Cross-pair batching: rows of different pairs share a batch and still equal the naive reference.

Several pairs (three of one length, one of another) run as one schedule through
`patch_pairs`; every component, windows of 1-3 layers, and every (GQA) head is compared cell by
cell with the one-forward-per-cell reference in tests/naive.py (limit 1e-4, float32).
"""

from __future__ import annotations

import pytest
import torch

from hallu.engine.adapters import Adapter
from hallu.engine.cells import make_cells, patch_cells, patch_pairs
from hallu.engine.fast import BatchOptions, trace

from .families import build, random_pair
from .naive import naive_component_logits

TOL = 1e-4
CASES = [("resid_pre", 1), ("attn_out", 1), ("attn_out", 2), ("mlp_out", 1), ("mlp_out", 3)]
CASES += [("head", 1), ("head", 2)]


def _pairs() -> list[tuple[list[int], list[int]]]:
    """Three pairs of 8 tokens (different targets) and one of 10: two length groups."""
    pairs = [random_pair(seed, n_target=8, n_source=8, first_diff=3) for seed in (21, 22, 23)]
    return [*pairs, random_pair(24, n_target=10, n_source=10, first_diff=2)]


def _naive(model, src, tgt, component, cells):
    return torch.stack(
        [
            naive_component_logits(
                model, tgt, src, component, list(c.layers()), c.position, c.source_position, c.head
            )
            for c in cells
        ]
    )


@pytest.mark.parametrize("family", ["llama", "gpt2"])
@pytest.mark.parametrize("component,window", CASES)
@pytest.mark.parametrize(
    "opts", [BatchOptions(target_tokens=10_000), BatchOptions(max_rows=5)], ids=str
)
def test_cross_pair_batches_match_naive(family, component, window, opts):
    model = build(family, seed=31, n_layers=3, d=32, heads=4, kv=2)
    ad = Adapter(model)
    pairs = _pairs()
    items = []
    for src, tgt in pairs:
        positions = [(t, t) for t in (1, 3, 5, len(tgt) - 1)]
        cells = make_cells(component, range(3), positions, 3, window, ad.n_heads)
        items.append((trace(ad, src, [component]), trace(ad, tgt, [component]), cells))
    results = patch_pairs(ad, component, items, opts)
    assert len(results) == len(pairs)
    for (src, tgt), (_, _, cells), (out, known) in zip(pairs, items, results, strict=True):
        worst = (out - _naive(model, src, tgt, component, cells)).abs().max().item()
        assert worst <= TOL, (family, component, window, worst)
        assert any(known) and not all(known)
        if component == "head":
            assert {c.head for c in cells} == set(range(ad.n_heads))


def test_pairs_share_batches():
    """Three equal-length pairs run in as many layer calls as one pair, with 3x the rows."""
    model = build("llama", seed=32, n_layers=3, d=32, heads=4, kv=2)
    ad = Adapter(model)
    pairs = _pairs()[:3]
    cells = make_cells("resid_pre", range(3), [(t, t) for t in range(8)], 3)
    items = [(trace(ad, s), trace(ad, t), cells) for s, t in pairs]
    calls: list[int] = []
    # The MLP's down projection runs once per layer call on the whole batch (the engine runs
    # Llama layers in pieces, so the block module itself is never called).
    down = ad.layers[2].mlp.down_proj
    handle = down.register_forward_pre_hook(lambda _m, args: calls.append(len(args[0])))
    opts = BatchOptions(target_tokens=10_000)
    try:
        alone = [patch_cells(ad, "resid_pre", s, t, c, opts)[0] for s, t, c in items]
        n_alone = len(calls)
        calls.clear()
        together = [out for out, _ in patch_pairs(ad, "resid_pre", items, opts)]
    finally:
        handle.remove()
    assert len(calls) * 3 == n_alone, (len(calls), n_alone)
    # Per pair: every layer x every position not shared, except layer 0 at positions 5-7 (the
    # tokens agree there, so the patch writes the target's own embedding: known).
    assert sum(calls) == 3 * (3 * (8 - 3) - 3)
    for a, b in zip(alone, together, strict=True):
        assert (a - b).abs().max().item() <= TOL
    # The pairs' answers differ, so a row that attended to another pair's prefix would show.
    assert (together[0] - together[1]).abs().max().item() > 1e-3
