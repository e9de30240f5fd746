"""What a study will cost before it runs: FLOPs, memory per replica, wall time and money. No torch.

Inputs are the plan (hallu/run/plan.py), the model's shape and the prompts' token counts (from
the tokenizer when it is on this machine, else estimated from word counts; the printout says
which). Models:

- *naive FLOP*: one full forward pass of the target prompt per cell (the plan's own count);
- *engine FLOP*: the fast engine's work, as the engine's own cost model counts it
  (hallu/engine/cost.py, which hallu.bench's `flop_counts` asks too): both prompts traced once,
  then per computed cell only what the engine runs (Llama-family layers; other families run
  every layer in full, so for them this is a little low). Cells known without a forward pass
  cost nothing: where the prompts agree on every token up to the cell (same position), and
  resid_pre cells at layer 0 that write the target's own token (the engine finds these by
  comparing activations; here the tokens stand in, as for rotary-position models).
  Control shards run through the engine too (hallu/run/controls.py): the target and the
  control's source prompt traced (norm_matched: the real source, its vectors' norms), then the
  cells from that source, end-aligned, with the same known-cell rules.
  `sweep.engine=hooks` runs one forward per cell: its naive FLOP. Without the tokenizer nothing
  is known, so the estimate is an upper bound;
- *memory per replica*: the weights, the two traces of one pair (residual stream entering every
  layer, keys and values of every layer), one batch of the engine (one position's cells over the
  swept layers, with the engine's own per-row estimate) and ~1.5 GB of CUDA context; the engine
  grows its batches into what is left, up to half the free memory;
- *time*: engine FLOP / (replicas x peak x MFU); decode steps by the bytes they read
  (hallu/run/stage_cost.py). A replica spread over N GPUs (layers placed per GPU) runs one GPU
  at a time, so it counts once in the rate but N times in the cost.
"""

from __future__ import annotations

import itertools
import math
from collections.abc import Callable
from dataclasses import dataclass, replace
from typing import Any

from hallu.config import DIRECTIONS, Config
from hallu.engine.cost import (
    CPU_BATCH_BYTES,
    CPU_BATCH_TOKENS,
    GPU_BATCH_TOKENS,
    known_by_tokens,
    row_bytes,
    schedule_flops,
    token_flops,
    trace_flops,
)
from hallu.errors import UserError
from hallu.prompts import shared_prefix
from hallu.run.gpus import (
    ASSUMED_DECODE_BANDWIDTH,
    GPU_LAYER_CALL_S,
    GPUS,
    Gpu,
    calibrated_model,
    card,
    cpu_rates,
    mfu_for,
    run_rates,
)
from hallu.run.plan import (
    Plan,
    control_source_ids,
    end_aligned,
    resolve_layers,
    resolve_positions,
)
from hallu.run.stage_cost import (
    Rates,
    Stage,
    combined,
    generation,
    mechanism_stages,
    noise_stage,
    seconds,
)

GB = 1e9
CUDA_OVERHEAD = 1.5 * GB  # context, cuBLAS workspace, allocator slack
USABLE = 0.95  # of a card's memory
LOAD_RATE = 1 * GB  # bytes/s a replica reads weights from local NVMe (infra stages them there)


def n_params(shape: Any) -> int:
    hd = shape.head_size
    attn = shape.d_model * hd * (2 * shape.n_heads + 2 * shape.n_kv_heads)
    layer = attn + 3 * shape.d_model * shape.d_mlp + 2 * shape.d_model
    return shape.n_layers * layer + 2 * shape.vocab_size * shape.d_model + shape.d_model


def dtype_bytes(cfg: Config) -> int:
    if cfg.model.dtype == "float32" or (cfg.model.dtype == "auto" and cfg.cluster.gpu is None):
        return 4
    return 2


def engine_flops(
    cfg: Config,
    shape: Any,
    lengths: dict[str, dict[str, int]],
    plan: Plan,
    tokens: dict[str, dict[str, list[int]]] | None = None,
    unrelated: Callable[[int], list[int]] | None = None,
) -> float:
    """The fast engine's FLOP for every shard of the plan (see the module docstring).

    `tokens[pair][condition]`: the prompts' token ids (from the tokenizer), for the cells known
    without a forward pass; without them every cell is counted. `unrelated(n)`: the random_source
    control's prompt of at least n tokens (hallu/run/controls.py), with the tokenizer."""
    return sum(engine_flops_by_stage(cfg, shape, lengths, plan, tokens, unrelated).values())


def engine_flops_by_stage(
    cfg: Config,
    shape: Any,
    lengths: dict[str, dict[str, int]],
    plan: Plan,
    tokens: dict[str, dict[str, list[int]]] | None = None,
    unrelated: Callable[[int], list[int]] | None = None,
) -> dict[str, float]:
    """engine_flops per stage: "patching" (the experiment's shards), "control NAME" each."""
    f = token_flops(shape.d_model, shape.n_heads, shape.n_kv_heads, shape.d_mlp, shape.vocab_size)
    sweep, L = cfg.sweep, shape.n_layers
    layers = resolve_layers(sweep.layers, L)
    per_cell = shape.n_heads if sweep.component == "head" else 1
    # resid_pre at layer 0 writing the target's own token: known (module docstring).
    layer0 = 0 in layers and sweep.component == "resid_pre" and sweep.window == 1
    # Without the tokenizer: stand-ins of the right lengths that match nothing (nothing known).
    fresh = itertools.count(1)
    never = lambda n: [-next(fresh) for _ in range(n)]  # noqa: E731
    ids = tokens or {p: {c: never(n) for c, n in conds.items()} for p, conds in lengths.items()}
    unrelated = unrelated or never
    budget, batch_tokens = _batch_budget(cfg, shape)
    hd, b = shape.d_model // shape.n_heads, dtype_bytes(cfg)

    def priced(n: int, parts: list[list[tuple[int, int]]]) -> float:
        """The engine's schedule of one length group: the rows of each target."""
        starts = [r for part in parts for r in part]
        if not starts:
            return 0.0
        rb = row_bytes(shape.d_model, shape.d_mlp, shape.n_heads, hd, n, b)
        n_targets = sum(1 for part in parts if part)
        return schedule_flops(L, n, starts, n_targets, f, rb, budget, batch_tokens)

    by: dict[str, float] = {}
    for s in plan.shards:
        name = "patching" if s.control is None else f"control {s.control}"
        by[name] = by.get(name, 0.0)
        if sweep.engine == "hooks":
            by[name] += s.flops_naive
            continue
        source, target = DIRECTIONS[s.direction]
        groups: dict[int, list[list[tuple[int, int]]]] = {}  # the shard's pairs share batches
        traced: set[tuple[int, ...]] = set()  # a control shard traces each prompt once
        for pid in s.pair_ids:
            src, tgt = ids[pid][source], ids[pid][target]
            positions = resolve_positions(sweep.positions, pid, len(src), len(tgt))
            if s.control is not None:  # hallu/run/controls.py: which prompt, aligned how
                got = _control_source(s.control, ids, pid, s.direction, unrelated, never, positions)
                if got is None:
                    continue  # no neutral prompt: no cells
                src, positions = got
            part = _rows(src, tgt, positions, layers, per_cell, layer0)
            if s.control is not None:  # each pair's rows alone; its prompts' traces kept
                new = {tuple(src), tuple(tgt)} - traced
                traced |= new
                by[name] += sum(trace_flops(L, len(p), f) for p in new) + priced(len(tgt), [part])
            else:
                by[name] += trace_flops(L, len(src), f) + trace_flops(L, len(tgt), f)
                groups.setdefault(len(tgt), []).append(part)
        by[name] += sum(priced(n, parts) for n, parts in groups.items())
    return by


def _control_source(
    control: str, ids: dict, pid: str, direction: str, unrelated: Callable, never: Callable,
    positions: list[tuple[int, int]],
) -> tuple[list[int], list[tuple[int, int]]] | None:  # fmt: skip
    """(the prompt a control's cells come from, their (target, source) positions), as
    hallu/run/controls.py builds them; None for a pair without a neutral prompt."""
    src = control_source_ids(control, ids, pid, direction, unrelated)
    if src is None and control == "neutral_source":
        return None
    if src is None:  # norm_matched: the real source is traced; its random vectors never known
        return never(len(ids[pid][DIRECTIONS[direction][0]])), positions
    aligned = end_aligned(
        [t for t, _ in positions], len(ids[pid][DIRECTIONS[direction][1]]), len(src)
    )
    return src, list(aligned.items())


def _rows(
    src: list[int], tgt: list[int], positions: list[tuple[int, int]], layers: list[int],
    per_cell: int, layer0: bool,
) -> list[tuple[int, int]]:  # fmt: skip
    """(position, layer) of every row the engine runs for one pair (module docstring)."""
    out, shared = [], shared_prefix(src, tgt)
    for t, src_t in positions:
        if src_t < 0 or known_by_tokens(t, src_t, shared):
            continue
        skip0 = layer0 and src[src_t] == tgt[t]
        out += [(t, layer) for layer in layers if not (skip0 and layer == 0)] * per_cell
    return out


def _batch_budget(cfg: Config, shape: Any) -> tuple[float, int]:
    """(bytes, tokens) the fast engine fills a batch up to (hallu/engine/fast.py): sweep.memory_gb
    or half of what the GPU has free beside the weights, else the CPU's; and the tokens up to
    which it merges positions into one batch."""
    gpu = GPUS.get(cfg.cluster.gpu or "")
    tokens = GPU_BATCH_TOKENS if gpu is not None else CPU_BATCH_TOKENS
    if cfg.sweep.memory_gb is not None:
        return cfg.sweep.memory_gb * 2**30, tokens
    if gpu is None:
        return CPU_BATCH_BYTES, tokens
    per = max(1, math.ceil(cfg.cluster.resources.num_gpus))
    free = per * gpu.memory_gb * GB * USABLE - n_params(shape) * dtype_bytes(cfg) - CUDA_OVERHEAD
    return max(free, 0.0) / 2, tokens


@dataclass(frozen=True)
class Memory:
    weights: float
    traces: float
    batch: float
    generation: float  # Experiment 1's KV cache for one generation batch (0 without it)
    stages: float = 0.0  # the most any other stage holds besides the weights (stage_cost.py)

    @property
    def total(self) -> float:
        most = max(self.traces + self.batch, self.generation, self.stages)
        return self.weights + most + CUDA_OVERHEAD


def memory(cfg: Config, shape: Any, max_len: int) -> Memory:
    b = dtype_bytes(cfg)
    d, L, hd = shape.d_model, shape.n_layers, shape.head_size
    kv = 2 * L * shape.n_kv_heads * max_len * hd
    site = 0 if cfg.sweep.component == "resid_pre" else L * max_len * d
    traces = 2 * ((L + 1) * max_len * d + kv + site) * b
    n_layers = len(resolve_layers(cfg.sweep.layers, L))
    # One row of max_len query tokens (the engine's own estimate), times one position's cells.
    row = row_bytes(d, shape.d_mlp, shape.n_heads, hd, max_len, b)(max_len)
    gen = 0.0
    if "behavior" in cfg.sweep.experiments:
        new = cfg.behavior.max_new_tokens
        gen = cfg.behavior.batch_size * 2 * L * shape.n_kv_heads * hd * (max_len + new) * b
    if "patching" not in cfg.sweep.experiments:
        traces = row = 0
    return Memory(n_params(shape) * b, traces, row * n_layers, gen)


def behavior_flops(cfg: Config, shape: Any, n_pairs: int, mean_len: float) -> tuple[int, float]:
    """(answers, FLOP) of Experiment 1: every answer reads its prompt, then feeds back each of
    its tokens but the last (hallu/behavior/generate.py)."""
    b = cfg.behavior
    per_prompt = ("greedy" in b.decoding) + ("sampled" in b.decoding) * b.n_samples
    answers = n_pairs * len(b.conditions) * per_prompt
    return answers, answers * (mean_len + b.max_new_tokens - 1) * 2 * n_params(shape)


def behavior_stage(cfg: Config, shape: Any, lengths: dict[str, dict[str, int]],
                   need: Memory) -> Stage:  # fmt: skip
    """Experiment 1's generate() batches of behavior.batch_size answers (the last one short),
    every prompt of the mean length; memory: `need.generation` (longest prompts)."""
    all_lens = [n for c in lengths.values() for n in c.values()]
    mean = sum(all_lens) / len(all_lens)
    answers, _ = behavior_flops(cfg, shape, len(lengths), mean)
    size, new = max(cfg.behavior.batch_size, 1), cfg.behavior.max_new_tokens
    params, b = n_params(shape), dtype_bytes(cfg)
    full, rest = divmod(answers, size)
    parts = [generation("", shape, params, [mean] * size, new, b, full)] if full else []
    parts += [generation("", shape, params, [mean] * rest, new, b)] if rest else []
    return combined("behaviour", parts, memory=need.generation)


def check_fit(cfg: Config, need: Memory, gpu: Gpu, per_replica: int) -> None:
    """Refuse a replica that cannot fit its GPUs, with the fix in numbers."""
    have = per_replica * gpu.memory_gb * GB * USABLE
    if need.total <= have:
        return
    k = math.ceil(need.total / (gpu.memory_gb * GB * USABLE))
    bigger = [g.kind for g in GPUS.values() if g.memory_gb * GB * USABLE >= need.total]
    alt = f", or cluster.gpu={bigger[0]}" if bigger else ""
    raise UserError(
        f"model {cfg.model.name_or_path} needs {need.total / GB:.0f} GB per replica (weights "
        f"{need.weights / GB:.0f} GB in {dtype_bytes(cfg) * 8}-bit + traces, batch and CUDA "
        f"context), but cluster.gpu={gpu.kind} x cluster.resources.num_gpus={per_replica} has "
        f"{have / GB:.0f} GB usable. Fix: cluster.resources.num_gpus={k} ({k} x "
        f"{gpu.memory_gb:.0f} GB per replica){alt}"
    )


def other_dtypes_fit(work: list[Stage], need: Memory, have: float) -> dict[str, bool]:
    """{"other_dtypes_fit": whether the noise floor's other dtypes fit beside the weights} when
    the run measures it; not refused by check_fit: one that does not fit is its error."""
    noise = next((s for s in work if s.other_dtypes), None)
    if noise is None:
        return {}
    held = need.weights + noise.other_dtypes + noise.memory + CUDA_OVERHEAD
    return {"other_dtypes_fit": held <= have}


def placement(cfg: Config) -> tuple[int, int]:
    """(replicas, GPUs per replica) the cluster config asks for."""
    per = max(1, math.ceil(cfg.cluster.resources.num_gpus))
    return (1 if cfg.cluster.kind == "local" else cfg.cluster.num_workers), per


def stages(
    cfg: Config,
    shape: Any,
    lengths: dict[str, dict[str, int]],
    plan: Plan | None,
    tokens: dict[str, dict[str, list[int]]] | None,
    need: Memory,
    unrelated: Callable[[int], list[int]] | None = None,
) -> list[Stage]:
    """Every stage the config runs, in run order, with its work (hallu/run/stage_cost.py)."""
    params, b, out = n_params(shape), dtype_bytes(cfg), []
    if plan is not None:
        by = engine_flops_by_stage(cfg, shape, lengths, plan, tokens, unrelated)
        batch = max(cfg.sweep.batch_size, 1)
        for name, flops in by.items():
            shards = [s for s in plan.shards if (s.control is None) == (name == "patching")]
            shards = [s for s in shards if name == "patching" or name == f"control {s.control}"]
            # Batches of sweep.batch_size cells; the fast engine traces each pair's two prompts
            # first (controls too: hallu/run/controls.py).
            calls = sum(math.ceil(s.n_cells / batch) for s in shards)
            if cfg.sweep.engine != "hooks":
                calls += sum(2 * len(s.pair_ids) for s in shards)
            mem = need.traces + need.batch
            out.append(Stage(name, calls, 0, 0, flops, mem))
    if cfg.sweep.noise_floor:
        out.append(noise_stage(cfg, shape, params, lengths))
    if "behavior" in cfg.sweep.experiments:
        out.append(behavior_stage(cfg, shape, lengths, need))
    if "mechanism" in cfg.sweep.experiments:
        out += mechanism_stages(cfg, shape, params, mechanism_rows(cfg, lengths), b)
    return out


def mechanism_rows(cfg: Config, lengths: dict[str, dict[str, int]]) -> list[tuple[Any, int]]:
    """(PromptRow, tokens) of every mechanism prompt of the planned pairs: a pair condition's
    own count, else (ladder rungs) the mean of its pair's (the rungs differ by a marker)."""
    from hallu.prompt_meta import load_prompt_rows

    out = []
    for r in load_prompt_rows(cfg.prompts):
        conds = lengths.get(r.pair_id)
        if conds:
            out.append((r, conds.get(r.condition or "", round(sum(conds.values()) / len(conds)))))
    return out


def rates(cfg: Config, gpu: Gpu | None, replicas: int) -> tuple[Rates, float]:
    """(this run's Rates, MFU or 0 on the CPU): the GPU's peak x MFU and its bandwidth x the
    decode share (one GPU's, however many hold a replica: stage_cost.py), else the CPU's model."""
    if gpu is None:
        cpu, where = cpu_rates()
        return Rates(cpu["layer_call_s"], cpu["flops_per_s"], where, cpu["token_s"]), 0.0
    mfu, mfu_source = mfu_for(gpu.kind, cfg.cluster.mfu)
    rate = replicas * gpu.peak_tflops * 1e12 * mfu  # units spread over the replicas
    read = replicas * gpu.bandwidth_gbs * GB * ASSUMED_DECODE_BANDWIDTH
    return Rates(GPU_LAYER_CALL_S / replicas, rate, mfu_source, bytes_per_s=read), mfu


def measured_seconds(
    stage: Stage, run: dict[str, Any], plan: Plan | None, replicas: int
) -> float | None:
    """A stage's time from a finished run's rates (hallu/run/progress.py): patching and control
    cells at its cells/s, the noise floor and mechanism units at its seconds per unit; None
    where the run measured nothing that scales to this stage (behaviour: its chunks differ)."""
    per_unit = run.get("seconds_per_unit") or {}
    if stage.name == "patching" or stage.name.startswith("control "):
        rate = run.get("cells_per_s")
        if not rate or plan is None:
            return None
        control = None if stage.name == "patching" else stage.name.removeprefix("control ")
        cells = sum(s.n_cells for s in plan.shards if s.control == control)
        return cells / (rate * replicas)
    if stage.name == "noise floor" and "noise floor" in per_unit:
        return float(per_unit["noise floor"])
    if stage.name.startswith("mechanism ") and stage.units and stage.name in per_unit:
        return stage.units * float(per_unit[stage.name]) / replicas
    return None


def on_cpu(cfg: Config) -> bool:
    """No cluster.gpu and the model runs on the CPU (the presets' toy/tiny/planted,
    model.device=cpu, or model.device=auto on a machine without CUDA)."""
    return cfg.cluster.gpu is None and card(cfg) == "cpu"


def estimate(
    cfg: Config,
    shape: Any,
    lengths: dict[str, dict[str, int]],
    plan: Plan | None,
    tokens: dict[str, dict[str, list[int]]] | None = None,
    unrelated: Callable[[int], list[int]] | None = None,
) -> dict[str, Any]:
    """Every number the plan prints (and a multirun sums), as a dict; UserError if it can't fit.
    "stages": the Stage of each stage, "stage_seconds" its time (with a GPU or on the CPU).
    `tokens`, `unrelated`: as for `engine_flops`."""
    all_lens = [n for conds in lengths.values() for n in conds.values()]
    max_len, mean_len = max(all_lens), sum(all_lens) / len(all_lens)
    measured = tokens is not None
    out: dict[str, Any] = {
        "lengths": "from the tokenizer" if measured else "estimated from word counts; no tokenizer"
    }
    if plan is not None:
        control = sum(s.n_cells for s in plan.shards if s.control)
        out |= {
            "cells": plan.n_cells,
            "control_cells": control,
            "flops_naive": plan.flops_naive,
            "flops_engine": engine_flops(cfg, shape, lengths, plan, tokens, unrelated),
        }
    if "behavior" in cfg.sweep.experiments:
        out["answers"], out["flops_behavior"] = behavior_flops(cfg, shape, len(lengths), mean_len)
    need = memory(cfg, shape, max_len)
    work = stages(cfg, shape, lengths, plan, tokens, need, unrelated)
    others = [s.memory for s in work if s.name != "patching" and s.name != "behaviour"]
    need = replace(need, stages=max(others, default=0.0))
    out |= {"memory": need, "stages": work, "flops_total": sum(s.flops for s in work)}
    gpu = GPUS.get(cfg.cluster.gpu or "")
    if gpu is None and not on_cpu(cfg):
        return out
    replicas, per = placement(cfg) if gpu is not None else (1, 1)
    if gpu is not None:
        check_fit(cfg, need, gpu, per)
        out |= other_dtypes_fit(work, need, per * gpu.memory_gb * GB * USABLE)
    rate, mfu = rates(cfg, gpu, replicas)
    load_s = need.weights / LOAD_RATE  # each replica reads its weights once, in parallel
    timed = {s.name: seconds(s, rate, shape.n_layers) for s in work}
    run = run_rates(card(cfg), calibrated_model(cfg))
    if run is not None:  # a finished run's measured rates replace the model where they apply
        measured = {s.name: measured_seconds(s, run, plan, replicas) for s in work}
        timed |= {k: v for k, v in measured.items() if v is not None}
        load_s = float(run.get("load_s", load_s))
        out["measured"] = sorted(k for k, v in measured.items() if v is not None)
        out["measured_at"] = run.get("measured_at", "?")
    total_s = load_s + sum(timed.values())
    out |= {"stage_seconds": timed, "load_s": load_s, "rates": rate, "seconds": total_s}
    if gpu is None:
        out["cpu_hours"] = total_s / 3600
        return out
    out |= {"gpu": gpu, "replicas": replicas, "gpus_per_replica": per, "mfu": mfu,
            "mfu_source": rate.where, "hours": total_s / 3600}  # fmt: skip
    return out | _priced(cfg, gpu, total_s / 3600 * replicas * per)


def _priced(cfg: Config, gpu: Gpu, gpu_hours: float) -> dict[str, Any]:
    """The price per GPU-hour (cluster.price_per_gpu_hour, else the card's list price), its
    source, and the cost of `gpu_hours`."""
    price = cfg.cluster.price_per_gpu_hour
    source = "cluster.price_per_gpu_hour" if price is not None else "default list price"
    price = gpu.price_per_hour if price is None else price
    return {"price": price, "price_source": source, "cost": gpu_hours * price}
