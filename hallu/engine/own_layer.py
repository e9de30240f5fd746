"""One Llama-family decoder layer on an engine batch, run in pieces (hallu/engine/llama_layer.py).

Rows 0..n_have-1 continue from the previous layer and compute their queries/keys/values; rows
n_have.. join at this layer, so they hold their target's residual stream everywhere except the
tokens they write here: their queries/keys/values are the trace's, with the written tokens' taken
from `JoinWrites` (projected once per length group). Every row attends to its target's prefix
keys/values (positions 0..t0-1) and to its own suffix. The last layer runs its queries,
attention, o_proj and MLP at the last position only (the logits read nothing else), after the
keys/values of every suffix position.
"""

from __future__ import annotations

import torch

from hallu.engine import llama_layer as ll
from hallu.engine.adapters import Adapter
from hallu.engine.rows import Batch, Pack, write


def own_layer(
    ad: Adapter, layer: int, h: torch.Tensor, n_have: int, batch: Batch, local: tuple, at: dict
) -> torch.Tensor:
    """h [rows, T - t0, d] -> the layer's output ([rows, 1, d] at the last layer); `at`: this
    layer's writes by site (resid_pre already written into h)."""
    block, attn, hd = ad.layers[layer], ad.attn(layer), ad.head_dim
    pos_emb, mask = local
    n_rows, s, _ = h.shape
    t0 = batch.t0
    last_only = layer == ad.n_layers - 1
    n_q = 1 if last_only else s
    q = h.new_empty(n_rows, ad.n_heads, n_q, hd)
    keys = h.new_empty(n_rows, ad.n_kv_heads, t0 + s, hd)
    values = torch.empty_like(keys)
    pack = batch.pack
    if n_have and pack is not None:
        _packed_qkv(ad, layer, h, n_have, batch, pos_emb, (q, keys, values), last_only)
    elif n_have:
        bufs = (q[:n_have], keys[:n_have, :, t0:], values[:n_have, :, t0:])
        ll.qkv(block, attn, h[:n_have], pos_emb, hd, queries_from=s - n_q, out=bufs)
        prefix = batch.prefix(layer, n_have)
        if prefix is not None:
            keys[:n_have, :, :t0], values[:n_have, :, :t0] = prefix
    if n_have < n_rows:
        joining, every = range(n_have, n_rows), slice(None)
        batch.gather("keys", layer, joining, every, out=keys[n_have:])
        batch.gather("values", layer, joining, every, out=values[n_have:])
        batch.gather("queries", layer, joining, slice(t0 + s - n_q, None), out=q[n_have:])
        fix = batch.fixes.get(layer)
        if fix is not None:
            r, p, j = fix
            wq, wk, wv = batch.group.join_writes.qkv[layer]  # type: ignore[union-attr]
            keys[r, :, t0 + p], values[r, :, t0 + p] = wk[j], wv[j]
            if last_only:
                sel = p == s - 1
                r, p, j = r[sel], p[sel] - (s - 1), j[sel]
            q[r, :, p] = wq[j]
    # The last layer's one query sees every key, unless a sliding window hides the first ones.
    if last_only:
        mask = mask[:, :, -1:] if ad.window(layer, t0 + s) else None
    a = ll.attend(attn, q, keys, values, mask)
    if last_only:
        h = h[:, -1:]
        at = {
            site: [(row, 0, value, head) for row, pos, value, head in entries if pos == s - 1]
            for site, entries in at.items()
            if site != "resid_pre"
        }
    if at.get("head"):
        write(a, at["head"], hd)
    if pack is not None and not last_only:
        return _packed_rest(ad, layer, h, a, pack, at)
    a = getattr(attn, ad.family.head_proj)(a)
    if at.get("attn_out"):
        write(a, at["attn_out"], None)
    h = h + a
    m = ll.mlp(block, h)
    if at.get("mlp_out"):
        write(m, at["mlp_out"], None)
    return h.add_(m)


def _packed_qkv(
    ad: Adapter, layer: int, h: torch.Tensor, n_have: int, batch: Batch, pos_emb: tuple,
    bufs: tuple[torch.Tensor, ...], last_only: bool,
) -> None:  # fmt: skip
    """The continuing rows' queries/keys/values of their own positions only (batch.pack): the
    keys/values of the positions before a row's start are its trace's, and so are the queries
    there, which attend for nothing (their outputs are never read)."""
    q, keys, values = bufs
    pack, t0 = batch.pack, batch.t0
    assert pack is not None
    flat, row, pos, last = pack.tensors(h.device)
    n = pack.tokens(n_have)
    flat, row, pos = flat[:n], row[:n], pos[:n]
    x = h[:n_have].reshape(-1, h.shape[-1]).index_select(0, flat)[None]
    pe = tuple(e[:, pos] for e in pos_emb)
    at_q = last[:n_have] if last_only else 0
    qp, kp, vp = ll.qkv(ad.layers[layer], ad.attn(layer), x, pe, ad.head_dim, queries_from=at_q)
    every = slice(None)
    batch.gather("keys", layer, range(n_have), every, out=keys[:n_have])
    batch.gather("values", layer, range(n_have), every, out=values[:n_have])
    keys[row, :, t0 + pos] = kp[0].transpose(0, 1)
    values[row, :, t0 + pos] = vp[0].transpose(0, 1)
    if last_only:
        q[:n_have, :, 0] = qp[0].transpose(0, 1)
    else:
        q[:n_have].zero_()
        q[row, :, pos] = qp[0].transpose(0, 1)


def _packed_rest(
    ad: Adapter, layer: int, h: torch.Tensor, a: torch.Tensor, pack: Pack, at: dict
) -> torch.Tensor:
    """o_proj, residual and MLP on the rows' own positions only, written back into h."""
    block, attn = ad.layers[layer], ad.attn(layer)
    flat = pack.tensors(h.device)[0][: pack.tokens(h.shape[0])]  # the rows joined so far
    o = getattr(attn, ad.family.head_proj)(a.reshape(-1, a.shape[-1]).index_select(0, flat))
    if at.get("attn_out"):
        write(o[None], pack.entries(at["attn_out"]), None)
    hp = h.view(-1, h.shape[-1]).index_select(0, flat).add_(o)
    m = ll.mlp(block, hp)
    if at.get("mlp_out"):
        write(m[None], pack.entries(at["mlp_out"]), None)
    h.view(-1, h.shape[-1]).index_copy_(0, flat, hp.add_(m))  # h is the batch's own tensor
    return h
