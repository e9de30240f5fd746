"""Batched decoding of chat prompts: greedy or sampled, with one random generator per answer.

Prompts arrive as token ids already rendered through the chat template (prompts.render), so
the model answers as the assistant. They are left-padded to the longest, with position ids
counted over real tokens only, so a padded prompt sees the same positions as it would alone.
Only the tokens produced after the prompt are returned: the answer never includes the prompt.

Each sampled answer draws from its own `torch.Generator` seeded with its logged seed, so an
answer depends on its seed and prompt, not on which other prompts share its batch.
"""

from __future__ import annotations

import inspect
from collections.abc import Sequence
from dataclasses import dataclass
from typing import Any

import torch


@dataclass
class Generated:
    tokens: list[list[int]]  # new tokens of each answer, without the prompt and without EOS
    finished: list[bool]  # True if the answer ended with EOS before max_new_tokens
    first_logits: torch.Tensor  # [B, V] float32 logits at each prompt's last position


def left_pad(prompts: Sequence[Sequence[int]], pad_id: int) -> tuple[torch.Tensor, torch.Tensor]:
    """(ids, attention_mask), both [B, T_max], real tokens right-aligned."""
    width = max(len(p) for p in prompts)
    ids = torch.full((len(prompts), width), pad_id, dtype=torch.long)
    mask = torch.zeros((len(prompts), width), dtype=torch.long)
    for i, p in enumerate(prompts):
        ids[i, width - len(p) :] = torch.tensor(list(p), dtype=torch.long)
        mask[i, width - len(p) :] = 1
    return ids, mask


def pad_id_of(tokenizer: Any) -> int:
    """The id to left-pad with: the tokenizer's pad token, else its EOS (Llama has no pad)."""
    pad = tokenizer.pad_token_id
    return pad if pad is not None else tokenizer.eos_token_id


def _cache_kwarg(model: torch.nn.Module) -> str:
    # transformers 5 renamed `past_key_values` to `cache`; older releases know only the former.
    return "cache" if "cache" in inspect.signature(model.forward).parameters else "past_key_values"


def _cache_of(out: object) -> object:
    cache = getattr(out, "cache", None)
    return cache if cache is not None else out.past_key_values  # type: ignore[attr-defined]


@torch.no_grad()
def generate(
    model: torch.nn.Module,
    prompts: Sequence[Sequence[int]],
    *,
    pad_id: int,
    eos_id: int,
    max_new_tokens: int,
    temperature: float | None = None,
    seeds: Sequence[int] | None = None,
) -> Generated:
    """Greedy when `temperature` is None, else sampling with one seed per prompt."""
    if temperature is not None and (seeds is None or len(seeds) != len(prompts)):
        raise ValueError("sampling needs one seed per prompt")
    device = next(model.parameters()).device
    ids, mask = left_pad(prompts, pad_id)
    ids, mask = ids.to(device), mask.to(device)
    positions = (mask.cumsum(-1) - 1).clamp(min=0)
    gens = None
    if temperature is not None:
        gens = [torch.Generator(device=device).manual_seed(int(s)) for s in seeds or ()]
    out = model(input_ids=ids, attention_mask=mask, position_ids=positions, use_cache=True)
    cache_kw = _cache_kwarg(model)
    past, logits = _cache_of(out), out.logits[:, -1, :].float()
    first_logits = logits.cpu()
    n = len(prompts)
    tokens: list[list[int]] = [[] for _ in range(n)]
    finished = [False] * n
    last_pos = positions[:, -1]
    for step in range(max_new_tokens):
        if gens is None:
            nxt = logits.argmax(-1)
        else:
            probs = torch.softmax(logits / temperature, dim=-1)
            nxt = torch.stack(
                [torch.multinomial(probs[i], 1, generator=g)[0] for i, g in enumerate(gens)]
            )
        for i, t in enumerate(nxt.tolist()):
            if finished[i]:
                continue
            if t == eos_id:
                finished[i] = True
            else:
                tokens[i].append(t)
        if all(finished) or step == max_new_tokens - 1:
            break
        # Finished rows keep running on padding; their tokens are ignored above.
        feed = torch.where(torch.tensor(finished, device=device), pad_id, nxt)[:, None]
        mask = torch.cat([mask, torch.ones_like(mask[:, :1])], dim=1)
        last_pos = last_pos + 1
        out = model(
            input_ids=feed,
            attention_mask=mask,
            position_ids=last_pos[:, None],
            use_cache=True,
            **{cache_kw: past},
        )
        past, logits = _cache_of(out), out.logits[:, -1, :].float()
    return Generated(tokens, finished, first_logits)
