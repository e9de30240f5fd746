"""Benchmark: cells/s of the naive one-forward-per-cell reference and of the fast engine.

    python -m hallu.bench                 # the three CPU cases, 3 repeats each, medians
    python -m hallu.bench --case a --repeats 1
    python -m hallu.bench --gpu           # Llama-2-13b-shaped fp16 model, random weights, on CUDA
    python -m hallu.bench --gpu --device cpu --shape tiny   # the same code path, on the CPU

Cases (full resid_pre sweeps, every layer x every position, one direction):
  a: tiny random Llama (8 layers, d_model 256, 8 heads), 8 pairs of 32 tokens differing at 3-6;
  b: the same with 64 tokens;
  c: the built-in prompt set through the tiny tokenizer's chat template (48 pairs, equal lengths).

The analytic FLOP ratio counts weight matmuls only (2 FLOP per weight per token; attention
scores are left out, a few percent at these lengths): naive = every cell runs all layers on all
tokens plus the unembedding at every position (as a plain forward does); engine = two traced runs
per pair plus, per computed cell, what the engine runs (hallu.engine.cost.cell_flops): layers
l..L-2 on (T - t) tokens, less the first layer's q/k/v projections of unpatched positions, the
last layer at the last position, one unembedding.
"""

from __future__ import annotations

import argparse
import json
import statistics
import time
from collections import defaultdict
from collections.abc import Sequence

import torch

from hallu.bench_baselines import (
    TL_MISSING,
    length_groups,
    metric,
    naive_batched,
    transformer_lens,
    transformer_lens_bridge,
)
from hallu.bench_cases import Case, all_cells, flop_counts, naive_sweep
from hallu.engine.adapters import Adapter
from hallu.engine.cells import Cell, patch_cells, patch_pairs
from hallu.engine.cost import CPU_BATCH_TOKENS
from hallu.engine.fast import BatchOptions, trace
from hallu.engine.host_memory import keep_freed_memory

# Case, naive_sweep, all_cells, flop_counts are used here and re-exported for tests/benchmarks.
__all__ = ["Case", "all_cells", "flop_counts", "main", "naive_sweep", "parse_args", "run_case"]

CASES = ("a", "b", "c")


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
    p.add_argument("--device", default="cuda", help="--gpu: device (cpu tries the code path)")
    p.add_argument("--shape", choices=("13b", "tiny"), default="13b", help="--gpu: model shape")
    p.add_argument("--gpu-layers", type=int, default=0, help="--gpu: layers (0: the shape's)")
    p.add_argument("--gpu-tokens", type=int, default=64, help="--gpu: tokens per prompt")
    p.add_argument("--gpu-pairs", type=int, default=4, help="--gpu: prompt pairs")
    p.add_argument("--gpu-naive-cells", type=int, default=40, help="--gpu: cells checked")
    p.add_argument(
        "--calibration",
        default=None,
        help="--gpu: calibration file to update (default: hallu.run.gpus.calibration_path(); "
        "'none' writes nothing)",
    )
    p.add_argument(
        "--no-tl", action="store_true", help="skip TransformerLens even when it is installed"
    )
    p.add_argument("--json", default=None, help="also write every number to this JSON file")
    args = p.parse_args(argv)
    if args.repeats < 1:
        p.error(f"--repeats {args.repeats}: give at least 1")
    if args.naive_pairs < 0:
        p.error(f"--naive-pairs {args.naive_pairs}: give 0 (all) or a positive count")
    if args.gpu_layers < 0:
        p.error(f"--gpu-layers {args.gpu_layers}: give 0 (the shape's) or a positive count")
    for name in ("gpu_tokens", "gpu_pairs", "gpu_naive_cells"):
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


# --- this machine's limit -----------------------------------------------------------------------


@torch.no_grad()
def matmul_rate(
    model: torch.nn.Module, n_tokens: int = CPU_BATCH_TOKENS, repeats: int = 5
) -> float:
    """FLOP/s of this machine's dense matmuls at the bench's shapes and dtype: every weight of one
    decoder layer and the unembedding applied to `n_tokens` rows (F.linear, as the layers call
    it; the engine fills its CPU batches to this many tokens), best of `repeats` rounds of 10."""
    ad = Adapter(model)
    weights = [p for p in ad.layers[0].parameters() if p.dim() == 2] + [ad.unembed.weight]
    xs = {w.shape[1]: torch.randn(n_tokens, w.shape[1], dtype=w.dtype) for w in weights}
    flops = 10 * sum(2.0 * n_tokens * w.numel() for w in weights)
    best = float("inf")
    for _ in range(repeats):
        t = time.perf_counter()
        for _ in range(10):
            for w in weights:
                torch.nn.functional.linear(xs[w.shape[1]], w)
        best = min(best, time.perf_counter() - t)
    return flops / best


# --- the engine's sweep (the reference, naive_sweep, is in hallu.bench_cases) -----------------


def engine_sweep(
    ad: Adapter, src: list[int], tgt: list[int], cells: list[Cell], opts: BatchOptions
):
    ts, tt = trace(ad, src), trace(ad, tgt)
    return patch_cells(ad, "resid_pre", ts, tt, cells, opts)[0]


# --- CPU cases ---------------------------------------------------------------------------------


def engine_case(ad: Adapter, pairs, cells_per, opts: BatchOptions) -> list[torch.Tensor]:
    """All pairs of a case in one schedule (rows of equal-length pairs share batches)."""
    items = [(trace(ad, s), trace(ad, t), c) for (s, t), c in zip(pairs, cells_per, strict=True)]
    return [out for out, _ in patch_pairs(ad, "resid_pre", items, opts)]


def _timed(fn):
    t = time.perf_counter()
    out = fn()
    return out, time.perf_counter() - t


def _group_metric(got: list[torch.Tensor], group: list[int], n_layers: int) -> torch.Tensor:
    """[L, T] the engine's logit-difference metric summed over a group's pairs."""
    return sum(metric(got[i]).reshape(n_layers, -1) for i in group)  # type: ignore[return-value]


def run_case(model: torch.nn.Module, case: Case, repeats: int, naive_pairs: int = 0, bridge=None):
    """Every way to run the case's sweep, alternating within each repeat; medians of seconds."""
    ad, opts = Adapter(model), BatchOptions()
    cells_per = [all_cells(ad.n_layers, len(t)) for _, t in case.pairs]
    step = max(1, len(case.pairs) // naive_pairs) if naive_pairs else 1
    sub = list(range(0, len(case.pairs), step))[: naive_pairs or None]
    groups = length_groups(case.pairs)
    secs: dict[str, list[float]] = defaultdict(list)
    worst: dict[str, float] = defaultdict(float)
    rates: list[float] = []
    for _ in range(repeats):
        ref, s = _timed(lambda: {i: naive_sweep(model, *case.pairs[i], cells_per[i]) for i in sub})
        secs["naive"].append(s)
        batched, s = _timed(lambda: [naive_batched(model, case.pairs, g) for g in groups])
        secs["batched"].append(s)
        if bridge is not None:
            tl, s = _timed(lambda: [transformer_lens(bridge, case.pairs, g) for g in groups])
            secs["tl"].append(s)
        _, s = _timed(
            lambda: [engine_sweep(ad, *p, c, opts) for p, c in zip(case.pairs, cells_per)]  # noqa: B905
        )
        secs["engine_per_pair"].append(s)
        got, s = _timed(lambda: engine_case(ad, case.pairs, cells_per, opts))
        secs["engine"].append(s)
        rates.append(matmul_rate(model))  # in every repeat: the machine's speed drifts
        worst["naive"] = max([worst["naive"]] + [(ref[i] - got[i]).abs().max().item() for i in sub])
        for k, g in enumerate(groups):
            mine = _group_metric(got, g, ad.n_layers)
            worst["batched"] = max(worst["batched"], (mine - batched[k]).abs().max().item())
            if bridge is not None:
                worst["tl"] = max(worst["tl"], (mine - tl[k]).abs().max().item())
    n_cells = sum(len(c) for c in cells_per)
    counts = {"naive": sum(len(cells_per[i]) for i in sub)}
    naive_flop, engine_flop, _, n_known = flop_counts(model, case)
    # The work each method does: a forward per cell (the one-pair reference on its subset).
    work = {"naive": naive_flop * counts["naive"] / n_cells, "engine": engine_flop}
    rate = statistics.median(rates)
    r = {
        "case": case.name,
        "cells": n_cells,
        "known_cells": n_known,
        "naive_cells": counts["naive"],
    }
    r["flop_ratio"] = naive_flop / engine_flop  # the same for every baseline: a forward per cell
    r["matmul_flops_per_s"] = rate
    for name, times in secs.items():
        r[f"{name}_cells_per_s"] = counts.get(name, n_cells) / statistics.median(times)
        r[f"{name}_s"] = times
        if name != "engine_per_pair":  # achieved FLOP/s and its share of the matmul rate
            r[f"{name}_flops_per_s"] = work.get(name, naive_flop) / statistics.median(times)
            r[f"{name}_of_matmul"] = r[f"{name}_flops_per_s"] / rate
    for name in ("naive", "batched", "tl", "engine_per_pair"):
        if f"{name}_cells_per_s" in r:
            r[f"x_{name}"] = r["engine_cells_per_s"] / r[f"{name}_cells_per_s"]
    r["max_abs_diff"] = dict(worst)
    return r


COLUMNS = [("naive", "1-pair"), ("batched", "batched"), ("tl", "TLens")]
COLUMNS += [("engine_per_pair", "per-pair")]  # the engine without cross-pair batching


def cpu_main(args: argparse.Namespace) -> list[dict]:
    from hallu.engine.tiny import build_tokenizer

    model, vocab = cpu_model()
    bridge = None if args.no_tl else transformer_lens_bridge(model, build_tokenizer())
    tl_status = "off (--no-tl)" if args.no_tl else "yes" if bridge is not None else TL_MISSING
    makers = {
        "a": lambda: random_case("a: random, 32 tokens", 32, vocab),
        "b": lambda: random_case("b: random, 64 tokens", 64, vocab),
        "c": builtin_case,
    }
    print(
        f"torch {torch.__version__}, {torch.get_num_threads()} threads, float32, CPU; "
        f"TransformerLens: {tl_status}"
    )
    print(
        "cells/s of each baseline, the engine's, and the engine's speed-up over each "
        "(x ...); FLOP ratio = naive FLOP / engine FLOP, the same for every baseline; "
        "achieved FLOP/s (weight matmuls counted) and its share of this machine's dense matmul "
        "rate at the bench's shapes (float32, 512-token batches)"
    )
    results = []
    for name in args.case:
        r = run_case(model, makers[name](), args.repeats, args.naive_pairs, bridge)
        results.append(r)
        print(
            f"{r['case']}: {r['cells']} cells ({r['known_cells']} known: the baseline, no "
            f"pass), engine {r['engine_cells_per_s']:.1f} cells/s, FLOP ratio {r['flop_ratio']:.2f}"
        )
        rate = r["matmul_flops_per_s"] / 1e9
        print(f"   matmul rate {rate:.2f} GFLOP/s; engine {_achieved(r, 'engine')}")
        for key, label in COLUMNS:
            if f"x_{key}" in r:
                achieved = f"  {_achieved(r, key)}" if f"{key}_flops_per_s" in r else ""
                print(
                    f"   vs {label:9s} {r[f'{key}_cells_per_s']:9.1f} cells/s  "
                    f"x{r[f'x_{key}']:6.2f}  max|diff| {r['max_abs_diff'].get(key, 0.0):.1e}"
                    f"{achieved}"
                )
    return results


def _achieved(r: dict, key: str) -> str:
    return f"{r[f'{key}_flops_per_s'] / 1e9:.2f} GFLOP/s ({r[f'{key}_of_matmul']:.0%} of it)"


def main(argv: Sequence[str] | None = None) -> None:
    args = parse_args(argv)
    keep_freed_memory()  # for every way timed here alike (hallu/engine/host_memory.py)
    if args.threads:
        torch.set_num_threads(args.threads)
    if args.gpu:
        from hallu.bench_gpu import gpu_main

        gpu_main(args)
    else:
        results = cpu_main(args)
        if args.json:
            with open(args.json, "w") as f:
                json.dump(results, f, indent=1)


if __name__ == "__main__":
    main()
