"""Rehearsal models (`model.weights=random`): a preset's real architecture with random weights.

The architecture is the hub's config.json, shipped as hallu/data/arch/NAME.json (`model.arch`),
so nothing is downloaded; `model.n_layers` keeps the first N layers and `model.d_model` narrows
every layer (heads of 16 dimensions, the MLP and the key/value heads scaled alike) for CPU runs.
Weights are transformers' own random initialisation, seeded, at the preset's dtype.

The tokenizer is a stand-in: the tiny model's word-level vocabulary (hallu/engine/tiny.py) with
the family's special tokens and the real chat template (hallu/data/chat_templates/NAME.json).
How long a rendered prompt is, compared with the real tokenizer:
- every special token of the template (<|start_header_id|>, [INST], <start_of_turn>, BOS) is one
  token, as in the real tokenizer: exact;
- the template's fixed text and the user's text count one token per word, per run of punctuation
  and per run of newlines. Subword tokenizers split rarer words further (Llama-2's SentencePiece
  averages about 1.35 tokens per English word), so a stand-in prompt is shorter than the real one
  by up to about a quarter of its words. Certain and uncertain prompts of a pair keep equal
  lengths when their markers are one word each, as with the real tokenizers.
Its ids index the first rows of the real vocabulary (the model keeps the real vocab size).
"""

from __future__ import annotations

import json
from importlib import resources
from typing import Any

import torch

from hallu.config import ModelCfg
from hallu.errors import UserError

HEAD_DIM = 16  # of a model narrowed by model.d_model


def _data(kind: str, name: str) -> dict[str, Any]:
    folder = resources.files("hallu") / "data" / kind
    path = folder / f"{name}.json"
    if not path.is_file():
        have = sorted(p.name[:-5] for p in folder.iterdir() if p.name.endswith(".json"))
        key = "model.arch" if kind == "arch" else "model.chat_template"
        raise UserError(f"{key}={name}: no such file in hallu/data/{kind}; use one of {have}")
    return json.loads(path.read_text(encoding="utf-8"))


def arch_dict(cfg: ModelCfg) -> dict[str, Any]:
    """The shipped config.json of `model.arch`, shrunk by model.n_layers / model.d_model."""
    assert cfg.arch is not None
    d = _data("arch", cfg.arch)
    if cfg.n_layers is not None:
        if cfg.n_layers > d["num_hidden_layers"]:
            raise UserError(
                f"model.n_layers={cfg.n_layers}: {cfg.arch} has {d['num_hidden_layers']} layers; "
                "use at most that"
            )
        d["num_hidden_layers"] = cfg.n_layers
        if "max_window_layers" in d:
            d["max_window_layers"] = min(d["max_window_layers"], cfg.n_layers)
    if cfg.d_model is not None:
        ratio = cfg.d_model / d["hidden_size"]
        heads = cfg.d_model // HEAD_DIM
        group = d["num_attention_heads"] // d["num_key_value_heads"]  # query heads per kv head
        d.update(
            hidden_size=cfg.d_model,
            intermediate_size=max(HEAD_DIM, round(d["intermediate_size"] * ratio)),
            num_attention_heads=heads,
            num_key_value_heads=max(1, heads // group),
            head_dim=HEAD_DIM,
        )
        if "query_pre_attn_scalar" in d:  # Gemma-2 scales queries by this, not by head_dim
            d["query_pre_attn_scalar"] = HEAD_DIM
    return d


def arch_config(cfg: ModelCfg) -> Any:
    from transformers import AutoConfig

    d = arch_dict(cfg)
    return AutoConfig.for_model(d.pop("model_type"), **d)


def build_random(cfg: ModelCfg, dtype: torch.dtype, seed: int = 0) -> torch.nn.Module:
    """The architecture with transformers' random initialisation (seeded), in `dtype`."""
    from transformers import AutoModelForCausalLM

    config = arch_config(cfg)
    with torch.random.fork_rng():
        torch.manual_seed(seed)
        model = AutoModelForCausalLM.from_config(config, dtype=dtype)
    return model.eval()


def standin_tokenizer(cfg: ModelCfg) -> Any:
    """The word-level stand-in with the family's special tokens and chat template."""
    from hallu.engine.tiny import build_tokenizer

    if cfg.chat_template is None:
        raise UserError(
            f"model.weights=random: model.chat_template is not set for {cfg.arch}; name one of "
            "hallu/data/chat_templates (e.g. model.chat_template=llama2)"
        )
    t = _data("chat_templates", cfg.chat_template)
    return build_tokenizer(
        t["special_tokens"], t["chat_template"], t["bos_token"], t["eos_token"], newlines=True
    )
