"""Counting the weight matmuls a piece of code runs, as the cost model (hallu/engine/cost.py)
counts them."""

from __future__ import annotations

import torch
from torch.utils._python_dispatch import TorchDispatchMode


class WeightMatmuls(TorchDispatchMode):
    """Counts what every weight matmul (aten.mm/addmm: the linear layers) run inside computes,
    2 FLOP per multiply-add; attention's batched matmuls are left out, as in the cost model."""

    flops = 0

    def __torch_dispatch__(self, func, types, args=(), kwargs=None):
        if func in (torch.ops.aten.mm.default, torch.ops.aten.addmm.default):
            a, b = args[-2], args[-1]
            self.flops += 2 * a.shape[0] * a.shape[1] * b.shape[1]
        return func(*args, **(kwargs or {}))
