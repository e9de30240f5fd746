"""A Llama whose mechanism is known: every weight set by hand, no training (`model=planted`).

It is the fixture the analysis is tested against: the patching numbers it must give follow from
the construction (docs/analysis.md, "The planted model"). It uses the toy's word-level tokenizer
and chat template (hallu/engine/tiny.py).

The mechanism, in residual-stream dimensions that nothing else writes:

1. Embedding. Every token writes a large constant `BIG` into dim CONST. The certain marker
   ("definitely") writes sign +1 into SIGN and its pathway gain `certain_gain` into GAIN; the
   uncertain marker ("probably") writes -1 and `uncertain_gain`. Both set MARKER = 1; BOS sets
   SINK = 1.
2. Head `head` at layer `layer` attends from every position to the marker (or, before any
   marker, to BOS, whose value is 0) and copies SIGN into X.
3. Head `late_head` at layer `late_layer` does the same with GAIN, into Y.
4. The MLP of `late_layer` multiplies them: OUT = X * Y (two SwiGLU neurons, below).
5. The unembedding reads OUT: logit(yes) = logit(is) = OUT / 2, logit(maybe) = logit(might) =
   -OUT / 2, so both metric presets measure OUT. A certain prompt gives +certain_gain, an
   uncertain one -uncertain_gain, a neutral one 0. Every other layer and MLP is zero.

Why it is exact (to ~1e-7 in float32): RMSNorm divides by the root mean square, which the
constant dim dominates (BIG = 8192 against values of order 1), so each norm is linear up to a
relative 1e-8; its weights undo the scale (CONST reads 1, every other dim reads its own value).
The attention scores use only the slowest rotary frequency, and a rotary base of 1e12 makes its
angle at 512 positions 5e-7 rad, so scores do not depend on position. A score of 100 for the
marker, 50 for BOS and 0 elsewhere makes softmax one-hot to e^-50. SwiGLU's silu(20 + x) is
20 + x to 1e-8, so neuron a (gate 20 + X, up Y) minus neuron b (gate 20, up Y) is X * Y.
"""

from __future__ import annotations

import math

import torch
from transformers import LlamaConfig, LlamaForCausalLM

from hallu.config import PlantedSpec

D_MODEL, N_HEADS, HEAD_DIM, D_MLP = 32, 4, 8, 8
CONST, SIGN, GAIN, MARKER, SINK, X, Y, OUT = range(8)  # residual dims (the rest stay 0)
BIG = 8192.0  # dominates every RMSNorm, which makes the norms linear
SCORE = 100.0  # attention score of the marker; BOS gets half of it, every other token 0
GATE = 20.0  # SwiGLU gate offset: silu(GATE + x) = GATE + x to 1e-8
CERTAIN_MARKER, UNCERTAIN_MARKER = "definitely", "probably"
CONFIDENT, TENTATIVE = ("yes", "is"), ("maybe", "might")


def config(spec: PlantedSpec, vocab_size: int) -> LlamaConfig:
    return LlamaConfig(
        vocab_size=vocab_size,
        hidden_size=D_MODEL,
        intermediate_size=D_MLP,
        num_hidden_layers=spec.n_layers,
        num_attention_heads=N_HEADS,
        num_key_value_heads=N_HEADS,
        head_dim=HEAD_DIM,
        max_position_embeddings=512,
        rms_norm_eps=1e-6,
        rope_theta=1e12,
        pad_token_id=0,
        bos_token_id=2,
        eos_token_id=3,
        tie_word_embeddings=False,
    )


def _norm(weight: torch.Tensor) -> None:
    """Undo RMSNorm's scale: rms = BIG / sqrt(d), so CONST reads 1 and every other dim itself."""
    weight.fill_(BIG / math.sqrt(D_MODEL))
    weight[CONST] = 1 / math.sqrt(D_MODEL)


def _copy_head(attn: torch.nn.Module, head: int, source: int, dest: int) -> None:
    """Head `head` attends to the marker (else BOS) and copies residual dim `source` to `dest`."""
    slow = head * HEAD_DIM + HEAD_DIM - 1  # the slowest rotary pair: position-independent
    attn.q_proj.weight[slow, CONST] = SCORE * math.sqrt(HEAD_DIM)  # HF scales by 1/sqrt(d_head)
    attn.k_proj.weight[slow, MARKER] = 1.0
    attn.k_proj.weight[slow, SINK] = 0.5
    attn.v_proj.weight[head * HEAD_DIM, source] = 1.0
    attn.o_proj.weight[dest, head * HEAD_DIM] = 1.0


def _multiply(mlp: torch.nn.Module) -> None:
    """OUT += X * Y: silu(GATE + X) * Y - silu(GATE) * Y."""
    mlp.gate_proj.weight[0, CONST] = GATE
    mlp.gate_proj.weight[0, X] = 1.0
    mlp.up_proj.weight[0, Y] = 1.0
    mlp.gate_proj.weight[1, CONST] = GATE
    mlp.up_proj.weight[1, Y] = -1.0
    mlp.down_proj.weight[OUT, 0] = 1.0
    mlp.down_proj.weight[OUT, 1] = 1.0


@torch.no_grad()
def build_model(spec: PlantedSpec, tokenizer) -> LlamaForCausalLM:  # noqa: ANN001
    """The planted model in float32, eval mode; identical on every call."""
    ids = {t: tokenizer.convert_tokens_to_ids(t) for t in (CERTAIN_MARKER, UNCERTAIN_MARKER)}
    model = LlamaForCausalLM(config(spec, len(tokenizer))).float().eval()
    for p in model.parameters():
        p.zero_()
    emb = model.model.embed_tokens.weight
    emb[:, CONST] = BIG
    emb[ids[CERTAIN_MARKER], [SIGN, GAIN, MARKER]] = torch.tensor([1.0, spec.certain_gain, 1.0])
    emb[ids[UNCERTAIN_MARKER], [SIGN, GAIN, MARKER]] = torch.tensor(
        [-1.0, spec.uncertain_gain, 1.0]
    )
    emb[tokenizer.bos_token_id, SINK] = 1.0
    for block in model.model.layers:
        _norm(block.input_layernorm.weight)
        _norm(block.post_attention_layernorm.weight)
    _norm(model.model.norm.weight)
    _copy_head(model.model.layers[spec.layer].self_attn, spec.head, SIGN, X)
    _copy_head(model.model.layers[spec.late_layer].self_attn, spec.late_head, GAIN, Y)
    _multiply(model.model.layers[spec.late_layer].mlp)
    for sign, words in ((0.5, CONFIDENT), (-0.5, TENTATIVE)):
        for w in words:
            model.lm_head.weight[tokenizer.convert_tokens_to_ids(w), OUT] = sign
    return model
