"""The fast patching engine: the naive numbers at a fraction of the compute.

Naive activation patching runs one full forward pass of the target prompt per cell. Most of that
work repeats the unpatched target run, so this engine keeps the target's *trace* (the residual
stream entering every layer, and every layer's keys and values) and for each patch computes only
what the patch can change:

- *resume from layer l*: a patch first written at layer l leaves layers 0..l-1 as in the trace,
  so its row starts from the trace's residual stream at layer l;
- *suffix only*: under causal attention a patch at position t leaves positions 0..t-1 unchanged,
  so rows run only positions t0..T-1 and attend to the trace's keys/values for 0..t0-1 (a prefix
  cache); position embeddings (RoPE) and the causal mask are sliced at the same offset;
- *many patches per forward*: patches of one target are stacked in the batch dimension; a row
  joins the batch at its first layer, so no row runs a layer it does not need. A batch shares
  one suffix start t0 (its smallest patched position), so rows patched later waste t - t0
  positions; batches are therefore cut by position, and merged only while small. The batch size
  comes from a memory budget and is halved on out-of-memory;
- *logits at the last position only*, the one the metric reads.

A patch is a set of writes (layer, site, position, value[, head]); sites are the residual stream
entering a layer ("resid_pre"), the attention output ("attn_out"), the MLP output ("mlp_out") and
one attention head's output before the output projection ("head"). Layers are called directly
through a small per-family adapter (hallu/engine/adapters.py). Known cells (no forward at all) are
decided by the caller (hallu/engine/cells.py), which knows the token sequences.
"""

from __future__ import annotations

from collections import defaultdict
from collections.abc import Sequence
from dataclasses import dataclass, field
from typing import Any, NamedTuple

import torch

from hallu.engine.adapters import Adapter
from hallu.engine.oom import halve_on_oom


class Write(NamedTuple):
    layer: int
    site: str
    position: int
    value: torch.Tensor  # [d_model], or [head_dim] for a head
    head: int | None = None


Patch = tuple[Write, ...]


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

    def value(self, site: str, layer: int, position: int, head: int | None, head_dim: int):
        """The activation a patch copies from this run."""
        if site == "resid_pre":
            return self.resid[layer, position]
        row = self.sites[site][layer, position]
        return row if head is None else row[head * head_dim : (head + 1) * head_dim]


@dataclass(frozen=True)
class BatchOptions:
    """Each optimisation can be switched off alone (the tests check every combination)."""

    resume: bool = True
    suffix: bool = True
    max_rows: int = 65536
    memory_bytes: int | None = None  # None: half the free GPU memory, or 2 GiB on the CPU
    target_tokens: int | None = None  # merge positions into one batch until it holds this many


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


def causal_mask(t0: int, n_tokens: int, dtype: torch.dtype, device: torch.device) -> torch.Tensor:
    """Additive causal mask [1, 1, T - t0, T]: query t0 + i sees keys 0..t0 + i."""
    q = torch.arange(t0, n_tokens, device=device)[:, None]
    k = torch.arange(n_tokens, device=device)[None, :]
    mask = torch.zeros(q.shape[0], n_tokens, dtype=dtype, device=device)
    return mask.masked_fill(k > q, torch.finfo(dtype).min)[None, None]


def _slice_pos(pos_emb: Any, t0: int) -> Any:
    if pos_emb is None or t0 == 0:
        return pos_emb
    return tuple(p[:, t0:] for p in pos_emb)


def _site_module(ad: Adapter, site: str, layer: int) -> torch.nn.Module:
    return {"attn_out": ad.attn, "mlp_out": ad.mlp, "head": ad.head_proj}[site](layer)


def _output_tensor(out: Any) -> torch.Tensor:
    return out[0] if isinstance(out, tuple) else out


@torch.no_grad()
def trace(ad: Adapter, ids: Sequence[int], sites: Sequence[str] = ()) -> Trace:
    """Run one prompt layer by layer, keeping what patches need (`sites` beyond resid_pre)."""
    n = len(ids)
    if ad.sliding_window is not None and n > ad.sliding_window:
        raise ValueError(f"prompt of {n} tokens exceeds the sliding window {ad.sliding_window}")
    h = ad.embed(torch.tensor([list(ids)], device=ad.device))
    pos_emb = ad.position_embeddings(h, n)
    mask = causal_mask(0, n, h.dtype, h.device)
    resid, keys, values = [h[0]], [], []
    kept: dict[str, list[torch.Tensor]] = {s: [] for s in sites if s != "resid_pre"}

    def keep(site: str) -> Any:
        def hook(_m: Any, inp: Any, out: Any = None) -> None:
            kept[site].append(
                (inp[0] if site == "head" else _output_tensor(out))[0].detach().clone()
            )

        return hook

    for layer in range(ad.n_layers):
        handles = []
        for site in kept:
            mod = _site_module(ad, site, layer)
            if site == "head":
                handles.append(mod.register_forward_pre_hook(keep(site)))
            else:
                handles.append(mod.register_forward_hook(keep(site)))
        cache = PrefixCache()
        try:
            h = ad.run_layer(layer, h, pos_emb, mask, cache)
        finally:
            for handle in handles:
                handle.remove()
        assert cache.new is not None, "the layer did not use the key/value cache"
        keys.append(cache.new[0])
        values.append(cache.new[1])
        resid.append(h[0])
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


def _start(p: Patch, opts: BatchOptions) -> tuple[int, int]:
    """(first position, first layer) a patch's row must compute."""
    t = min(w.position for w in p) if opts.suffix else 0
    layer = min(w.layer for w in p) if opts.resume else 0
    return t, layer


def _budget(ad: Adapter, opts: BatchOptions) -> int:
    if opts.memory_bytes is not None:
        return opts.memory_bytes
    if ad.device.type == "cuda":
        return torch.cuda.mem_get_info(ad.device)[0] // 2
    return 2 << 30


def _row_bytes(ad: Adapter, n_rows_tokens: int, n_tokens: int) -> int:
    """Rough peak bytes one row of `n_rows_tokens` query positions needs inside a layer."""
    cfg = ad.model.config
    d = cfg.hidden_size
    d_mlp = getattr(cfg, "intermediate_size", None) or getattr(cfg, "n_inner", None) or 4 * d
    per_token = 8 * d + 3 * d_mlp + 3 * ad.n_heads * n_tokens
    kv = 4 * n_tokens * ad.n_heads * ad.head_dim  # prefix + new keys/values (repeated for GQA)
    return (n_rows_tokens * per_token + kv) * torch.finfo(ad.dtype).bits // 8 * 2


def plan_batches(
    starts: Sequence[tuple[int, int]], n_tokens: int, max_rows: int, row_bytes: Any, budget: int,
    target_tokens: int,
) -> list[list[int]]:  # fmt: skip
    """Group patches (by their start position) into batches that share a suffix start."""
    order = sorted(range(len(starts)), key=lambda i: (starts[i][0], starts[i][1]))
    batches: list[list[int]] = []
    cur: list[int] = []
    for i in order:
        if cur:
            t0 = starts[cur[0]][0]
            s = n_tokens - t0
            full = len(cur) >= max_rows or (len(cur) + 1) * row_bytes(s) > budget
            big = len(cur) * s >= target_tokens and starts[i][0] != starts[cur[-1]][0]
            if full or big:
                batches.append(cur)
                cur = []
        cur.append(i)
    if cur:
        batches.append(cur)
    return batches


@torch.no_grad()
def run_patches(
    ad: Adapter, target: Trace, patches: Sequence[Patch], opts: BatchOptions = BatchOptions()
) -> torch.Tensor:
    """[len(patches), V] last-position logits of the target run with each patch applied."""
    if not patches:
        return torch.empty(0, target.logits.shape[-1])
    n_tokens = len(target.ids)
    starts = [_start(p, opts) for p in patches]
    budget, max_rows = _budget(ad, opts), opts.max_rows
    target_tokens = opts.target_tokens or (16384 if ad.device.type == "cuda" else 512)
    out: list[torch.Tensor | None] = [None] * len(patches)
    todo = list(range(len(patches)))
    while todo:
        plan = plan_batches(
            [starts[i] for i in todo],
            n_tokens,
            max_rows,
            lambda s: _row_bytes(ad, s, n_tokens),
            budget,
            target_tokens,
        )
        for group in plan:
            batch = [todo[j] for j in group]
            try:
                logits = _run_batch(
                    ad, target, [patches[i] for i in batch], [starts[i] for i in batch]
                )
            except (torch.OutOfMemoryError, MemoryError, RuntimeError) as err:
                # Halve and plan what is left again (raises unless out-of-memory on 2+ rows).
                budget, max_rows = budget // 2, halve_on_oom(err, len(batch))
                break
            for i, row in zip(batch, logits, strict=True):
                out[i] = row
        todo = [i for i in todo if out[i] is None]
    return torch.stack(out)  # type: ignore[arg-type]


def _run_batch(
    ad: Adapter, tr: Trace, patches: Sequence[Patch], starts: Sequence[tuple[int, int]]
) -> torch.Tensor:
    n_tokens = len(tr.ids)
    t0 = min(t for t, _ in starts)
    order = sorted(range(len(patches)), key=lambda i: starts[i][1])  # rows join by first layer
    slot = {i: r for r, i in enumerate(order)}
    writes: dict[int, dict[str, list[tuple[int, int, torch.Tensor, int | None]]]] = defaultdict(
        lambda: defaultdict(list)
    )
    for i, p in enumerate(patches):
        for w in p:
            writes[w.layer][w.site].append((slot[i], w.position - t0, w.value, w.head))
    joins = [starts[i][1] for i in order]
    mask = causal_mask(t0, n_tokens, tr.resid.dtype, tr.resid.device)
    pos_emb = _slice_pos(tr.pos_emb, t0)
    h: torch.Tensor | None = None
    for layer in range(joins[0], ad.n_layers):
        n_join = sum(1 for j in joins if j == layer)
        if n_join:
            x = tr.resid[layer, t0:].expand(n_join, -1, -1)
            h = x.clone() if h is None else torch.cat([h, x])
        assert h is not None
        at = writes.get(layer, {})
        if "resid_pre" in at:
            _write(h, at["resid_pre"], None)
        handles = [_hook(ad, site, layer, entries) for site, entries in at.items()]
        cache = PrefixCache(tr.keys[layer][..., :t0, :], tr.values[layer][..., :t0, :])
        try:
            h = ad.run_layer(layer, h, pos_emb, mask, cache)
        finally:
            for handle in handles:
                if handle is not None:
                    handle.remove()
    assert h is not None
    logits = ad.logits(h[:, -1])
    return logits[torch.tensor([slot[i] for i in range(len(patches))], device=logits.device)]


def _write(t: torch.Tensor, entries: list, head_dim: int | None) -> None:
    for row, pos, value, head in entries:
        if head is None:
            t[row, pos] = value.to(t.dtype)
        else:
            assert head_dim is not None
            t[row, pos, head * head_dim : (head + 1) * head_dim] = value.to(t.dtype)


def _hook(ad: Adapter, site: str, layer: int, entries: list) -> Any:
    if site == "resid_pre":
        return None
    mod = _site_module(ad, site, layer)
    if site == "head":

        def pre(_m: Any, args: tuple) -> tuple:
            x = args[0].clone()
            _write(x, entries, ad.head_dim)
            return (x, *args[1:])

        return mod.register_forward_pre_hook(pre)

    def post(_m: Any, _inp: Any, out: Any) -> Any:
        x = _output_tensor(out).clone()
        _write(x, entries, None)
        return (x, *out[1:]) if isinstance(out, tuple) else x

    return mod.register_forward_hook(post)
