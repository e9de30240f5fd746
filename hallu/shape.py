"""A model's sizes (`ModelShape`), read from its config object: what planning needs, no torch.

`hallu.engine.models.load_shape` loads the config (transformers, or the tiny model's spec) and
hands it here; `hallu.run.plan` uses the shape to count cells and FLOP without loading weights.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

from hallu.config import TinySpec
from hallu.errors import UserError


@dataclass(frozen=True)
class ModelShape:
    """What planning needs to know about a model: sizes only, no weights."""

    n_layers: int
    d_model: int
    n_heads: int
    n_kv_heads: int
    d_mlp: int
    vocab_size: int
    # Positions the model can attend over (max_position_embeddings); None: the config says none.
    n_ctx: int | None = None
    head_dim: int | None = None  # None: d_model / n_heads (Gemma-2's heads are wider)

    @property
    def head_size(self) -> int:
        return self.head_dim or self.d_model // self.n_heads

    @property
    def params_per_token_flops(self) -> int:
        """FLOP per token: 2 x weights of the blocks and the unembedding (no attention scores)."""
        head_dim = self.head_size
        attn = self.d_model * head_dim * (2 * self.n_heads + 2 * self.n_kv_heads)
        mlp = 3 * self.d_model * self.d_mlp  # gated MLP (Llama); an upper bound for GPT-2-style
        return 2 * (self.n_layers * (attn + mlp) + self.d_model * self.vocab_size)


TINY_CONTEXT = 512  # the tiny model's max_position_embeddings (hallu/engine/tiny.py)


def tiny_shape(spec: TinySpec, vocab_size: int) -> ModelShape:
    return ModelShape(
        spec.n_layers,
        spec.d_model,
        spec.n_heads,
        spec.n_kv_heads,
        spec.d_mlp,
        vocab_size,
        TINY_CONTEXT,
    )


def shape_from_config(c: Any) -> ModelShape:
    """The shape of a transformers config (Llama, GPT-2, GPT-NeoX names; multimodal: its text)."""
    c = getattr(c, "text_config", c)
    n_heads = _int_attr(c, "num_attention_heads", "n_head")
    d_model = _int_attr(c, "hidden_size", "n_embd")
    return ModelShape(
        n_layers=_int_attr(c, "num_hidden_layers", "n_layer"),
        d_model=d_model,
        n_heads=n_heads,
        n_kv_heads=getattr(c, "num_key_value_heads", None) or n_heads,
        d_mlp=getattr(c, "intermediate_size", None) or getattr(c, "n_inner", None) or 4 * d_model,
        vocab_size=c.vocab_size,
        n_ctx=next(
            (int(v) for n in _CONTEXT_NAMES if (v := getattr(c, n, None)) is not None), None
        ),
        head_dim=getattr(c, "head_dim", None),
    )


_CONTEXT_NAMES = ("max_position_embeddings", "n_positions", "max_sequence_length", "seq_length")


def check_context(
    token_ids: dict[str, dict[str, list[int]]],
    shape: ModelShape,
    added: tuple[str, int] | None = None,
) -> None:
    """UserError naming the longest prompt that does not fit the model's context, if any.

    `added`: (key, tokens) that a stage appends after every prompt (generated answers, a
    continuation the metric scores), so the prompt and those tokens together must fit."""
    if shape.n_ctx is None:
        return
    key, extra = added if added is not None else ("", 0)
    too_long = [
        (len(ids), pid, cond)
        for pid, conds in token_ids.items()
        for cond, ids in conds.items()
        if len(ids) + extra > shape.n_ctx
    ]
    if not too_long:
        return
    n, pid, cond = max(too_long)
    many = f"{len(too_long)} prompt(s) too long"
    if n > shape.n_ctx or not extra:
        raise UserError(
            f"prompts: pair {pid!r} ({cond}) is {n} tokens, longer than the model's context of "
            f"{shape.n_ctx} positions ({many}). Fix: shorten it, or leave the pair out with "
            "sweep.pairs=[...]"
        )
    raise UserError(
        f"{key}={extra}: pair {pid!r} ({cond}) is {n} tokens, and {n} + {extra} = {n + extra} "
        f"is more than the model's context of {shape.n_ctx} positions ({many}). Fix: set "
        f"{key}={shape.n_ctx - n} or lower, or leave the pair out with sweep.pairs=[...]"
    )


def _int_attr(c: Any, *names: str) -> int:
    """The first of `names` that `c` sets, as an int."""
    for n in names:
        v = getattr(c, n, None)
        if v is not None:
            return int(v)
    raise UserError(f"model config {type(c).__name__} has none of {names}; unsupported family")


def resolve_layers(spec: str | list[int], n_layers: int) -> list[int]:
    """A `sweep.layers`-style spec ("all", or indices, negative from the end) as sorted layers."""
    if spec == "all":
        return list(range(n_layers))
    out = []
    for layer in spec:
        if not -n_layers <= layer < n_layers:
            raise UserError(
                f"sweep.layers: layer {layer} is out of range for a model with {n_layers} layers "
                f"(use 0..{n_layers - 1}, or -{n_layers}..-1 counted from the end)"
            )
        out.append(layer % n_layers)
    if len(set(out)) != len(out):
        raise UserError(f"sweep.layers={list(spec)} names the same layer twice")
    return sorted(out)
