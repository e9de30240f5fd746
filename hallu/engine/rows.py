"""The rows of the fast engine's batches: which target each row patches, and what it reads.

Rows of several targets (pairs) of one length share batches (hallu/engine/fast.py). Each row
reads its own target's trace: the residual stream where it joins, the keys/values of the prefix
it does not recompute and, at the layer it joins, the target's queries/keys/values. `Group`
holds what every batch of one length group shares: the targets' trace tensors stacked once per
(kind, layer) and kept while they fit a memory allowance (else stacked again per use), and the
queries/keys/values of the tokens rows write where they join (`JoinWrites`). `Batch` is one
batch's slot order over them.
"""

from __future__ import annotations

from collections import defaultdict
from collections.abc import Sequence
from typing import Any

import torch

from hallu.engine import llama_layer as ll
from hallu.engine.adapters import Adapter
from hallu.engine.trace import Trace, trace_queries


class JoinWrites:
    """Queries, keys and values of every resid_pre token a row writes at the layer it joins
    (Llama family): one projection per layer for the whole group instead of one per batch."""

    def __init__(self, ad: Adapter, rows: Sequence[tuple[Trace, Any]], joins: Sequence[int]):
        by_layer: dict[int, list[tuple[int, int, torch.Tensor]]] = defaultdict(list)
        for i, ((_, patch), layer) in enumerate(zip(rows, joins, strict=True)):
            for w in patch:
                if w.site == "resid_pre" and w.layer == layer:
                    by_layer[layer].append((i, w.position, w.value))
        self.qkv: dict[int, tuple[torch.Tensor, ...]] = {}
        self.tokens: dict[int, list[tuple[int, int]]] = defaultdict(list)  # row -> (pos, index)
        pos_emb = rows[0][0].pos_emb
        for layer, toks in by_layer.items():
            dev = ad.placement.layer_device(layer)
            x = torch.stack([value for _, _, value in toks]).to(dev, ad.dtype)[:, None]
            pos = torch.tensor([p for _, p, _ in toks], device=dev)
            pe = tuple(e.to(dev)[0, pos][:, None] for e in pos_emb)
            q, k, v = ll.qkv(ad.layers[layer], ad.attn(layer), x, pe, ad.head_dim)
            self.qkv[layer] = (q[:, :, 0], k[:, :, 0], v[:, :, 0])
            for j, (i, p, _) in enumerate(toks):
                self.tokens[i].append((p, j))


class Group:
    """What the batches of one length group share (see the module docstring)."""

    def __init__(
        self, ad: Adapter, rows: Sequence[tuple[Trace, Any]], joins: Sequence[int], allowance: int
    ):
        self.ad, self.rows, self.joins = ad, rows, joins
        self.traces: list[Trace] = []
        index: dict[int, int] = {}
        for tr, _ in rows:
            if id(tr) not in index:
                index[id(tr)] = len(self.traces)
                self.traces.append(tr)
        self.which = [index[id(tr)] for tr, _ in rows]  # row -> index into traces
        self.single = len(self.traces) == 1  # one target: broadcast views, never copies
        self.join_writes = JoinWrites(ad, rows, joins) if ad.in_pieces else None
        self._stacks: dict[tuple[str, int], torch.Tensor] = {}
        self._left = allowance

    def stack(self, kind: str, layer: int) -> torch.Tensor:
        """[n_targets, (heads,) T, width] the targets' `kind` ("resid", "keys", "values",
        "queries") at `layer`."""
        if self.single:  # the one target's own tensor, a view: nothing to stack
            return self._part(self.traces[0], kind, layer)
        got = self._stacks.get((kind, layer))
        if got is None:
            got = torch.cat([self._part(tr, kind, layer) for tr in self.traces])
            if got.nbytes <= self._left:
                self._stacks[(kind, layer)] = got
                self._left -= got.nbytes
        return got

    def _part(self, tr: Trace, kind: str, layer: int) -> torch.Tensor:
        if kind == "resid":
            return tr.resid[layer][None]
        if kind == "queries":
            return trace_queries(self.ad, tr, layer)
        return getattr(tr, kind)[layer]


class Batch:
    """One batch: its rows in slot order (by the layer they join, then target), the writes by
    layer and site as (slot, position - t0, value, head), and the join-layer tokens to fix."""

    def __init__(self, group: Group, idx: Sequence[int], starts: Sequence[int]):
        """`starts`: the first position each row of `idx` computes."""
        t0 = min(starts)
        self.group, self.t0, self.idx = group, t0, list(idx)
        order = sorted(idx, key=lambda i: (group.joins[i], group.which[i]))
        self.slot = {i: r for r, i in enumerate(order)}
        self.joins = [group.joins[i] for i in order]
        dev = group.traces[0].resid.device
        self.which = torch.tensor([group.which[i] for i in order], device=dev)
        self.writes: dict[int, dict[str, list]] = defaultdict(lambda: defaultdict(list))
        for i in idx:
            for w in group.rows[i][1]:
                entry = (self.slot[i], w.position - t0, w.value, w.head)
                self.writes[w.layer][w.site].append(entry)
        start = dict(zip(idx, starts, strict=True))
        self.pack: Pack | None = None  # rows of the Llama family compute their own positions only
        if group.ad.in_pieces and any(t > t0 for t in starts):
            n_tokens = len(group.traces[0].ids)
            self.pack = Pack([start[i] - t0 for i in order], n_tokens - t0)
        self.fixes: dict[int, tuple[torch.Tensor, ...]] = {}
        jw = group.join_writes
        if jw is not None:
            by_layer: dict[int, list[tuple[int, int, int]]] = defaultdict(list)
            for i in idx:
                for p, j in jw.tokens.get(i, ()):
                    by_layer[group.joins[i]].append((self.slot[i], p - t0, j))
            for layer, fix in by_layer.items():
                dev = group.ad.placement.layer_device(layer)
                cols = zip(*fix, strict=True)
                self.fixes[layer] = tuple(torch.tensor(c, device=dev) for c in cols)

    def gather(
        self, kind: str, layer: int, slots: range, positions: slice, out: torch.Tensor | None = None
    ) -> torch.Tensor:
        """The targets' `kind` at `layer` and `positions` for the rows in `slots`: into `out`
        (contiguous) when given, else a new tensor, or a [1, ...] view when every row has one
        target."""
        stacked = self.group.stack(kind, layer)[..., positions, :]
        if self.group.single:
            if out is None:
                return stacked
            out.copy_(stacked.expand_as(out))
            return out
        idx = self.which[slots.start : slots.stop].to(stacked.device)
        return stacked[idx] if out is None else torch.index_select(stacked, 0, idx, out=out)

    def resid(self, layer: int, slots: range) -> torch.Tensor:
        """[len(slots), T - t0, d] the targets' input of `layer`."""
        got = self.gather("resid", layer, slots, slice(self.t0, None))
        return got.expand(len(slots), -1, -1)

    def prefix(self, layer: int, n_rows: int) -> tuple[torch.Tensor, torch.Tensor] | None:
        """Keys and values of positions 0..t0-1 for the first `n_rows` slots, or None at t0 = 0."""
        if self.t0 == 0:
            return None
        part = slice(None, self.t0)
        return (
            self.gather("keys", layer, range(n_rows), part),
            self.gather("values", layer, range(n_rows), part),
        )


class Pack:
    """A batch whose rows start at different positions, packed: row r (slot order) computes
    positions skip[r]..s-1 of the batch's s (offsets from t0) and nothing before, since its patch
    leaves those as the trace holds them. Tokens are listed row by row; `flat` indexes them in
    the padded [rows * s] layout, `row`/`pos` give each one's slot and offset, `first[r]` the
    index of row r's first token and `last[r]` of its last."""

    def __init__(self, skip: Sequence[int], s: int):
        self.skip, self.s = list(skip), s
        counts = [s - k for k in self.skip]
        self.first = [0]
        for c in counts:
            self.first.append(self.first[-1] + c)
        row = torch.repeat_interleave(torch.arange(len(counts)), torch.tensor(counts))
        pos = torch.arange(len(row)) - torch.tensor(self.first[:-1])[row] + torch.tensor(skip)[row]
        self._on: dict[torch.device, tuple[torch.Tensor, ...]] = {}
        self._cpu = (row * s + pos, row, pos, torch.tensor(self.first[1:]) - 1)

    def tensors(self, device: torch.device) -> tuple[torch.Tensor, ...]:
        """(flat, row, pos, last) on `device`, copied there once."""
        if device not in self._on:
            self._on[device] = tuple(t.to(device) for t in self._cpu)
        return self._on[device]

    def tokens(self, n_rows: int) -> int:
        """Tokens of the first `n_rows` rows (a prefix of the list)."""
        return self.first[n_rows]

    def entries(self, entries: list) -> list:
        """(slot, offset, value, head) write entries -> (0, token index, value, head)."""
        return [(0, self.first[r] + p - self.skip[r], v, hd) for r, p, v, hd in entries]


def write(t: torch.Tensor, entries: list, head_dim: int | None) -> None:
    """Write (row, position, value, head) entries into t [rows, positions, width]."""
    if head_dim is None and len(entries) > 1 and len({e[:2] for e in entries}) == len(entries):
        rows = torch.tensor([e[0] for e in entries], device=t.device)
        pos = torch.tensor([e[1] for e in entries], device=t.device)
        t[rows, pos] = torch.stack([e[2] for e in entries]).to(device=t.device, dtype=t.dtype)
        return
    for row, pos, value, head in entries:
        value = value.to(device=t.device, dtype=t.dtype)
        if head is None:
            t[row, pos] = value
        else:
            assert head_dim is not None
            t[row, pos, head * head_dim : (head + 1) * head_dim] = value
