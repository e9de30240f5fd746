"""Activation patching of the residual stream with plain PyTorch hooks.

For a pair of prompts, the *source* run (e.g. the certain user) is run once and the input of
every decoder layer (`resid_pre`) is kept. Each *cell* (layer l, target position t, source
position s) then reruns the *target* prompt (e.g. the uncertain user) with the residual stream
entering layer l at position t replaced by the source's value at s, and reads the metric at the
target's last position. Restoration = (patched - target) / (source - target): 1 means the patch
carries the whole difference, 0 none (Meng et al. 2022; Heimersheim & Nanda 2024).

Cells of one pair share the target prompt, so they are stacked in the batch dimension (no
padding is ever needed) and each row gets its own patch through one pre-hook per layer.
"""

from __future__ import annotations

from collections import defaultdict
from collections.abc import Sequence
from typing import Any

import torch

from hallu.engine.oom import halve_on_oom

HookCell = tuple[int, int, int]  # (layer, target position, source position)


def _hidden_of(args: tuple, kwargs: dict) -> torch.Tensor:
    return args[0] if args else kwargs["hidden_states"]


def _with_hidden(args: tuple, kwargs: dict, hidden: torch.Tensor) -> tuple[tuple, dict]:
    if args:
        return (hidden, *args[1:]), kwargs
    return args, {**kwargs, "hidden_states": hidden}


def _final_logits(model: torch.nn.Module, ids: torch.Tensor) -> torch.Tensor:
    out = model(input_ids=ids, use_cache=False, logits_to_keep=1)
    return out.logits[:, -1, :]


def _continuation_logprob(model: torch.nn.Module, ids: torch.Tensor, n: int) -> torch.Tensor:
    """[B] float32 sum of log p(token) over the last n tokens of `ids`, teacher-forced."""
    # Logits at positions T-n-1 .. T-2 predict the n continuation tokens.
    logits = model(input_ids=ids, use_cache=False, logits_to_keep=n + 1).logits[:, :-1]
    logp = torch.log_softmax(logits.float(), -1)
    return logp.gather(-1, ids[:, -n:, None]).squeeze(-1).sum(-1)


@torch.no_grad()
def continuation_logprob(
    model: torch.nn.Module, prompt_ids: Sequence[int], continuation: Sequence[int]
) -> float:
    """Unpatched sum of log p(continuation | prompt), float32."""
    device = next(model.parameters()).device
    ids = torch.tensor([[*prompt_ids, *continuation]], device=device)
    return float(_continuation_logprob(model, ids, len(continuation))[0])


@torch.no_grad()
def capture_resid_pre(
    model: torch.nn.Module, layers: torch.nn.ModuleList, ids: Sequence[int]
) -> tuple[torch.Tensor, torch.Tensor]:
    """One clean forward: ([n_layers, T, d] inputs of every layer, [V] logits at the last token)."""
    kept: list[torch.Tensor] = [torch.empty(0)] * len(layers)

    def keep(i: int) -> Any:
        def hook(_m: torch.nn.Module, args: tuple, kwargs: dict) -> None:
            kept[i] = _hidden_of(args, kwargs)[0].detach().clone()

        return hook

    handles = [
        layer.register_forward_pre_hook(keep(i), with_kwargs=True) for i, layer in enumerate(layers)
    ]
    try:
        device = next(model.parameters()).device
        logits = _final_logits(model, torch.tensor([list(ids)], device=device))[0]
    finally:
        for h in handles:
            h.remove()
    return torch.stack(kept), logits


@torch.no_grad()
def patched_logits(
    model: torch.nn.Module,
    layers: torch.nn.ModuleList,
    target_ids: Sequence[int],
    source_resid: torch.Tensor,
    patches: Sequence[Sequence[HookCell]],
    batch_size: int,
) -> torch.Tensor:
    """[len(patches), V] last-position logits of the target run, one patch set per row.

    A patch set is the cells written into one run: usually one cell; every position of a layer
    to check invariants; several layers for windows. Batches of `batch_size` rows; on
    out-of-memory the batch is halved and the work retried.
    """
    return _batched(model, layers, target_ids, source_resid, patches, batch_size, _final_logits)


@torch.no_grad()
def patched_logprobs(
    model: torch.nn.Module,
    layers: torch.nn.ModuleList,
    target_ids: Sequence[int],
    source_resid: torch.Tensor,
    patches: Sequence[Sequence[HookCell]],
    batch_size: int,
    continuation: Sequence[int],
) -> torch.Tensor:
    """[len(patches)] float32 sum of log p(continuation | target prompt), one patch set per row.

    The continuation's tokens are appended after the prompt and read teacher-forced; patches
    write prompt positions only, which under causal attention change the continuation's logits.
    """
    n = len(continuation)

    def read(model: torch.nn.Module, ids: torch.Tensor) -> torch.Tensor:
        return _continuation_logprob(model, ids, n)

    ids = [*target_ids, *continuation]
    return _batched(model, layers, ids, source_resid, patches, batch_size, read)


def _batched(model, layers, target_ids, source_resid, patches, batch_size, read) -> torch.Tensor:
    """`read` of the patched target run, in batches halved on out-of-memory."""
    out: list[torch.Tensor] = []
    start = 0
    while start < len(patches):
        chunk = patches[start : start + batch_size]
        try:
            out.append(_patched_batch(model, layers, target_ids, source_resid, chunk, read))
        except (torch.OutOfMemoryError, MemoryError, RuntimeError) as err:
            batch_size = halve_on_oom(err, batch_size)  # raises unless out-of-memory on 2+ rows
            continue
        start += len(chunk)
    return torch.cat(out) if out else torch.empty(0)


def _patched_batch(
    model: torch.nn.Module,
    layers: torch.nn.ModuleList,
    target_ids: Sequence[int],
    source_resid: torch.Tensor,
    patches: Sequence[Sequence[HookCell]],
    read: Any = _final_logits,
) -> torch.Tensor:
    device = source_resid.device
    by_layer: dict[int, list[tuple[int, int, int]]] = defaultdict(list)
    for row, cells in enumerate(patches):
        for layer, tpos, spos in cells:
            by_layer[layer].append((row, tpos, spos))

    def patch(layer: int) -> Any:
        entries = by_layer[layer]
        rows, tpos, spos = (torch.tensor(c, device=device) for c in zip(*entries, strict=True))
        values = source_resid[layer, spos]  # [n_entries, d]

        def hook(_m: torch.nn.Module, args: tuple, kwargs: dict) -> tuple[tuple, dict]:
            hidden = _hidden_of(args, kwargs).clone()
            hidden[rows, tpos] = values.to(hidden.dtype)
            return _with_hidden(args, kwargs, hidden)

        return hook

    handles = [
        layers[layer].register_forward_pre_hook(patch(layer), with_kwargs=True)
        for layer in by_layer
    ]
    try:
        ids = torch.tensor([list(target_ids)] * len(patches), device=device)
        return read(model, ids)
    finally:
        for h in handles:
            h.remove()
