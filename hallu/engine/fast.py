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
- *many patches per forward*: patches are stacked in the batch dimension, across pairs too
  (rows of targets of one length share a batch, each attending to its own target's prefix
  keys/values, so a shard of several pairs runs as one schedule); a row joins the batch at its
  first layer, so no row runs a layer it does not need. A batch shares
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
from dataclasses import dataclass
from typing import Any, NamedTuple

import torch

from hallu.engine import llama_layer as ll
from hallu.engine.adapters import Adapter
from hallu.engine.oom import halve_on_oom
from hallu.engine.trace import (
    Local,
    PrefixCache,
    Trace,
    causal_mask,
    output_tensor,
    site_module,
    slice_pos,
    trace,
    trace_queries,
    traces,
)

__all__ = ["BatchOptions", "Patch", "PrefixCache", "Trace", "Write", "run_rows", "trace", "traces"]


class Write(NamedTuple):
    layer: int
    site: str
    position: int
    value: torch.Tensor  # [d_model], or [head_dim] for a head
    head: int | None = None


Patch = tuple[Write, ...]


@dataclass(frozen=True)
class BatchOptions:
    """Each optimisation can be switched off alone (the tests check every combination)."""

    resume: bool = True
    suffix: bool = True
    max_rows: int = 65536
    memory_bytes: int | None = None  # None: half the free GPU memory, or 2 GiB on the CPU
    target_tokens: int | None = None  # merge positions into one batch until it holds this many


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
    return run_rows(ad, [(target, p) for p in patches], opts)


@torch.no_grad()
def run_rows(
    ad: Adapter, rows: Sequence[tuple[Trace, Patch]], opts: BatchOptions = BatchOptions()
) -> torch.Tensor:
    """[len(rows), V] last-position logits of each (target run, patch) row.

    Rows of different targets (pairs) share batches when their targets have the same length:
    the mask and position embeddings depend on the length only, and each row attends to its own
    target's prefix keys/values. Lengths are never padded; each length is its own schedule."""
    if not rows:
        raise ValueError("run_rows: no rows")
    out: list[torch.Tensor | None] = [None] * len(rows)
    by_len: dict[int, list[int]] = defaultdict(list)
    for i, (tr, _) in enumerate(rows):
        by_len[len(tr.ids)].append(i)
    for n_tokens, idx in by_len.items():
        got = _run_length(ad, [rows[i] for i in idx], n_tokens, opts)
        for i, row in zip(idx, got, strict=True):
            out[i] = row
    return torch.stack(out)  # type: ignore[arg-type]


def _run_length(
    ad: Adapter, rows: Sequence[tuple[Trace, Patch]], n_tokens: int, opts: BatchOptions
) -> list[torch.Tensor]:
    starts = [_start(p, opts) for _, p in rows]
    budget, max_rows = _budget(ad, opts), opts.max_rows
    target_tokens = opts.target_tokens or (16384 if ad.device.type == "cuda" else 512)
    out: list[torch.Tensor | None] = [None] * len(rows)
    todo = list(range(len(rows)))
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
                logits = _run_batch(ad, [rows[i] for i in batch], [starts[i] for i in batch])
            except (torch.OutOfMemoryError, MemoryError, RuntimeError) as err:
                # Halve and plan what is left again (raises unless out-of-memory on 2+ rows).
                budget, max_rows = budget // 2, halve_on_oom(err, len(batch))
                break
            for i, row in zip(batch, logits, strict=True):
                out[i] = row
        todo = [i for i in todo if out[i] is None]
    return out  # type: ignore[return-value]


class _Rows:
    """The targets of one batch's rows, in slot order, and how to gather per-row prefixes."""

    def __init__(self, traces: list[Trace], which: list[int], t0: int):
        self.traces, self.t0 = traces, t0
        dev = traces[0].resid.device
        self.which = torch.tensor(which, device=dev)  # slot -> index into traces
        self.single = len(traces) == 1  # one target: expand, never copy

    def gather(self, parts: list[torch.Tensor], slots: range, out: torch.Tensor | None = None):
        """Row i of `slots` gets parts[target of i] (each [1, ...]): into `out` (contiguous)
        when given, else a new tensor ([1, ...], a view, when every row has one target)."""
        if self.single:
            if out is None:
                return parts[0]
            out.copy_(parts[0].expand_as(out))
            return out
        stacked = torch.cat(parts)
        idx = self.which[slots.start : slots.stop].to(stacked.device)
        return stacked[idx] if out is None else torch.index_select(stacked, 0, idx, out=out)

    def resid(self, layer: int, slots: range, out: torch.Tensor | None = None) -> torch.Tensor:
        """[len(slots), T - t0, d] trace input of `layer` for the rows in `slots`."""
        parts = [tr.resid[layer, self.t0 :][None] for tr in self.traces]
        if out is None and self.single:
            return parts[0].expand(len(slots), -1, -1, -1)[:, 0]
        return self.gather(parts, slots, out)

    def prefix(self, layer: int, n_rows: int) -> tuple[torch.Tensor, torch.Tensor] | None:
        """Keys and values of positions 0..t0-1 for the first `n_rows` slots ([1, ...] when
        every row has one target), or None when t0 = 0."""
        t0, slots = self.t0, range(n_rows)
        if t0 == 0:
            return None
        keys = self.gather([tr.keys[layer][..., :t0, :] for tr in self.traces], slots)
        return keys, self.gather([tr.values[layer][..., :t0, :] for tr in self.traces], slots)

    def full(self, ad: Adapter, layer: int, kind: str, slots: range, out: torch.Tensor) -> None:
        """The trace's queries (the last out.shape[2] positions), keys or values (every
        position) of `layer` for the rows in `slots`, into `out`."""

        def get(tr: Trace) -> torch.Tensor:
            if kind == "queries":
                return trace_queries(ad, tr, layer)[..., -out.shape[2] :, :]
            return getattr(tr, kind)[layer]

        self.gather([get(tr) for tr in self.traces], slots, out)

    def cache(self, layer: int, n_rows: int) -> PrefixCache:
        prefix = self.prefix(layer, n_rows)
        return PrefixCache() if prefix is None else PrefixCache(*prefix)


def _layout(rows: Sequence[tuple[Trace, Patch]], starts: Sequence[tuple[int, int]], t0: int):
    """(the batch's targets, slot of each row, first layer of each slot, writes by layer and
    site as (slot, position - t0, value, head)): rows join by first layer, and within a layer
    rows of one target sit together."""
    traces: list[Trace] = []
    index: dict[int, int] = {}
    for tr, _ in rows:
        index.setdefault(id(tr), len(traces))
        if len(traces) < len(index):
            traces.append(tr)
    which = [index[id(tr)] for tr, _ in rows]
    order = sorted(range(len(rows)), key=lambda i: (starts[i][1], which[i]))
    slot = {i: r for r, i in enumerate(order)}
    writes: dict[int, dict[str, list[tuple[int, int, torch.Tensor, int | None]]]] = defaultdict(
        lambda: defaultdict(list)
    )
    for i, (_, p) in enumerate(rows):
        for w in p:
            writes[w.layer][w.site].append((slot[i], w.position - t0, w.value, w.head))
    joins = [starts[i][1] for i in order]
    return _Rows(traces, [which[i] for i in order], t0), slot, joins, writes


def _run_batch(
    ad: Adapter, rows: Sequence[tuple[Trace, Patch]], starts: Sequence[tuple[int, int]]
) -> torch.Tensor:
    tr0 = rows[0][0]
    n_tokens = len(tr0.ids)
    t0 = min(t for t, _ in starts)
    batch, slot, joins, writes = _layout(rows, starts, t0)
    mask = causal_mask(t0, n_tokens, tr0.resid.dtype, tr0.resid.device)
    local = Local(ad, slice_pos(tr0.pos_emb, t0), mask)
    h: torch.Tensor | None = None
    for layer in range(joins[0], ad.n_layers):
        n_have = 0 if h is None else h.shape[0]
        if h is not None:
            h = ad.enter(layer, h)
        n_join = sum(1 for j in joins if j == layer)
        if n_join:
            x = ad.bring(layer, batch.resid(layer, range(n_have, n_have + n_join)))
            if h is None:
                ad.begin(ad.placement.layer_slot[layer])
            h = x.clone() if h is None else torch.cat([h, x])
        assert h is not None
        at = writes.get(layer, {})
        if "resid_pre" in at:
            _write(h, at["resid_pre"], None)
        if ad.own_layer:
            h = _own_layer(ad, layer, h, n_have, batch, local.at(layer), at)
        else:
            h = _layer(ad, layer, h, local.at(layer), batch.cache(layer, h.shape[0]), at)
    assert h is not None
    logits = ad.logits(h[:, -1])
    return logits[torch.tensor([slot[i] for i in range(len(rows))], device=logits.device)]


def _layer(ad: Adapter, layer: int, h: torch.Tensor, local: tuple, cache: PrefixCache, at: dict):
    """One layer on the batch through transformers' module, with hooks for the writes."""
    handles = [_hook(ad, site, layer, entries) for site, entries in at.items()]
    try:
        return ad.run_layer(layer, h, *local, cache)
    finally:
        for handle in handles:
            if handle is not None:
                handle.remove()


def _own_layer(
    ad: Adapter, layer: int, h: torch.Tensor, n_have: int, batch: _Rows, local: tuple, at: dict
) -> torch.Tensor:
    """One Llama-family layer run in pieces (hallu/engine/llama_layer.py). Rows n_have.. join
    here: their queries/keys/values are the trace's except at the positions written here. The
    last layer runs its queries, attention, o_proj and MLP at the last position only."""
    block, attn, hd = ad.layers[layer], ad.attn(layer), ad.head_dim
    pos_emb, mask = local
    n_rows, s, _ = h.shape
    t0 = batch.t0
    last_only = layer == ad.n_layers - 1
    n_q = 1 if last_only else s
    q = h.new_empty(n_rows, ad.n_heads, n_q, hd)
    keys = h.new_empty(n_rows, ad.n_kv_heads, t0 + s, hd)
    values = torch.empty_like(keys)
    if n_have:
        qc, kc, vc = ll.qkv(block, attn, h[:n_have], pos_emb, hd, queries_from=s - n_q)
        q[:n_have], keys[:n_have, :, t0:], values[:n_have, :, t0:] = qc, kc, vc
        prefix = batch.prefix(layer, n_have)
        if prefix is not None:
            keys[:n_have, :, :t0], values[:n_have, :, :t0] = prefix
    if n_have < n_rows:
        joining = range(n_have, n_rows)
        batch.full(ad, layer, "keys", joining, keys[n_have:])
        batch.full(ad, layer, "values", joining, values[n_have:])
        batch.full(ad, layer, "queries", joining, q[n_have:])
        written = [(r, p) for r, p, _, _ in at.get("resid_pre", ()) if r >= n_have]
        if written:
            r, p = (torch.tensor(c, device=h.device) for c in zip(*written, strict=True))
            pe = tuple(e[0, p][:, None] for e in pos_emb)
            qw, kw, vw = ll.qkv(block, attn, h[r, p][:, None], pe, hd)
            keys[r, :, t0 + p], values[r, :, t0 + p] = kw[:, :, 0], vw[:, :, 0]
            sel = p >= s - n_q
            q[r[sel], :, p[sel] - (s - n_q)] = qw[sel, :, 0]
    a = ll.attend(attn, q, keys, values, None if last_only else mask)
    if last_only:
        h = h[:, -1:]
        at = {
            site: [(row, 0, value, head) for row, pos, value, head in entries if pos == s - 1]
            for site, entries in at.items()
        }
    if at.get("head"):
        _write(a, at["head"], hd)
    a = getattr(attn, ad.family.head_proj)(a)
    if at.get("attn_out"):
        _write(a, at["attn_out"], None)
    h = h + a
    m = block.mlp(block.post_attention_layernorm(h))
    if at.get("mlp_out"):
        _write(m, at["mlp_out"], None)
    return h + m


def _write(t: torch.Tensor, entries: list, head_dim: int | None) -> None:
    for row, pos, value, head in entries:
        if head is None:
            t[row, pos] = value.to(device=t.device, dtype=t.dtype)
        else:
            assert head_dim is not None
            t[row, pos, head * head_dim : (head + 1) * head_dim] = value.to(
                device=t.device, dtype=t.dtype
            )


def _hook(ad: Adapter, site: str, layer: int, entries: list) -> Any:
    if site == "resid_pre":
        return None
    mod = site_module(ad, site, layer)
    if site == "head":

        def pre(_m: Any, args: tuple) -> tuple:
            x = args[0].clone()
            _write(x, entries, ad.head_dim)
            return (x, *args[1:])

        return mod.register_forward_pre_hook(pre)

    def post(_m: Any, _inp: Any, out: Any) -> Any:
        x = output_tensor(out).clone()
        _write(x, entries, None)
        return (x, *out[1:]) if isinstance(out, tuple) else x

    return mod.register_forward_hook(post)
