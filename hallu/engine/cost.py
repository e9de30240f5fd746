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
"""

from __future__ import annotations

from dataclasses import dataclass


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
    if layer == n_layers - 1:  # the last layer only: the patched token's keys/values, the last
        return (f.per_layer if suffix == 1 else f.per_layer - f.qkv + f.kv) + f.unembed
    first = suffix * f.per_layer - (suffix - 1) * f.qkv  # unpatched positions: the trace's q/k/v
    middle = (n_layers - 2 - layer) * suffix * f.per_layer
    return first + middle + f.per_layer + (suffix - 1) * f.kv + f.unembed


def known_by_tokens(position: int, source_position: int, shared: int) -> bool:
    """Patched at its own position inside the prompts' `shared` leading tokens: under causal
    attention both runs hold the same activations there, so the patch changes nothing."""
    return position == source_position and position < shared
