"""Benchmark: cells/s of the naive one-forward-per-cell reference and of the fast engine.

    python -m hallu.bench                 # the three CPU cases, 3 repeats each, medians
    python -m hallu.bench --case a --repeats 1
    python -m hallu.bench --gpu           # Llama-2-13b-shaped fp16 model, random weights, on CUDA

Cases (full resid_pre sweeps, every layer x every position, one direction):
  a: tiny random Llama (8 layers, d_model 256, 8 heads), 8 pairs of 32 tokens differing at 3-6;
  b: the same with 64 tokens;
  c: the built-in prompt set through the tiny tokenizer's chat template (48 pairs, equal lengths).

The analytic FLOP ratio counts weight matmuls only (2 FLOP per weight per token; attention
scores are left out, a few percent at these lengths): naive = every cell runs all layers on all
tokens plus the unembedding at every position (as a plain forward does); engine = two traced runs
per pair plus, per computed cell, (L - l) layers on (T - t) tokens and one unembedding.
"""

from __future__ import annotations

import argparse
import statistics
import sys
import time
from collections.abc import Sequence
from dataclasses import dataclass

import torch

from hallu.engine.adapters import Adapter
from hallu.engine.cells import Cell, is_known, make_cells, patch_cells
from hallu.engine.fast import BatchOptions, trace

CASES = ("a", "b", "c")


@dataclass(frozen=True)
class Case:
    name: str
    pairs: list[tuple[list[int], list[int]]]  # (source ids, target ids)


def parse_args(argv: Sequence[str] | None = None) -> argparse.Namespace:
    p = argparse.ArgumentParser(prog="python -m hallu.bench", description=__doc__.split("\n")[0])
    p.add_argument("--case", choices=CASES, nargs="+", default=list(CASES))
    p.add_argument("--repeats", type=int, default=3, help="runs per case; the median is reported")
    p.add_argument("--threads", type=int, default=0, help="torch threads (0: torch's default)")
    p.add_argument(
        "--naive-pairs",
        type=int,
        default=0,
        help="time the naive reference on this many evenly spaced pairs (0: all); its cost per "
        "cell does not depend on the cell, so a subset estimates its cells/s",
    )
    p.add_argument("--gpu", action="store_true", help="Llama-2-13b-shaped fp16 model on CUDA")
    p.add_argument("--gpu-layers", type=int, default=40, help="--gpu: layers (13b has 40)")
    p.add_argument("--gpu-tokens", type=int, default=64, help="--gpu: tokens per prompt")
    p.add_argument("--gpu-pairs", type=int, default=2, help="--gpu: prompt pairs")
    p.add_argument("--gpu-naive-cells", type=int, default=40, help="--gpu: naive cells timed")
    args = p.parse_args(argv)
    if args.repeats < 1:
        p.error(f"--repeats {args.repeats}: give at least 1")
    if args.naive_pairs < 0:
        p.error(f"--naive-pairs {args.naive_pairs}: give 0 (all) or a positive count")
    for name in ("gpu_layers", "gpu_tokens", "gpu_pairs", "gpu_naive_cells"):
        if getattr(args, name) < 1:
            p.error(f"--{name.replace('_', '-')} {getattr(args, name)}: give at least 1")
    return args


# --- cases -------------------------------------------------------------------------------------


def cpu_model() -> tuple[torch.nn.Module, int]:
    from hallu.config import TinySpec
    from hallu.engine.tiny import build_model, build_tokenizer

    vocab = len(build_tokenizer())
    spec = TinySpec(n_layers=8, d_model=256, n_heads=8, n_kv_heads=8, d_mlp=688, seed=0)
    return build_model(spec, vocab), vocab


def random_case(name: str, n_tokens: int, vocab: int, n_pairs: int = 8) -> Case:
    g = torch.Generator().manual_seed(0)
    pairs = []
    for _ in range(n_pairs):
        tgt = torch.randint(8, vocab, (n_tokens,), generator=g).tolist()
        src = list(tgt)
        for p in range(3, 7):  # the pair differs at positions 3-6
            src[p] = 8 + (src[p] - 8 + 1) % (vocab - 8)
        pairs.append((src, tgt))
    return Case(name, pairs)


def builtin_case() -> Case:
    from hallu.config import PromptsCfg
    from hallu.engine.tiny import build_tokenizer
    from hallu.prompts import load_pairs, render

    tok, cfg = build_tokenizer(), PromptsCfg(path="builtin")
    pairs = [
        (render(tok, p.texts["certain"], cfg), render(tok, p.texts["uncertain"], cfg))
        for p in load_pairs(cfg)
    ]
    return Case("c: built-in prompts, chat template", pairs)


# --- the two ways to run a sweep ---------------------------------------------------------------


@torch.no_grad()
def naive_sweep(model: torch.nn.Module, src: list[int], tgt: list[int], cells: list[Cell]):
    """One full forward per cell: a pre-hook on the layer writes the source's residual stream."""
    ad = Adapter(model)
    layers, dev = ad.layers, ad.device
    hidden = model(torch.tensor([src], device=dev), output_hidden_states=True).hidden_states
    out = []
    for c in cells:
        value = hidden[c.layer][0, c.source_position]

        def hook(_m, args, kwargs, c=c, value=value):
            h = (args[0] if args else kwargs["hidden_states"]).clone()
            h[0, c.position] = value
            return ((h, *args[1:]), kwargs) if args else (args, {**kwargs, "hidden_states": h})

        handle = layers[c.layer].register_forward_pre_hook(hook, with_kwargs=True)
        try:
            out.append(model(torch.tensor([tgt], device=dev)).logits[0, -1])
        finally:
            handle.remove()
    return torch.stack(out)


def engine_sweep(
    ad: Adapter, src: list[int], tgt: list[int], cells: list[Cell], opts: BatchOptions
):
    ts, tt = trace(ad, src), trace(ad, tgt)
    return patch_cells(ad, "resid_pre", ts, tt, cells, opts)[0]


def all_cells(n_layers: int, n_tokens: int) -> list[Cell]:
    return make_cells("resid_pre", range(n_layers), [(t, t) for t in range(n_tokens)], n_layers)


# --- FLOP accounting ---------------------------------------------------------------------------


def flops_per_token(model: torch.nn.Module) -> tuple[float, float]:
    """(one layer, the unembedding): 2 FLOP per weight per token."""
    ad = Adapter(model)
    layer = sum(p.numel() for p in ad.layers[0].parameters() if p.dim() == 2)
    return 2.0 * layer, 2.0 * ad.unembed.weight.numel()


def flop_counts(model: torch.nn.Module, case: Case) -> tuple[float, float, int]:
    """(naive FLOP, engine FLOP, cells) of a full resid_pre sweep of `case`."""
    per_layer, unembed = flops_per_token(model)
    n_layers = len(Adapter(model).layers)
    naive = engine = 0.0
    n = 0
    for src, tgt in case.pairs:
        t_len = len(tgt)
        cells = all_cells(n_layers, t_len)
        n += len(cells)
        naive += len(cells) * t_len * (n_layers * per_layer + unembed)
        engine += 2 * (t_len * n_layers * per_layer + unembed)
        for c in cells:
            if not is_known(c, src, tgt):
                engine += (n_layers - c.layer) * (t_len - c.position) * per_layer + unembed
    return naive, engine, n


# --- CPU cases ---------------------------------------------------------------------------------


def run_case(model: torch.nn.Module, case: Case, repeats: int, naive_pairs: int = 0) -> dict:
    ad = Adapter(model)
    opts = BatchOptions()
    cells_per = [all_cells(ad.n_layers, len(t)) for _, t in case.pairs]
    n_cells = sum(len(c) for c in cells_per)
    step = max(1, len(case.pairs) // naive_pairs) if naive_pairs else 1
    sub = list(range(0, len(case.pairs), step))[: naive_pairs or None]
    n_naive = sum(len(cells_per[i]) for i in sub)
    naive_t, engine_t, worst = [], [], 0.0
    for _ in range(repeats):
        t = time.perf_counter()
        ref = {i: naive_sweep(model, *case.pairs[i], cells_per[i]) for i in sub}
        naive_t.append(time.perf_counter() - t)
        t = time.perf_counter()
        got = [
            engine_sweep(ad, s, tg, c, opts)
            for (s, tg), c in zip(case.pairs, cells_per, strict=True)
        ]
        engine_t.append(time.perf_counter() - t)
        worst = max(worst, max((ref[i] - got[i]).abs().max().item() for i in sub))
    naive_flop, engine_flop, _ = flop_counts(model, case)
    naive_cps = n_naive / statistics.median(naive_t)
    engine_cps = n_cells / statistics.median(engine_t)
    return {
        "case": case.name,
        "cells": n_cells,
        "naive_cells": n_naive,
        "naive_cells_per_s": naive_cps,
        "engine_cells_per_s": engine_cps,
        "ratio": engine_cps / naive_cps,
        "flop_ratio": naive_flop / engine_flop,
        "max_abs_diff": worst,
        "naive_s": naive_t,
        "engine_s": engine_t,
    }


def cpu_main(args: argparse.Namespace) -> list[dict]:
    model, vocab = cpu_model()
    makers = {
        "a": lambda: random_case("a: random, 32 tokens", 32, vocab),
        "b": lambda: random_case("b: random, 64 tokens", 64, vocab),
        "c": builtin_case,
    }
    print(f"torch {torch.__version__}, {torch.get_num_threads()} threads, float32, CPU")
    print(f"{'case':38s} {'cells':>6s} {'naive c/s':>10s} {'engine c/s':>11s} "
          f"{'ratio':>6s} {'FLOP ratio':>10s} {'max|diff|':>9s}")  # fmt: skip
    results = []
    for name in args.case:
        r = run_case(model, makers[name](), args.repeats, args.naive_pairs)
        results.append(r)
        print(
            f"{r['case']:38s} {r['cells']:6d} {r['naive_cells_per_s']:10.1f} "
            f"{r['engine_cells_per_s']:11.1f} {r['ratio']:6.2f} {r['flop_ratio']:10.2f} "
            f"{r['max_abs_diff']:9.1e}",
            flush=True,
        )
    return results


# --- GPU mode ----------------------------------------------------------------------------------


def matmul_rate(device: torch.device, n: int = 8192, reps: int = 20) -> float:
    """Measured fp16 FLOP/s of a large square matmul: the card's practical peak."""
    a = torch.randn(n, n, device=device, dtype=torch.float16)
    b = torch.randn(n, n, device=device, dtype=torch.float16)
    for _ in range(3):
        a @ b
    torch.cuda.synchronize(device)
    t = time.perf_counter()
    for _ in range(reps):
        a @ b
    torch.cuda.synchronize(device)
    return 2 * n**3 * reps / (time.perf_counter() - t)


def gpu_model(n_layers: int) -> torch.nn.Module:
    """Llama-2-13b's shape, random fp16 weights made directly on the GPU (no 52 GB CPU detour)."""
    from transformers import LlamaConfig, LlamaForCausalLM

    cfg = LlamaConfig(
        vocab_size=32000, hidden_size=5120, intermediate_size=13824, num_hidden_layers=n_layers,
        num_attention_heads=40, num_key_value_heads=40, max_position_embeddings=4096,
    )  # fmt: skip
    torch.set_default_dtype(torch.float16)
    try:
        with torch.device("cuda"):
            model = LlamaForCausalLM(cfg)
    finally:
        torch.set_default_dtype(torch.float32)
    return model.eval()


def gpu_main(args: argparse.Namespace) -> dict:
    if not torch.cuda.is_available():
        sys.exit("python -m hallu.bench --gpu: no CUDA device is visible; run it on a GPU machine")
    dev = torch.device("cuda")
    rate = matmul_rate(dev)
    model = gpu_model(args.gpu_layers)
    ad = Adapter(model)
    g = torch.Generator().manual_seed(0)
    case = []
    for _ in range(args.gpu_pairs):
        tgt = torch.randint(3, 32000, (args.gpu_tokens,), generator=g).tolist()
        src = list(tgt)
        src[3:7] = [(x + 1) % 32000 for x in src[3:7]]
        case.append((src, tgt))
    cells = all_cells(ad.n_layers, args.gpu_tokens)
    engine_sweep(ad, *case[0], cells[:64], BatchOptions())  # warm-up
    torch.cuda.synchronize()
    t = time.perf_counter()
    for src, tgt in case:
        engine_sweep(ad, src, tgt, cells, BatchOptions())
    torch.cuda.synchronize()
    engine_s = time.perf_counter() - t
    sub = cells[:: max(1, len(cells) // args.gpu_naive_cells)][: args.gpu_naive_cells]
    t = time.perf_counter()
    naive_sweep(model, *case[0], sub)
    torch.cuda.synchronize()
    naive_cps = len(sub) / (time.perf_counter() - t)
    naive_flop, engine_flop, n = flop_counts(model, Case("gpu", case))
    r = {
        "matmul_tflops": rate / 1e12,
        "engine_cells_per_s": n / engine_s,
        "naive_cells_per_s": naive_cps,
        "engine_tokens_per_s": engine_flop / flops_per_token(model)[0] / ad.n_layers / engine_s,
        "mfu": engine_flop / engine_s / rate,
        "flop_ratio": naive_flop / engine_flop,
    }
    r["ratio"] = r["engine_cells_per_s"] / naive_cps
    print(torch.cuda.get_device_name(dev), f"{args.gpu_layers} layers, {args.gpu_tokens} tokens")
    for k, v in r.items():
        print(f"{k:22s} {v:12.3f}")
    return r


def main(argv: Sequence[str] | None = None) -> None:
    args = parse_args(argv)
    if args.threads:
        torch.set_num_threads(args.threads)
    if args.gpu:
        gpu_main(args)
    else:
        cpu_main(args)


if __name__ == "__main__":
    main()
