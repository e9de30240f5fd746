"""Metrics beyond the configured logit difference, and the numeric resolution of a value.

All arithmetic is float32 whatever dtype the model ran in. `resolution` is the spacing of the
model's dtype at a value's magnitude (one rounding step): a bf16 model cannot tell apart two
metric values closer than that, so analysis can flag differences below it.
"""

from __future__ import annotations

import torch

# Mantissa bits of the dtypes a model may run in.
_MANTISSA = {torch.float32: 23, torch.float16: 10, torch.bfloat16: 7, torch.float64: 52}


def kl_to_clean(logits: torch.Tensor, clean_logits: torch.Tensor) -> torch.Tensor:
    """KL(clean || run) of the next-token distributions, per row of `logits` [N, V], in nats."""
    lp = torch.log_softmax(logits.float(), -1)
    lp_clean = torch.log_softmax(clean_logits.float(), -1)
    return (lp_clean.exp() * (lp_clean - lp)).sum(-1)


def resolution(values: torch.Tensor, dtype: torch.dtype) -> torch.Tensor:
    """Spacing of `dtype` at |values| (float32): 2^(exponent - mantissa bits)."""
    v = values.float().abs().clamp_min(torch.finfo(dtype).tiny)
    _, exponent = torch.frexp(v)  # v = m * 2^exponent, m in [0.5, 1)
    step = torch.pow(2.0, (exponent - 1 - _MANTISSA[dtype]).float())
    return torch.where(values.isnan(), values.float(), step)  # NaN: a cell not computed
