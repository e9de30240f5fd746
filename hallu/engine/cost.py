"""What the fast engine computes, in FLOP: the one cost model that the plan's estimate
(hallu/run/estimate.py) and the benchmark's accounting (hallu/bench_cases.py) both ask.

No torch: the estimate runs before any weights or torch are loaded (tests/test_imports.py).
Weight matmuls only, 2 FLOP per weight per token; attention scores are left out.

The engine (hallu/engine/fast.py) traces both prompts once; a cell patched at `layer`, `suffix`
positions before the end, then runs layers layer..L-2 over those positions, with its first
layer's queries/keys/values projected at the patched position only (the trace holds the rest),
the last layer at the last position (plus the key/value projections of the other suffix
positions) and the unembedding at the last position. That is for Llama-family layers, which the
engine runs in pieces (hallu/engine/own_layer.py); other families run each layer in full.
A cell *known by its tokens* (patched at its own position inside the prompts' shared prefix)
costs nothing: the engine returns the target's own logits.

Rows are batched as the engine batches them (`plan_batches`, which hallu/engine/fast.py runs):
a batch's tensors start at its smallest patched position t0. Llama-family rows (run in pieces)
still compute their own positions only (a packed batch); other families' rows compute from t0.
`schedule_flops` prices one length group's rows that way, plus the targets' queries at the
layers rows join (the trace computes them on first use).
"""

from __future__ import annotations

from collections.abc import Callable, Sequence
from dataclasses import dataclass

CPU_BATCH_BYTES = 2 << 30  # a batch's memory on the CPU (GPU: half the free memory)
CPU_BATCH_TOKENS = 512  # positions are merged into one batch until it holds this many tokens
GPU_BATCH_TOKENS = 16384
MAX_ROWS = 65536


@dataclass(frozen=True)
class TokenFlops:
    """FLOP per token of the pieces a cell runs."""

    per_layer: float  # one decoder layer
    qkv: float  # its query, key and value projections
    kv: float  # its key and value projections
    unembed: float


def token_flops(d_model: int, n_heads: int, n_kv_heads: int, d_mlp: int, vocab: int) -> TokenFlops:
    """A Llama-shaped layer: q/k/v/o projections and a gated MLP (three d_model x d_mlp)."""
    hd = d_model // n_heads
    per_layer = 2 * (d_model * hd * (2 * n_heads + 2 * n_kv_heads)) + 2 * 3 * d_model * d_mlp
    kv = 2 * 2 * d_model * hd * n_kv_heads
    return TokenFlops(per_layer, kv + 2 * d_model * hd * n_heads, kv, 2 * d_model * vocab)


def trace_flops(n_layers: int, n_tokens: int, f: TokenFlops) -> float:
    """One traced prompt: every layer on every token, the unembedding at the last."""
    return n_tokens * n_layers * f.per_layer + f.unembed


def cell_flops(
    n_layers: int, layer: int, suffix: int, f: TokenFlops, in_pieces: bool = True
) -> float:
    """One computed cell patched at `layer`, `suffix` positions before the end (module
    docstring); `in_pieces`: the model's layers run in pieces (Llama family)."""
    if not in_pieces:
        return (n_layers - layer) * suffix * f.per_layer + f.unembed
    if layer == n_layers - 1:  # the patched token's q/k/v, then the last position's rest
        return f.per_layer + f.unembed
    first = suffix * f.per_layer - (suffix - 1) * f.qkv  # unpatched positions: the trace's q/k/v
    middle = (n_layers - 2 - layer) * suffix * f.per_layer
    return first + middle + f.per_layer + (suffix - 1) * f.kv + f.unembed


def known_by_tokens(position: int, source_position: int, shared: int) -> bool:
    """Patched at its own position inside the prompts' `shared` leading tokens: under causal
    attention both runs hold the same activations there, so the patch changes nothing."""
    return position == source_position and position < shared


def row_bytes(
    d_model: int, d_mlp: int, n_heads: int, head_dim: int, n_tokens: int, dtype_bytes: int
) -> Callable[[int], float]:
    """Rough peak bytes one row of `s` query positions needs inside a layer, as a function of s
    (hallu/engine/fast.py sizes its batches with it)."""
    per_token = 8 * d_model + 3 * d_mlp + 3 * n_heads * n_tokens
    kv = 4 * n_tokens * n_heads * head_dim  # prefix + new keys/values (repeated for GQA)
    return lambda s: (s * per_token + kv) * dtype_bytes * 2


def plan_batches(
    starts: Sequence[tuple[int, int]], n_tokens: int, max_rows: int, row_bytes: Callable,
    budget: float, target_tokens: int,
) -> list[list[int]]:  # fmt: skip
    """Group rows (by their start position, then layer) into batches that share a suffix start."""
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


def schedule_flops(
    n_layers: int, n_tokens: int, starts: Sequence[tuple[int, int]], n_targets: int,
    f: TokenFlops, row_bytes: Callable, budget: float, target_tokens: int,
    in_pieces: bool = True,
) -> float:  # fmt: skip
    """One length group's rows, (position, layer) each, of `n_targets` targets, batched as the
    engine batches them (module docstring)."""
    total = 0.0
    for batch in plan_batches(starts, n_tokens, MAX_ROWS, row_bytes, budget, target_tokens):
        t0 = starts[batch[0]][0]
        for position, layer in (starts[i] for i in batch):
            # Rows run in pieces compute their own positions only (a packed batch).
            suffix = n_tokens - (position if in_pieces else t0)
            total += cell_flops(n_layers, layer, suffix, f, in_pieces)
    if in_pieces:  # the targets' queries at every layer a row joins (hallu/engine/rows.py)
        total += n_targets * len({layer for _, layer in starts}) * n_tokens * (f.qkv - f.kv)
    return total
