"""Where each model family keeps what the fast engine calls: one small adapter per family.

The engine (hallu/engine/fast.py) runs the decoder layers itself, one at a time, so it must know how
to embed tokens, build the position embeddings a layer expects, call a layer with a mask and a
key/value cache, and turn the last hidden state into logits. Families differ only in names:

| family | blocks | embedding | positions | final norm | attention / MLP | head input |
|---|---|---|---|---|---|---|
| Llama/Mistral/Qwen2 | model.layers | embed_tokens | rotary | norm | self_attn / mlp | o_proj |
| GPT-2 | transformer.h | wte + wpe | absolute | ln_f | attn / mlp | c_proj |
| GPT-NeoX | gpt_neox.layers | embed_in | rotary | final_layer_norm | attention / mlp | dense |

Gemma-2 keeps Llama's names; what differs is inside its layers (norms after attention and MLP
too, soft-capped attention scores: transformers' whole layer runs them), its embedding (scaled
inside embed_tokens), its soft-capped logits (`logits`) and its sliding-window layers (`window`).
Sliding windows (Mistral, Gemma-2's alternate layers) are applied through each layer's mask.

Layers return a tensor in recent transformers and a tuple in older ones; `run_layer` accepts both.
"""

from __future__ import annotations

import inspect
from dataclasses import dataclass
from typing import Any

import torch

from hallu.engine.placement import infer
from hallu.errors import UserError


def _get(obj: Any, path: str) -> Any:
    for attr in path.split("."):
        obj = getattr(obj, attr, None)
        if obj is None:
            return None
    return obj


@dataclass(frozen=True)
class _Family:
    name: str
    layers: str
    embed: str
    final_norm: str
    attn: str  # attribute of a block
    mlp: str
    head_proj: str  # attribute of the attention module whose input holds the heads side by side
    rotary: str | None = None
    abs_pos: str | None = None  # absolute position embedding (GPT-2)


FAMILIES = [
    _Family(
        "llama", "model.layers", "model.embed_tokens", "model.norm",
        "self_attn", "mlp", "o_proj", rotary="model.rotary_emb",
    ),
    _Family(
        "gpt2", "transformer.h", "transformer.wte", "transformer.ln_f",
        "attn", "mlp", "c_proj", abs_pos="transformer.wpe",
    ),
    _Family(
        "gpt_neox", "gpt_neox.layers", "gpt_neox.embed_in", "gpt_neox.final_layer_norm",
        "attention", "mlp", "dense", rotary="gpt_neox.rotary_emb",
    ),
]  # fmt: skip


# model_type of the families whose decoder layer is input norm -> q/k/v projections -> rotary on
# queries and keys (transformers' apply_rotary_pos_emb) -> attention -> o_proj -> residual ->
# norm -> MLP -> residual: the engine runs their layers in pieces (hallu/engine/llama_layer.py).
# Others (GPT-2, GPT-NeoX, Qwen3's key norm, ...) run through transformers' whole layer.
OWN_LAYER_FAMILIES = ("llama", "mistral", "qwen2")
# model_type of every family the fast engine is checked on against the naive reference
# (tests/test_engine.py, tests/test_families.py); others go through the hook route.
FAST_FAMILIES = (*OWN_LAYER_FAMILIES, "gemma2", "gpt2", "gpt_neox")


class Adapter:
    """A causal LM seen as embed -> blocks -> norm -> unembedding, for one family."""

    def __init__(self, model: torch.nn.Module):
        family = next((f for f in FAMILIES if _get(model, f.layers) is not None), None)
        if family is None:
            raise UserError(
                f"sweep.engine=fast: no adapter for {type(model).__name__} (supported: Llama, "
                "Mistral, Qwen2, GPT-2, GPT-NeoX); use sweep.engine=hooks"
            )
        model_type = getattr(model.config, "model_type", None)
        if model_type not in FAST_FAMILIES:
            raise UserError(
                f"sweep.engine=fast: {type(model).__name__} (model_type {model_type}) is not a "
                f"family the fast engine is checked on ({', '.join(FAST_FAMILIES)}); "
                "use sweep.engine=hooks"
            )
        self.model, self.family = model, family
        self.layers: torch.nn.ModuleList = _get(model, family.layers)
        self.embed_tokens = _get(model, family.embed)
        self.norm = _get(model, family.final_norm)
        # lm_head everywhere in recent transformers; GPT-NeoX called it embed_out before.
        self.unembed = _get(model, "lm_head") or _get(model, "embed_out")
        self.rotary = _get(model, family.rotary) if family.rotary else None
        self.abs_pos = _get(model, family.abs_pos) if family.abs_pos else None
        params = inspect.signature(self.layers[0].forward).parameters
        self.cache_kw = next(k for k in ("cache", "past_key_values", "layer_past") if k in params)
        self.takes_pos_emb = "position_embeddings" in params
        cfg = model.config
        self.n_heads = cfg.num_attention_heads
        self.head_dim = getattr(cfg, "head_dim", None) or cfg.hidden_size // self.n_heads
        self.n_kv_heads = getattr(cfg, "num_key_value_heads", None) or self.n_heads
        self.windows = _layer_windows(cfg, len(self.layers))
        # Gemma-2 caps its logits at +-c: c * tanh(logits / c).
        self.logit_cap = getattr(cfg, "final_logit_softcapping", None)
        # Which device runs each layer (hallu/engine/placement.py; `place` replaces it).
        self.placement = infer(model, self.layers)
        self.moves = 0  # hidden-state transfers between slots, counted for the tests
        self._slot = 0
        # Whether the engine runs this family's layers in pieces (engine/own_layer.py; not named
        # own_layer, which is the function that runs one).
        self.in_pieces = getattr(cfg, "model_type", None) in OWN_LAYER_FAMILIES

    def window(self, layer: int, n_tokens: int) -> int | None:
        """The sliding window of `layer` if it hides keys from a prompt of `n_tokens`, else None."""
        w = self.windows[layer]
        return w if w is not None and w < n_tokens else None

    def begin(self, slot: int = 0) -> None:
        """A new pass starts on `slot` (the first: embedding and stored traces live there)."""
        self._slot = slot

    def enter(self, layer: int, h: torch.Tensor) -> torch.Tensor:
        """`h` moved to `layer`'s device if the previous layer ran on another slot."""
        slot = self.placement.layer_slot[layer]
        if slot == self._slot:
            return h
        self._slot = slot
        self.moves += 1
        return h.to(self.placement.devices[slot])

    def bring(self, layer: int, x: torch.Tensor) -> torch.Tensor:
        """A tensor stored on the first slot (trace residuals), onto `layer`'s device."""
        slot = self.placement.layer_slot[layer]
        if slot == 0:
            return x
        self.moves += 1
        return x.to(self.placement.devices[slot])

    @property
    def n_layers(self) -> int:
        return len(self.layers)

    @property
    def dtype(self) -> torch.dtype:
        return self.embed_tokens.weight.dtype

    @property
    def device(self) -> torch.device:
        return self.embed_tokens.weight.device

    def attn(self, layer: int) -> torch.nn.Module:
        return getattr(self.layers[layer], self.family.attn)

    def mlp(self, layer: int) -> torch.nn.Module:
        return getattr(self.layers[layer], self.family.mlp)

    def head_proj(self, layer: int) -> torch.nn.Module:
        return getattr(self.attn(layer), self.family.head_proj)

    def embed(self, ids: torch.Tensor) -> torch.Tensor:
        """[B, T] token ids -> [B, T, d] input of layer 0."""
        h = self.embed_tokens(ids)
        if self.abs_pos is not None:
            h = h + self.abs_pos(torch.arange(ids.shape[1], device=ids.device))[None]
        return h

    def position_embeddings(self, h: torch.Tensor, n_tokens: int) -> Any:
        """What a layer needs to place positions 0..n_tokens-1 (None: absolute, already added)."""
        if self.rotary is None:
            return None
        pos = torch.arange(n_tokens, device=h.device)[None]
        return self.rotary(h, pos)

    def run_layer(
        self, layer: int, h: torch.Tensor, pos_emb: Any, mask: torch.Tensor, cache: Any
    ) -> torch.Tensor:
        kwargs: dict[str, Any] = {"attention_mask": mask, self.cache_kw: cache}
        if self.takes_pos_emb:
            kwargs["position_embeddings"] = pos_emb
        out = self.layers[layer](h, **kwargs)
        return out[0] if isinstance(out, tuple) else out

    def logits(self, h_last: torch.Tensor) -> torch.Tensor:
        """[B, d] last layer output -> [B, V] logits (on the last slot's device)."""
        logits = self.unembed(self.norm(h_last.to(self.placement.last)))
        if self.logit_cap:
            logits = torch.tanh(logits / self.logit_cap) * self.logit_cap
        return logits


def _layer_windows(cfg: Any, n_layers: int) -> list[int | None]:
    """Each layer's sliding window (None: full attention), as transformers builds their masks:
    `layer_types` where the config has them (Gemma-2 alternates, Qwen2 from max_window_layers),
    else Mistral's one `sliding_window` for every layer."""
    window = getattr(cfg, "sliding_window", None)
    if window is None or not getattr(cfg, "use_sliding_window", True):
        return [None] * n_layers
    types = getattr(cfg, "layer_types", None)
    if types is None:
        return [window] * n_layers
    return [window if t == "sliding_attention" else None for t in types[:n_layers]]
