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
from hallu.engine.fast import trace
from hallu.run.estimate import cell_flops


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


def flops_per_token(model: torch.nn.Module) -> tuple[float, float]:
    """(one layer, the unembedding): 2 FLOP per weight per token."""
    ad = Adapter(model)
    layer = sum(p.numel() for p in ad.layers[0].parameters() if p.dim() == 2)
    return 2.0 * layer, 2.0 * ad.unembed.weight.numel()


def flop_counts(model: torch.nn.Module, case: Case) -> tuple[float, float, int, int]:
    """(naive FLOP, engine FLOP, cells, known cells) of a full resid_pre sweep of `case`.

    Llama-family layers (`Adapter.own_layer`) count as hallu.run.estimate.cell_flops; other
    families run every layer of a cell in full. Known cells (hallu.engine.cells.known_cells, on
    the pair's traces) cost nothing."""
    per_layer, unembed = flops_per_token(model)
    ad = Adapter(model)
    n_layers, d = ad.n_layers, model.config.hidden_size
    kv = 2.0 * 2 * ad.n_kv_heads * ad.head_dim * d
    qkv = kv + 2.0 * ad.n_heads * ad.head_dim * d
    naive = engine = 0.0
    n = n_known = 0
    for src, tgt in case.pairs:
        t_len = len(tgt)
        cells = all_cells(n_layers, t_len)
        n += len(cells)
        naive += len(cells) * t_len * (n_layers * per_layer + unembed)
        engine += 2 * (t_len * n_layers * per_layer + unembed)
        known = known_cells("resid_pre", trace(ad, src), trace(ad, tgt), cells, ad.head_dim)
        n_known += sum(known)
        for c, is_known in zip(cells, known, strict=True):
            if is_known:
                continue
            s = t_len - c.position
            if ad.own_layer:
                engine += cell_flops(n_layers, c.layer, s, per_layer, qkv, kv, unembed)
            else:
                engine += (n_layers - c.layer) * s * per_layer + unembed
    return naive, engine, n, n_known
