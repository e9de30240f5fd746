"""Edit the residual stream while a model runs: add a steering vector, or hold a patch.

An *edit* changes `resid_pre` (the input of decoder layer `layer`) at one token of each prompt,
given as an offset from the prompt's end (-1 = the last prompt token), so it lands on the same
token whether the prompt is alone or left-padded in a batch. `add` adds a vector (steering along
a direction, Turner et al. 2023, "activation addition"; Rimsky et al. 2024, contrastive activation
addition); `set` replaces the value (activation patching, held while the model answers).

Edits apply to the first forward pass through each edited layer inside the `held` block: the
prompt's pass when generating with a KV cache. Later steps read the edited prompt through the
cache, so the patch is "held" for the whole answer without touching the generated tokens.
"""

from __future__ import annotations

from collections.abc import Iterator, Sequence
from contextlib import contextmanager
from dataclasses import dataclass
from typing import Any

import torch

from hallu.engine.hooks import _hidden_of, _with_hidden


@dataclass(frozen=True)
class Edit:
    """One change of resid_pre at `layer`, per batch row: offsets from the end and vectors."""

    layer: int
    offsets: Sequence[int]  # [B] negative offsets from each prompt's end (-1 = last token)
    vectors: torch.Tensor  # [B, d]: added (mode 'add') or written (mode 'set')
    mode: str = "add"

    def __post_init__(self) -> None:
        if self.mode not in ("add", "set"):
            raise ValueError(f"edit mode {self.mode!r}: use 'add' or 'set'")
        if any(o >= 0 for o in self.offsets):
            raise ValueError(f"edit offsets {list(self.offsets)} must be negative (from the end)")


def _apply(hidden: torch.Tensor, edits: Sequence[Edit]) -> torch.Tensor:
    hidden = hidden.clone()
    rows = torch.arange(hidden.shape[0], device=hidden.device)
    for e in edits:
        cols = torch.tensor(list(e.offsets), device=hidden.device) + hidden.shape[1]
        vec = e.vectors.to(hidden.device, hidden.dtype)
        hidden[rows, cols] = vec if e.mode == "set" else hidden[rows, cols] + vec
    return hidden


@contextmanager
def held(layers: torch.nn.ModuleList, edits: Sequence[Edit]) -> Iterator[None]:
    """Within the block, the first pass through each edited layer gets its edits."""
    by_layer: dict[int, list[Edit]] = {}
    for e in edits:
        by_layer.setdefault(e.layer, []).append(e)
    pending = set(by_layer)

    def hook_for(layer: int) -> Any:
        def hook(_m: torch.nn.Module, args: tuple, kwargs: dict) -> tuple[tuple, dict] | None:
            if layer not in pending:
                return None
            pending.discard(layer)
            return _with_hidden(args, kwargs, _apply(_hidden_of(args, kwargs), by_layer[layer]))

        return hook

    handles = [layers[i].register_forward_pre_hook(hook_for(i), with_kwargs=True) for i in by_layer]
    try:
        yield
    finally:
        for h in handles:
            h.remove()


def broadcast(vector: torch.Tensor, n: int) -> torch.Tensor:
    """One [d] vector for every row of a batch of n."""
    return vector.reshape(1, -1).expand(n, -1)
