"""The Llama family's decoder layer (Llama, Mistral, Qwen2) in pieces the fast engine can skip.

transformers' decoder layer is input norm -> q/k/v projections -> rotary -> attention -> o_proj
-> residual -> post-attention norm -> MLP -> residual. The engine calls those pieces itself
(the same modules, so the same weights and kernels) because a patched row needs less than a whole
layer:

- at the layer a row joins, every position the patch did not write still holds the target's
  residual stream, so its queries, keys and values are the target run's: only written positions
  are projected again (the rest are copied from the trace);
- the last layer needs its queries (and its attention, o_proj and MLP) at the last position only.

Attention is written out as two matmuls and a softmax (as transformers' eager attention) for
float32 on the CPU, where at these shapes it is ~2.5x faster than the fused kernel
(scaled_dot_product_attention, measured 2026-11-27); elsewhere (GPUs, half precision) the fused
kernel is used.
"""

from __future__ import annotations

from typing import Any

import torch
import torch.nn.functional as F


def rope(
    x: torch.Tensor, cos: torch.Tensor, sin: torch.Tensor, out: torch.Tensor | None = None
) -> torch.Tensor:
    """x [B, heads, S, hd] rotated as transformers' apply_rotary_pos_emb does for these families
    (x * cos + rotate_half(x) * sin; cos, sin [1 or B, S, hd]), in three kernels, not seven,
    into `out` when given (a view of the engine's buffers)."""
    cos, sin = cos[:, None], sin[:, None]
    half = x.shape[-1] // 2
    out = torch.mul(x, cos, out=out) if out is not None else x * cos
    out[..., :half].addcmul_(x[..., half:], sin[..., :half], value=-1)
    out[..., half:].addcmul_(x[..., :half], sin[..., half:])
    return out


RMS_NORMS = ("LlamaRMSNorm", "MistralRMSNorm", "Qwen2RMSNorm")  # weight * x / rms(x), in float32


def norm(module: torch.nn.Module, x: torch.Tensor) -> torch.Tensor:
    """The module's RMS norm of x; for float32 through torch's rms_norm (one kernel, the same
    numbers: the module's own forward upcasts to float32 and back, a no-op there)."""
    if x.dtype == torch.float32 and type(module).__name__ in RMS_NORMS:
        return F.rms_norm(x, module.weight.shape, module.weight, module.variance_epsilon)
    return module(x)


def qkv(
    block: torch.nn.Module,
    attn: torch.nn.Module,
    h: torch.Tensor,
    pos_emb: Any,
    head_dim: int,
    queries_from: int | torch.Tensor = 0,
    out: tuple[torch.Tensor, torch.Tensor, torch.Tensor] | None = None,
) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
    """[B, S, d] layer input -> queries [B, H, S - queries_from, hd] (of positions queries_from..,
    or of the positions a tensor of indices names) and keys, values [B, Hkv, S, hd], rotary
    applied (pos_emb: cos, sin of [1 or B, S, hd]); written into `out` (queries, keys, values)
    when given."""
    q_out, k_out, v_out = out if out is not None else (None, None, None)
    x = norm(block.input_layernorm, h)
    shape = (*h.shape[:-1], -1, head_dim)
    k = rope(attn.k_proj(x).view(shape).transpose(1, 2), *pos_emb, out=k_out)
    v = attn.v_proj(x).view(shape).transpose(1, 2)
    if v_out is not None:
        v = v_out.copy_(v)
    if isinstance(queries_from, torch.Tensor):
        xq, pq = x[:, queries_from], tuple(e[:, queries_from] for e in pos_emb)
    else:
        xq, pq = x[:, queries_from:], tuple(e[:, queries_from:] for e in pos_emb)
    q = _queries(attn, xq, pq, head_dim, q_out)
    return q, k, v


def queries(
    block: torch.nn.Module, attn: torch.nn.Module, h: torch.Tensor, pos_emb: Any, head_dim: int
) -> torch.Tensor:
    """[B, S, d] layer input -> queries [B, H, S, hd], rotary applied (as `qkv`'s, alone)."""
    return _queries(attn, norm(block.input_layernorm, h), pos_emb, head_dim)


def _queries(
    attn: torch.nn.Module, x: torch.Tensor, pos_emb: Any, head_dim: int, out=None
) -> torch.Tensor:
    q = attn.q_proj(x).view(*x.shape[:-1], -1, head_dim).transpose(1, 2)
    return rope(q, *pos_emb, out=out)


def attend(
    attn: torch.nn.Module,
    q: torch.Tensor,
    k: torch.Tensor,
    v: torch.Tensor,
    mask: torch.Tensor | None,
    fused: bool | None = None,
) -> torch.Tensor:
    """Queries [B, H, S, hd] over keys/values [B, Hkv, T, hd] -> [B, S, H * hd] (the o_proj
    input, heads side by side). `mask`: additive [1, 1, S, T] or None; `fused`: None picks the
    fused kernel except for float32 on the CPU (in half precision its float32 accumulation keeps
    the engine within a rounding step of transformers' default attention)."""
    b, n_heads, s, hd = q.shape
    scaling = getattr(attn, "scaling", hd**-0.5)
    if fused is None:
        fused = q.device.type != "cpu" or q.dtype != torch.float32
    if fused:
        out = F.scaled_dot_product_attention(
            q, k, v, attn_mask=mask, scale=scaling, enable_gqa=k.shape[1] != n_heads
        )
        return out.transpose(1, 2).reshape(b, s, n_heads * hd)
    n_kv = k.shape[1]
    # Query heads of one key/value head side by side: [B, Hkv, G * S, hd], no copy of k or v.
    qg = q.reshape(b, n_kv, (n_heads // n_kv) * s, hd)
    scores = torch.matmul(qg, k.transpose(2, 3)).mul_(scaling)
    if mask is not None:
        scores.view(b, n_kv, n_heads // n_kv, s, -1).add_(mask[:, :, None])
    weights = torch.softmax(scores, dim=-1, dtype=torch.float32).to(q.dtype)
    out = torch.matmul(weights, v).view(b, n_heads, s, hd)
    return out.transpose(1, 2).reshape(b, s, n_heads * hd)


def mlp(block: torch.nn.Module, h: torch.Tensor) -> torch.Tensor:
    """The block's post-attention norm and MLP on h: down(act(gate(x)) * up(x)), the product
    taken in place (one [tokens, d_mlp] buffer fewer than the module's own forward)."""
    x = norm(block.post_attention_layernorm, h)
    m = block.mlp
    if not all(hasattr(m, a) for a in ("gate_proj", "up_proj", "down_proj", "act_fn")):
        return m(x)
    gate = m.gate_proj(x)
    # SiLU (Llama's activation) in place: one [tokens, d_mlp] buffer fewer.
    silu = type(m.act_fn).__name__ in ("SiLU", "SiLUActivation")
    gate = F.silu(gate, inplace=True) if silu else m.act_fn(gate)
    return m.down_proj(gate.mul_(m.up_proj(x)))
