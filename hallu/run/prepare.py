"""What a run needs before any weights: the tokenizer, the model's shape, tokenized prompts, metric.

`prepare` needs the tokenizer and the model's config but no weights, so the launcher uses it to
validate and plan; each worker calls it again on its own machine before loading the weights.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

from hallu.config import Config
from hallu.engine.logprob_diff import LogprobDiff, from_config
from hallu.engine.metrics import LogitDiff
from hallu.engine.models import DTYPES, load_shape, load_tokenizer
from hallu.prompts import (
    load_pairs,
    prompt_anchors,
    select_pairs,
    single_token_id,
    tokenize_pairs,
)
from hallu.run.plan import Plan, make_plan
from hallu.shape import ModelShape, check_context


@dataclass
class Prepared:
    cfg: Config
    tokenizer: Any
    shape: ModelShape
    token_ids: dict[str, dict[str, list[int]]]  # pair id -> condition -> ids
    metric: LogitDiff
    logprob_diff: LogprobDiff | None = None  # only when metric.extra asks for it
    # pair id -> condition -> template anchors (prompts.prompt_anchors), for the row columns
    anchors: dict[str, dict[str, dict[str, int | None]]] | None = None

    def plan(self) -> Plan:
        lengths = {
            pid: {c: len(ids) for c, ids in conds.items()} for pid, conds in self.token_ids.items()
        }
        return make_plan(self.cfg.sweep, self.shape, lengths, self.cfg.model.name_or_path)


def _appended(cfg: Config, lp: LogprobDiff | None) -> list[tuple[str, int]]:
    """(key, tokens) each asked stage appends after a prompt: behaviour's answers, the
    logprob_diff continuations. Mechanism prompts are checked by hallu/mechanism/units.check."""
    out = []
    if "behavior" in cfg.sweep.experiments:
        out.append(("behavior.max_new_tokens", cfg.behavior.max_new_tokens))
    if lp is not None:
        out.append(("metric.confident_continuation", len(lp.confident_ids)))
        out.append(("metric.tentative_continuation", len(lp.tentative_ids)))
    return out


def prepare(cfg: Config) -> Prepared:
    """Everything but the weights; raises UserError for any bad key, file or prompt."""
    tokenizer = load_tokenizer(cfg.model)
    shape = load_shape(cfg.model)
    pairs = select_pairs(load_pairs(cfg.prompts), cfg.sweep)
    token_ids = tokenize_pairs(tokenizer, pairs, cfg.prompts)
    check_context(token_ids, shape)  # before any weights: exit 2 naming the pair
    spell = cfg.model.token_spelling  # the preset's spelling of an answer's first word
    metric = LogitDiff(
        tuple(
            single_token_id(tokenizer, spell.get(t, t), "metric.confident_tokens")
            for t in cfg.metric.confident_tokens
        ),
        tuple(
            single_token_id(tokenizer, spell.get(t, t), "metric.tentative_tokens")
            for t in cfg.metric.tentative_tokens
        ),
        DTYPES[cfg.metric.dtype],
    )
    anchors = prompt_anchors(tokenizer, pairs, cfg.prompts, token_ids)
    lp = from_config(cfg, tokenizer)
    for added in _appended(cfg, lp):  # the prompt and what a stage appends to it must fit
        check_context(token_ids, shape, added)
    return Prepared(cfg, tokenizer, shape, token_ids, metric, lp, anchors)
