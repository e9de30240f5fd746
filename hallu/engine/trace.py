"""One unpatched run of a prompt, kept for the patches that follow (hallu/engine/fast.py).

A trace holds the residual stream entering every layer, every layer's keys and values (rotary
applied), the last position's logits and, when asked, the outputs of other sites; queries are
computed on first use (the fast engine reads them only at the layers rows join).
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass, field
from typing import Any

import torch

from hallu.engine import llama_layer as ll
from hallu.engine.adapters import Adapter


@dataclass
class Trace:
    """One unpatched run of a prompt: everything later patches reuse or copy from."""

    ids: list[int]
    resid: torch.Tensor  # [L + 1, T, d]: input of every layer, then the last layer's output
    keys: list[torch.Tensor]  # per layer [1, n_kv_heads, T, head_dim], position embedding applied
    values: list[torch.Tensor]
    pos_emb: Any  # what layers take to place positions 0..T-1 (None for absolute positions)
    logits: torch.Tensor  # [V] at the last position
    sites: dict[str, torch.Tensor] = field(default_factory=dict)  # site -> [L, T, width]
    queries: dict[int, torch.Tensor] = field(default_factory=dict)  # layer -> [1, H, T, hd], lazily

    def value(self, site: str, layer: int, position: int, head: int | None, head_dim: int):
        """The activation a patch copies from this run."""
        if site == "resid_pre":
            return self.resid[layer, position]
        row = self.sites[site][layer, position]
        return row if head is None else row[head * head_dim : (head + 1) * head_dim]


class PrefixCache:
    """Duck-typed key/value cache: the trace's prefix before the keys/values a layer computes."""

    def __init__(self, keys: torch.Tensor | None = None, values: torch.Tensor | None = None):
        self.prefix = None if keys is None or keys.shape[2] == 0 else (keys, values)
        self.new: tuple[torch.Tensor, torch.Tensor] | None = None

    def update(self, k: torch.Tensor, v: torch.Tensor, *_: Any, **__: Any):
        self.new = (k, v)
        if self.prefix is None:
            return k, v
        pk, pv = (p.expand(k.shape[0], -1, -1, -1) for p in self.prefix)
        return torch.cat([pk, k], 2), torch.cat([pv, v], 2)


def causal_mask(
    t0: int, n_tokens: int, dtype: torch.dtype, device: torch.device, window: int | None = None
) -> torch.Tensor:
    """Additive causal mask [1, 1, T - t0, T]: query t0 + i sees keys 0..t0 + i (with a sliding
    `window`, only the last `window` of them, as transformers' sliding-window mask)."""
    q = torch.arange(t0, n_tokens, device=device)[:, None]
    k = torch.arange(n_tokens, device=device)[None, :]
    hidden = k > q if window is None else (k > q) | (k <= q - window)
    mask = torch.zeros(q.shape[0], n_tokens, dtype=dtype, device=device)
    return mask.masked_fill(hidden, torch.finfo(dtype).min)[None, None]


def layer_masks(
    ad: Adapter, t0: int, n_tokens: int, dtype: torch.dtype, device: torch.device
) -> list[torch.Tensor]:
    """Each layer's mask: one tensor per distinct window, shared by the layers that use it."""
    made: dict[int | None, torch.Tensor] = {}
    out = []
    for layer in range(ad.n_layers):
        w = ad.window(layer, n_tokens)
        if w not in made:
            made[w] = causal_mask(t0, n_tokens, dtype, device, w)
        out.append(made[w])
    return out


def slice_pos(pos_emb: Any, t0: int) -> Any:
    if pos_emb is None or t0 == 0:
        return pos_emb
    return tuple(p[:, t0:] for p in pos_emb)


class Local:
    """The position embeddings and each layer's mask (rows from t0 on), copied once to each
    slot's device that needs them."""

    def __init__(self, ad: Adapter, pos_emb: Any, t0: int, n_tokens: int, like: torch.Tensor):
        self.ad = ad
        self.masks = layer_masks(ad, t0, n_tokens, like.dtype, like.device)
        self.copies: dict[tuple[int, int], tuple[Any, torch.Tensor]] = {}
        self.pos_emb = pos_emb

    def at(self, layer: int) -> tuple[Any, torch.Tensor]:
        slot = self.ad.placement.layer_slot[layer]
        mask = self.masks[layer]
        key = (slot, id(mask))
        if key not in self.copies:
            dev = self.ad.placement.devices[slot]
            pos = self.pos_emb
            if slot and pos is not None:
                pos = tuple(p.to(dev) for p in pos)
            self.copies[key] = (pos, mask.to(dev))
        return self.copies[key]


def site_module(ad: Adapter, site: str, layer: int) -> torch.nn.Module:
    return {"attn_out": ad.attn, "mlp_out": ad.mlp, "head": ad.head_proj}[site](layer)


def output_tensor(out: Any) -> torch.Tensor:
    return out[0] if isinstance(out, tuple) else out


@torch.no_grad()
def trace(ad: Adapter, ids: Sequence[int], sites: Sequence[str] = ()) -> Trace:
    """Run one prompt layer by layer, keeping what patches need (`sites` beyond resid_pre).

    One prompt per call, never batched with others: a prompt's trace is then bit for bit the
    same whatever else a shard holds, and equal to a plain forward (the hook engine, controls)."""
    n = len(ids)
    ad.begin()
    h = ad.embed(torch.tensor([list(ids)], device=ad.device))
    pos_emb = ad.position_embeddings(h, n)
    local = Local(ad, pos_emb, 0, n, h)
    first = ad.placement.first  # traces are stored on the first slot's device
    resid, keys, values = [h[0]], [], []
    kept: dict[str, list[torch.Tensor]] = {s: [] for s in sites if s != "resid_pre"}

    def keep(site: str) -> Any:
        def hook(_m: Any, inp: Any, out: Any = None) -> None:
            x = inp[0] if site == "head" else output_tensor(out)
            kept[site].append(x[0].detach().to(first, copy=True))

        return hook

    for layer in range(ad.n_layers):
        handles = []
        for site in kept:
            mod = site_module(ad, site, layer)
            if site == "head":
                handles.append(mod.register_forward_pre_hook(keep(site)))
            else:
                handles.append(mod.register_forward_hook(keep(site)))
        cache = PrefixCache()
        h = ad.enter(layer, h)
        try:
            h = ad.run_layer(layer, h, *local.at(layer), cache)
        finally:
            for handle in handles:
                handle.remove()
        assert cache.new is not None, "the layer did not use the key/value cache"
        keys.append(cache.new[0])
        values.append(cache.new[1])
        resid.append(h[0].to(first))
    logits = ad.logits(h[:, -1])[0]
    return Trace(
        list(ids),
        torch.stack(resid),
        keys,
        values,
        pos_emb,
        logits,
        {s: torch.stack(v) for s, v in kept.items()},
    )


def trace_queries(ad: Adapter, tr: Trace, layer: int) -> torch.Tensor:
    """[1, H, T, hd] the trace's queries at `layer` (rotary applied), computed once, kept."""
    if layer not in tr.queries:
        dev = ad.placement.layer_device(layer)
        pos_emb = tuple(p.to(dev) for p in tr.pos_emb)
        x = tr.resid[layer][None].to(dev)
        tr.queries[layer] = ll.queries(ad.layers[layer], ad.attn(layer), x, pos_emb, ad.head_dim)
    return tr.queries[layer]
