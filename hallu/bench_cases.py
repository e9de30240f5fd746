"""The pieces of a benchmark that both `python -m hallu.bench` and its `--gpu` run use: a case
(pairs of token ids), the one-forward-per-cell reference sweep, and the analytic FLOP count.

Its own module so that hallu.bench (which dispatches to hallu.bench_gpu) and hallu.bench_gpu
both import it, without importing each other.
"""

from __future__ import annotations

from dataclasses import dataclass

import torch

from hallu.engine.adapters import Adapter
from hallu.engine.cells import Cell, known_cells, make_cells
from hallu.engine.cost import TokenFlops, schedule_flops, trace_flops
from hallu.engine.fast import BatchOptions, batch_limits, trace


@dataclass(frozen=True)
class Case:
    name: str
    pairs: list[tuple[list[int], list[int]]]  # (source ids, target ids)


@torch.no_grad()
def naive_sweep(model: torch.nn.Module, src: list[int], tgt: list[int], cells: list[Cell]):
    """One full forward per cell: a pre-hook on the layer writes the source's residual stream."""
    ad = Adapter(model)
    layers, dev = ad.layers, ad.device
    hidden = model(torch.tensor([src], device=dev), output_hidden_states=True).hidden_states
    out = []
    for c in cells:
        value = hidden[c.layer][0, c.source_position]

        def hook(_m, args, kwargs, c=c, value=value):
            h = (args[0] if args else kwargs["hidden_states"]).clone()
            h[0, c.position] = value
            return ((h, *args[1:]), kwargs) if args else (args, {**kwargs, "hidden_states": h})

        handle = layers[c.layer].register_forward_pre_hook(hook, with_kwargs=True)
        try:
            out.append(model(torch.tensor([tgt], device=dev)).logits[0, -1])
        finally:
            handle.remove()
    return torch.stack(out)


def all_cells(n_layers: int, n_tokens: int) -> list[Cell]:
    return make_cells("resid_pre", range(n_layers), [(t, t) for t in range(n_tokens)], n_layers)


def flops_per_token(model: torch.nn.Module) -> TokenFlops:
    """FLOP per token of the model's own weights: 2 per weight (hallu.engine.cost)."""
    ad = Adapter(model)
    d = model.config.hidden_size
    layer = sum(p.numel() for p in ad.layers[0].parameters() if p.dim() == 2)
    kv = 2.0 * 2 * ad.n_kv_heads * ad.head_dim * d
    qkv = kv + 2.0 * ad.n_heads * ad.head_dim * d
    return TokenFlops(2.0 * layer, qkv, kv, 2.0 * ad.unembed.weight.numel())


def flop_counts(model: torch.nn.Module, case: Case) -> tuple[float, float, int, int]:
    """(naive FLOP, engine FLOP, cells, known cells) of a full resid_pre sweep of `case`.

    The engine's FLOP is the engine's own cost model (hallu.engine.cost), which the plan's
    estimate asks too: the case's rows batched as the engine batches them (all pairs in one
    schedule, as `hallu.bench` runs them). Known cells (hallu.engine.cells.known_cells, on the
    pair's traces) cost nothing."""
    f = flops_per_token(model)
    ad = Adapter(model)
    n_layers = ad.n_layers
    naive = engine = 0.0
    n = n_known = 0
    groups: dict[int, tuple[list[tuple[int, int]], list[int]]] = {}
    for src, tgt in case.pairs:
        t_len = len(tgt)
        cells = all_cells(n_layers, t_len)
        n += len(cells)
        naive += len(cells) * t_len * (n_layers * f.per_layer + f.unembed)
        engine += 2 * trace_flops(n_layers, t_len, f)
        known = known_cells("resid_pre", trace(ad, src), trace(ad, tgt), cells, ad.head_dim)
        n_known += sum(known)
        starts, targets = groups.setdefault(t_len, ([], []))
        rows = [(c.position, c.layer) for c, k in zip(cells, known, strict=True) if not k]
        starts += rows
        targets += [1] if rows else []
    for t_len, (starts, targets) in groups.items():
        if starts:
            limits = batch_limits(ad, BatchOptions(), t_len)
            engine += schedule_flops(
                n_layers, t_len, starts, len(targets), f, *limits, in_pieces=ad.in_pieces
            )
    return naive, engine, n, n_known
