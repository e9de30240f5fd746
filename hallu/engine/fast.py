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
  first layer, so no row runs a layer it does not need. A batch's tensors start at its
  smallest patched position t0; for Llama-family layers (run in pieces, below) a row patched at
  t > t0 still computes positions t..T-1 only (the batch is *packed*: its projections and MLP
  run on each row's own positions, and attention reads the trace's keys/values before t). Other
  families run whole layers, so their rows patched later compute t - t0 positions for nothing;
  batches are therefore cut by position and merged only while small. The batch size comes from
  a memory budget and is halved on out-of-memory;
- *logits at the last position only*, the one the metric reads, and so the last layer at the last
  position only (plus the keys/values of the others);
- *the join layer's queries/keys/values from the trace*: where a row joins, the positions it
  does not write hold the target's residual stream, so only written tokens are projected.

The last two need a layer in pieces: Llama-family layers run through hallu/engine/own_layer.py
(the modules' own weights, no hooks); other families run transformers' whole layer with hooks.

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

from hallu.engine.adapters import Adapter
from hallu.engine.cost import (
    CPU_BATCH_BYTES,
    CPU_BATCH_TOKENS,
    GPU_BATCH_TOKENS,
    MAX_ROWS,
    plan_batches,
    row_bytes,
)
from hallu.engine.oom import halve_on_oom
from hallu.engine.own_layer import own_layer
from hallu.engine.rows import Batch, Group, write
from hallu.engine.trace import (
    Local,
    PrefixCache,
    Trace,
    output_tensor,
    site_module,
    slice_pos,
    trace,
)

__all__ = [
    "BatchOptions",
    "Patch",
    "PrefixCache",
    "Trace",
    "Write",
    "batch_limits",
    "run_rows",
    "trace",
]


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
    max_rows: int = MAX_ROWS
    memory_bytes: int | None = None  # None: half the free GPU memory, or 2 GiB on the CPU
    target_tokens: int | None = None  # merge positions into one batch until it holds this many


def _start(p: Patch, opts: BatchOptions) -> tuple[int, int]:
    """(first position, first layer) a patch's row must compute."""
    t = min(w.position for w in p) if opts.suffix else 0
    layer = min(w.layer for w in p) if opts.resume else 0
    return t, layer


def batch_limits(ad: Adapter, opts: BatchOptions, n_tokens: int) -> tuple[Any, int, int]:
    """(bytes of one row as a function of its positions, the batch's memory budget, the tokens up
    to which positions are merged) for a length group of `n_tokens` (hallu.engine.cost's
    plan_batches takes them; hallu.bench_cases prices the same schedule)."""
    cfg = ad.model.config
    d = cfg.hidden_size
    d_mlp = getattr(cfg, "intermediate_size", None) or getattr(cfg, "n_inner", None) or 4 * d
    rb = row_bytes(d, d_mlp, ad.n_heads, ad.head_dim, n_tokens, torch.finfo(ad.dtype).bits // 8)
    cuda = ad.device.type == "cuda"
    if opts.memory_bytes is not None:
        budget = opts.memory_bytes
    else:  # half the free GPU memory
        budget = torch.cuda.mem_get_info(ad.device)[0] // 2 if cuda else CPU_BATCH_BYTES
    tokens = opts.target_tokens or (GPU_BATCH_TOKENS if cuda else CPU_BATCH_TOKENS)
    return rb, budget, tokens


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
    row_bytes, budget, target_tokens = batch_limits(ad, opts, n_tokens)
    max_rows = opts.max_rows
    # Stacked target tensors may take an eighth of the budget beside the batches.
    group = Group(ad, rows, [layer for _, layer in starts], budget // 8)
    out: list[torch.Tensor | None] = [None] * len(rows)
    todo = list(range(len(rows)))
    while todo:
        plan = plan_batches(
            [starts[i] for i in todo],
            n_tokens,
            max_rows,
            row_bytes,
            budget,
            target_tokens,
        )
        for part in plan:
            idx = [todo[j] for j in part]
            try:
                logits = _run_batch(ad, Batch(group, idx, [starts[i][0] for i in idx]))
            except (torch.OutOfMemoryError, MemoryError, RuntimeError) as err:
                # Halve and plan what is left again (raises unless out-of-memory on 2+ rows).
                budget, max_rows = budget // 2, halve_on_oom(err, len(idx))
                break
            for i, row in zip(idx, logits, strict=True):
                out[i] = row
        todo = [i for i in todo if out[i] is None]
    return out  # type: ignore[return-value]


def _run_batch(ad: Adapter, batch: Batch) -> torch.Tensor:
    """[rows, V] logits of one batch, rows in the order of the indices it was built from."""
    tr0, t0 = batch.group.traces[0], batch.t0
    n_tokens = len(tr0.ids)
    local = Local(ad, slice_pos(tr0.pos_emb, t0), t0, n_tokens, tr0.resid)
    joins = batch.joins
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
        at = batch.writes.get(layer, {})
        if "resid_pre" in at:
            write(h, at["resid_pre"], None)
        if ad.in_pieces:
            h = own_layer(ad, layer, h, n_have, batch, local.at(layer), at)
        else:
            prefix = batch.prefix(layer, h.shape[0])
            cache = PrefixCache() if prefix is None else PrefixCache(*prefix)
            h = _layer(ad, layer, h, local.at(layer), cache, at)
    assert h is not None
    logits = ad.logits(h[:, -1])
    order = torch.tensor([batch.slot[i] for i in batch.idx], device=logits.device)
    return logits[order]


def _layer(ad: Adapter, layer: int, h: torch.Tensor, local: tuple, cache: PrefixCache, at: dict):
    """One layer on the batch through transformers' module, with hooks for the writes."""
    handles = [_hook(ad, site, layer, entries) for site, entries in at.items()]
    try:
        return ad.run_layer(layer, h, *local, cache)
    finally:
        for handle in handles:
            if handle is not None:
                handle.remove()


def _hook(ad: Adapter, site: str, layer: int, entries: list) -> Any:
    if site == "resid_pre":
        return None
    mod = site_module(ad, site, layer)
    if site == "head":

        def pre(_m: Any, args: tuple) -> tuple:
            x = args[0].clone()
            write(x, entries, ad.head_dim)
            return (x, *args[1:])

        return mod.register_forward_pre_hook(pre)

    def post(_m: Any, _inp: Any, out: Any) -> Any:
        x = output_tensor(out).clone()
        write(x, entries, None)
        return (x, *out[1:]) if isinstance(out, tuple) else x

    return mod.register_forward_hook(post)
