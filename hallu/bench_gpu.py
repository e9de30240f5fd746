"""`python -m hallu.bench --gpu`: the fast engine on a Llama-2-13b-shaped model, random weights.

What it does, in order (a few minutes on one H100/H200; `--device cpu --shape tiny` runs the
same code on the CPU in seconds, which is what the test suite does):

1. builds the model from its shape (LlamaConfig) with random fp16 weights made directly on the
   device: 13B parameters never exist on the CPU;
2. times a large fp16 matmul (the card's practical peak) and a full resid_pre sweep of a few
   random pairs through the engine (all pairs in one schedule, so rows of different pairs share
   batches), median of `--repeats`;
3. prints cells/s, achieved TFLOP/s (the analytic weight-matmul FLOP of hallu.bench's accounting,
   attention scores left out, so an underestimate) and MFU against the datasheet peak of the card;
4. checks the engine against the one-forward-per-cell hook reference on the same model, in fp16
   and then bf16: the largest |difference| of the last-position logits, and the fraction of cells
   whose difference is within one rounding step of the dtype at that cell's logit magnitude;
5. writes the calibration `mode=plan` reads (hallu.run.gpus) for a known GPU kind.
"""

from __future__ import annotations

import argparse
import json
import statistics
import time
from pathlib import Path
from typing import Any

import torch

from hallu.bench_cases import Case, flop_counts, naive_sweep
from hallu.engine.adapters import Adapter
from hallu.engine.cells import make_cells, patch_cells, patch_pairs
from hallu.engine.fast import BatchOptions, trace
from hallu.engine.metrics import resolution
from hallu.run import gpus

# Llama-2-13b (its config.json on the hub) and a tiny stand-in for CPU tests.
SHAPES: dict[str, dict[str, int]] = {
    "13b": dict(hidden_size=5120, intermediate_size=13824, num_hidden_layers=40,
                num_attention_heads=40, num_key_value_heads=40, vocab_size=32000),
    "tiny": dict(hidden_size=64, intermediate_size=172, num_hidden_layers=4,
                 num_attention_heads=4, num_key_value_heads=2, vocab_size=512),
}  # fmt: skip


def shaped_model(shape: str, n_layers: int | None, device: str, dtype: torch.dtype):
    """A LlamaForCausalLM of `shape` with random weights created on `device` in `dtype`."""
    from transformers import LlamaConfig, LlamaForCausalLM

    dims = dict(SHAPES[shape])
    if n_layers:
        dims["num_hidden_layers"] = n_layers
    cfg = LlamaConfig(**dims, max_position_embeddings=4096)
    old = torch.get_default_dtype()
    torch.set_default_dtype(dtype)  # parameters are born in fp16 on the device
    try:
        with torch.device(device):
            model = LlamaForCausalLM(cfg)
    finally:
        torch.set_default_dtype(old)
    # Random init gives logits of about sqrt(d) * 0.02 (~1.4 for 13b); real chat models reach
    # 10-30, where one fp16/bf16 rounding step is larger. Scale the unembedding so the rounding
    # check below sees realistic magnitudes (logits ~ sqrt(d) * 0.2).
    with torch.no_grad():
        model.lm_head.weight.mul_(10.0)
    return model.eval()


def _sync(device: torch.device) -> None:
    if device.type == "cuda":
        torch.cuda.synchronize(device)


def matmul_rate(device: torch.device, dtype: torch.dtype, n: int, reps: int = 10) -> float:
    """Measured FLOP/s of an n x n x n matmul: the card's practical peak."""
    a = torch.randn(n, n, device=device, dtype=dtype)
    b = torch.randn(n, n, device=device, dtype=dtype)
    for _ in range(2):
        a @ b
    _sync(device)
    t = time.perf_counter()
    for _ in range(reps):
        a @ b
    _sync(device)
    return 2 * n**3 * reps / (time.perf_counter() - t)


def random_pairs(n_pairs: int, n_tokens: int, vocab: int) -> list[tuple[list[int], list[int]]]:
    """Pairs that share 3 leading tokens and differ at positions 3-6 (as the CPU cases)."""
    g = torch.Generator().manual_seed(0)
    pairs = []
    for _ in range(n_pairs):
        tgt = torch.randint(3, vocab, (n_tokens,), generator=g).tolist()
        src = list(tgt)
        src[3:7] = [3 + (x - 3 + 1) % (vocab - 3) for x in src[3:7]]
        pairs.append((src, tgt))
    return pairs


def time_sweep(model, pairs, repeats: int) -> list[float]:
    """Seconds of full resid_pre sweeps of all pairs in one schedule (traces included)."""
    ad, dev = Adapter(model), model.device
    n_layers, n_tokens = ad.n_layers, len(pairs[0][1])
    cells = make_cells("resid_pre", range(n_layers), [(t, t) for t in range(n_tokens)], n_layers)
    src, tgt = pairs[0]
    patch_cells(ad, "resid_pre", trace(ad, src), trace(ad, tgt), cells[:: max(1, n_tokens)])
    seconds = []
    for _ in range(repeats):
        _sync(dev)
        t = time.perf_counter()
        items = [(trace(ad, s), trace(ad, tg), cells) for s, tg in pairs]
        patch_pairs(ad, "resid_pre", items, BatchOptions())
        _sync(dev)
        seconds.append(time.perf_counter() - t)
    return seconds


def check_dtype(model, pair, n_cells: int) -> dict[str, Any]:
    """Engine vs the one-forward-per-cell hook reference on `n_cells` spread-out cells."""
    ad = Adapter(model)
    n_layers, n_tokens = ad.n_layers, len(pair[1])
    cells = make_cells("resid_pre", range(n_layers), [(t, t) for t in range(n_tokens)], n_layers)
    cells = [c for c in cells if c.position >= 3]  # a pair's first 3 tokens are shared: known
    cells = cells[:: max(1, len(cells) // n_cells)][:n_cells]
    t = time.perf_counter()
    ref = naive_sweep(model, *pair, cells).float()
    _sync(model.device)
    naive_s = time.perf_counter() - t
    target = trace(ad, pair[1])
    got, _ = patch_cells(ad, "resid_pre", trace(ad, pair[0]), target, cells)
    diff = (got.float() - ref).abs().amax(-1)
    step = resolution(ref.abs().amax(-1), ad.dtype)
    effect = (ref - target.logits.float()).abs().amax(-1)
    return {
        # Not a vacuous check: the share of cells whose patch moved the logits by > 1 step.
        "moved_by_patch": (effect > step).float().mean().item(),
        "max_abs_diff": diff.max().item(),
        "max_abs_logit": ref.abs().max().item(),
        "within_one_step": (diff <= step).float().mean().item(),
        "max_steps": (diff / step).max().item(),  # the largest difference, in rounding steps
        "cells": len(cells),
        "naive_cells_per_s": len(cells) / naive_s,
    }


def baselines(model, pairs, n_cells: int) -> dict[str, Any]:
    """Cells/s of the naive loop batched across all pairs (on `n_cells` cells) and of the
    engine run pair by pair (no cross-pair batching), one run each, fp16."""
    from hallu.bench_baselines import naive_batched

    ad, dev = Adapter(model), model.device
    n_layers, n_tokens = ad.n_layers, len(pairs[0][1])
    every = [(lay, t) for lay in range(n_layers) for t in range(n_tokens)]
    cells = every[:: max(1, len(every) // n_cells)][:n_cells]
    _sync(dev)
    t = time.perf_counter()
    naive_batched(model, pairs, list(range(len(pairs))), cells)
    _sync(dev)
    batched = len(cells) * len(pairs) / (time.perf_counter() - t)
    sweep = make_cells("resid_pre", range(n_layers), [(i, i) for i in range(n_tokens)], n_layers)
    t = time.perf_counter()
    for src, tgt in pairs:
        patch_cells(ad, "resid_pre", trace(ad, src), trace(ad, tgt), sweep)
    _sync(dev)
    per_pair = len(sweep) * len(pairs) / (time.perf_counter() - t)
    return {"batched_cells_per_s": batched, "per_pair_cells_per_s": per_pair}


def gpu_run(args: argparse.Namespace) -> dict[str, Any]:
    """Build, time, check; returns every number printed."""
    device = torch.device(args.device)
    cuda = device.type == "cuda"
    name = torch.cuda.get_device_name(device) if cuda else "cpu"
    kind = gpus.kind_for_device(name) if cuda else None
    rate = matmul_rate(device, torch.float16 if cuda else torch.float32, 8192 if cuda else 256)
    t = time.perf_counter()
    model = shaped_model(args.shape, args.gpu_layers, args.device, torch.float16)
    _sync(device)
    r: dict[str, Any] = {"device_name": name, "gpu_kind": kind, "shape": args.shape}
    r["build_s"] = time.perf_counter() - t
    r["layers"] = Adapter(model).n_layers
    r["tokens"], r["pairs"] = args.gpu_tokens, args.gpu_pairs
    pairs = random_pairs(args.gpu_pairs, args.gpu_tokens, model.config.vocab_size)
    r["sweep_s"] = time_sweep(model, pairs, args.repeats)
    naive_flop, engine_flop, n_cells, _ = flop_counts(model, Case("gpu", pairs))
    seconds = statistics.median(r["sweep_s"])
    r["cells"], r["cells_per_s"] = n_cells, n_cells / seconds
    r["engine_tflops"] = engine_flop / seconds / 1e12
    r["matmul_tflops"] = rate / 1e12
    # Dense fp16/bf16 tensor-core peaks from the vendors' datasheets (no sparsity): H100 SXM and
    # H200 989 TFLOP/s (NVIDIA H100/H200 Tensor Core GPU datasheets), A100 312 (A100 datasheet),
    # L40S 362 (L40S datasheet); hallu.run.gpus holds the table.
    r["peak_tflops"] = gpus.GPUS[kind].peak_tflops if kind else None
    r["mfu"] = r["engine_tflops"] / r["peak_tflops"] if kind else None
    r["mfu_of_matmul"] = r["engine_tflops"] / r["matmul_tflops"]
    r["flop_ratio"] = naive_flop / engine_flop
    r["fp16"] = check_dtype(model, pairs[0], args.gpu_naive_cells)
    r["measured_ratio_vs_naive"] = r["cells_per_s"] / r["fp16"]["naive_cells_per_s"]
    r.update(baselines(model, pairs, args.gpu_naive_cells))
    r["measured_ratio_vs_batched"] = r["cells_per_s"] / r["batched_cells_per_s"]
    model.to(torch.bfloat16)  # in place: never two copies of the weights
    r["bf16"] = check_dtype(model, pairs[0], args.gpu_naive_cells)
    if kind is not None and args.calibration != "none":
        path = None if args.calibration is None else Path(args.calibration)
        r["calibration"] = gpus.write_calibration(
            kind,
            r["engine_tflops"],
            path,
            cells_per_s=r["cells_per_s"],
            matmul_tflops=r["matmul_tflops"],
            device_name=name,
        )
        r["calibration_path"] = str(path or gpus.calibration_path())
    return r


KEYS = ("build_s", "cells", "cells_per_s", "engine_tflops", "matmul_tflops", "peak_tflops",
        "mfu", "mfu_of_matmul", "flop_ratio", "measured_ratio_vs_naive", "batched_cells_per_s",
        "measured_ratio_vs_batched", "per_pair_cells_per_s")  # fmt: skip


def gpu_main(args: argparse.Namespace) -> dict[str, Any]:
    if args.device.startswith("cuda") and not torch.cuda.is_available():
        raise SystemExit(
            "python -m hallu.bench --gpu: no CUDA device is visible; run it on a GPU machine, "
            "or add --device cpu --shape tiny to try the code path"
        )
    r = gpu_run(args)
    print(
        f"{r['device_name']} ({r['gpu_kind'] or 'no datasheet peak'}), shape {r['shape']}: "
        f"{r['layers']} layers, {r['pairs']} pairs x {r['tokens']} tokens, fp16, random weights"
    )
    for key in KEYS:
        value = r[key]
        print(f"{key:24s} {'n/a' if value is None else format(value, '.4g')}")
    print(f"{'sweep_s (each repeat)':24s} {' '.join(f'{s:.3f}' for s in r['sweep_s'])}")
    for dt in ("fp16", "bf16"):
        c = r[dt]
        print(
            f"{dt} engine vs hook reference on {c['cells']} cells: max|diff| "
            f"{c['max_abs_diff']:.3g} (logits up to {c['max_abs_logit']:.3g}), "
            f"{100 * c['within_one_step']:.1f}% of cells within one {dt} rounding step (at most "
            f"{c['max_steps']:.2g} steps); "
            f"{100 * c['moved_by_patch']:.0f}% of cells moved by their patch by more than a step"
        )
    if "calibration" in r:
        print(f"calibration for {r['gpu_kind']} written to {r['calibration_path']}")
    else:
        print("calibration: not written (no known GPU kind, or --calibration none)")
    if args.json:
        with open(args.json, "w") as f:
            json.dump(r, f, indent=1)
    return r
