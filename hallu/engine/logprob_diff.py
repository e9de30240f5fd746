"""The `logprob_diff` metric: teacher-forced log-probability of a confident minus a tentative
reference continuation of the prompt (the assistant's answer), in float32.

logprob_diff = sum_i log p(c_i | prompt, c_<i) over the confident continuation's tokens minus the
same sum over the tentative one's. Its patched value comes from the hook route
(`hallu.engine.hooks.patched_logprobs`): one forward pass of prompt + continuation per cell and
continuation, with the cell's resid_pre patch written at its prompt position, whichever engine
computes the main metric (the fast engine reads logits at the last prompt position only).
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass
from typing import Any

import torch

from hallu.config import Config
from hallu.engine.hooks import capture_resid_pre, continuation_logprob, patched_logprobs
from hallu.errors import UserError

NAME = "logprob_diff"


def continuation_ids(tokenizer: Any, text: str, key: str) -> list[int]:
    """Token ids of `text` as the assistant's text after the rendered prompt.

    Tokenized after other text (as `single_token_id` does), so a leading space is the word's
    own space, as Llama's tokenizer writes the first word of an answer ("▁Yes").
    """
    prefix = tokenizer("a", add_special_tokens=False)["input_ids"]
    ids = tokenizer("a" + text, add_special_tokens=False)["input_ids"]
    tail = list(ids[len(prefix) :] if ids[: len(prefix)] == prefix else ids)
    unk = getattr(tokenizer, "unk_token_id", None)
    if not tail or unk in tail:
        pieces = tokenizer.convert_ids_to_tokens(tail)
        raise UserError(
            f"{key}={text!r} gives {len(tail)} tokens {pieces}, needs at least 1 and no unknown "
            "token; write the reference answer in words this tokenizer knows"
        )
    return tail


@dataclass(frozen=True)
class LogprobDiff:
    confident_ids: tuple[int, ...]
    tentative_ids: tuple[int, ...]

    def unpatched(self, model: torch.nn.Module, prompt_ids: Sequence[int]) -> float:
        return continuation_logprob(model, prompt_ids, self.confident_ids) - continuation_logprob(
            model, prompt_ids, self.tentative_ids
        )

    def pair(
        self,
        model: torch.nn.Module,
        layers: torch.nn.ModuleList,
        src_ids: Sequence[int],
        tgt_ids: Sequence[int],
        cells: Sequence[tuple[int, int, int]],
        batch_size: int,
    ) -> tuple[float, float, torch.Tensor]:
        """(clean, corrupted, [len(cells)] patched) for resid_pre cells (layer, tpos, spos)."""
        clean, corrupted = self.unpatched(model, src_ids), self.unpatched(model, tgt_ids)
        if not cells:
            return clean, corrupted, torch.empty(0)
        # Prompt positions only: the source prompt alone gives the same values there.
        resid, _ = capture_resid_pre(model, layers, src_ids)
        patches = [(c,) for c in cells]
        conf, tent = (
            patched_logprobs(model, layers, tgt_ids, resid, patches, batch_size, cont)
            for cont in (self.confident_ids, self.tentative_ids)
        )
        return clean, corrupted, (conf - tent).float().cpu()


def from_config(cfg: Config, tokenizer: Any) -> LogprobDiff | None:
    """The metric when `metric.extra` asks for it; UserError for a key it cannot use."""
    if NAME not in cfg.metric.extra:
        return None
    if cfg.sweep.component != "resid_pre":
        raise UserError(
            f"metric.extra=[{NAME}] patches resid_pre only, not sweep.component="
            f"{cfg.sweep.component}; drop {NAME} or set sweep.component=resid_pre"
        )
    conf, tent = (
        tuple(continuation_ids(tokenizer, getattr(cfg.metric, key), f"metric.{key}"))
        for key in ("confident_continuation", "tentative_continuation")
    )
    return LogprobDiff(conf, tent)
