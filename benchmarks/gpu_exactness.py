"""Is the fast engine as exact in fp16/bf16 as the hook route? Both against a float32 reference.

    python benchmarks/gpu_exactness.py [--shape 13b] [--layers 40] [--cells 40] [--json OUT]

`hallu.bench --gpu` compares the engine's fp16 rows with the hook route's fp16 rows directly, and
on a 40-layer random model they differ by many rounding steps: both are approximations, and a
direct comparison cannot say which one is off. Here the same random weights run once in float32
through the hook route (one full forward per cell, the reference) and then, cast to fp16 and to
bf16, through the engine and through the hook route. What matters is whether the engine's error
against float32 is of the size of the hook route's own error (the dtype's noise), or larger.
Built on the device (`hallu.bench_gpu.shaped_model`); about 80 GB of GPU memory for 13b x 40.
"""

from __future__ import annotations

import argparse
import copy
import json
import sys

import torch

from hallu.bench import naive_sweep
from hallu.bench_gpu import random_pairs, shaped_model
from hallu.engine.adapters import Adapter
from hallu.engine.cells import make_cells, patch_cells
from hallu.engine.fast import trace


def spread_cells(n_layers: int, n_tokens: int, n: int) -> list:
    """`n` resid_pre cells spread over layers and positions (the shared first 3 tokens left out)."""
    every = make_cells("resid_pre", range(n_layers), [(t, t) for t in range(n_tokens)], n_layers)
    every = [c for c in every if c.position >= 3]
    return every[:: max(1, len(every) // n)][:n]


def errors(got: torch.Tensor, ref: torch.Tensor) -> dict[str, float]:
    """Max and mean over cells of max |logit difference|, and the same relative to |ref|."""
    per_cell = (got.float() - ref).abs().amax(-1)
    scale = ref.abs().amax(-1)
    return {
        "max_abs": per_cell.max().item(),
        "mean_abs": per_cell.mean().item(),
        "max_rel": (per_cell / scale).max().item(),
    }


def main(argv: list[str] | None = None) -> dict:
    p = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    p.add_argument("--shape", default="13b", choices=("13b", "tiny"))
    p.add_argument("--layers", type=int, default=0, help="0: the shape's own")
    p.add_argument("--tokens", type=int, default=64)
    p.add_argument("--cells", type=int, default=40)
    p.add_argument("--device", default="cuda")
    p.add_argument("--json", default=None)
    args = p.parse_args(argv)
    torch.manual_seed(0)
    model = shaped_model(args.shape, args.layers or None, args.device, torch.float32)
    src, tgt = random_pairs(1, args.tokens, model.config.vocab_size)[0]
    ad = Adapter(model)
    cells = spread_cells(ad.n_layers, args.tokens, args.cells)
    with torch.no_grad():
        ref = naive_sweep(model, src, tgt, cells).float()
        clean = model(torch.tensor([tgt], device=model.device)).logits[0, -1].float()
    out: dict = {"layers": ad.n_layers, "tokens": args.tokens, "cells": len(cells)}
    out["max_abs_logit"] = ref.abs().max().item()
    out["max_patch_effect"] = (ref - clean).abs().amax(-1).max().item()
    for name, dtype in (("float16", torch.float16), ("bfloat16", torch.bfloat16)):
        low = copy.deepcopy(model).to(dtype)
        lad = Adapter(low)
        with torch.no_grad():
            hook = naive_sweep(low, src, tgt, cells)
            fast, _ = patch_cells(lad, "resid_pre", trace(lad, src), trace(lad, tgt), cells)
        out[name] = {"hook_vs_fp32": errors(hook, ref), "engine_vs_fp32": errors(fast, ref)}
        out[name]["engine_vs_hook"] = errors(fast, hook.float())
        del low, lad
        if torch.cuda.is_available():
            torch.cuda.empty_cache()
    print(json.dumps(out, indent=1))
    if args.json:
        with open(args.json, "w") as f:
            json.dump(out, f, indent=1)
    return out


if __name__ == "__main__":
    main(sys.argv[1:])
