"""The plan's work model per stage: forward calls, tokens, FLOP, memory and time. No torch.

Each stage a config runs (patching, each control, the noise floor, behaviour, and the mechanism
units: capture, steer, patchgen, heads) becomes one `Stage`, counted from what its code does:

- noise floor (hallu/run/noise.py): for each measured dtype (the run's, float32, bfloat16,
  float16, deduplicated), every certain/uncertain prompt of up to 16 pairs alone (one call
  each), in a batch of 8 (one call each) and all in one padded batch (one call); the other
  dtypes are made from the replica in memory, nothing is read from disk: float32 from a 2-byte
  run by casting it in place (4 bytes a weight in all), a 2-byte dtype as a copy beside it (2
  more bytes a weight), so +2 bytes a weight either way (`other_dtypes`). That is not in the
  fit check: a dtype that does not fit is recorded as its error and the run goes on; the plan
  says whether it fits. The casts run at memory bandwidth (well under a second for a 13b on a
  GPU) and are not priced;
- generation (behaviour, steer, patchgen; hallu/behavior/generate.py): one batch per
  `generate`: a prefill call, then one call per further token (max_new_tokens calls in all;
  finished rows keep running, so this is exact until every row stops early);
- mechanism (hallu/mechanism/worker.py): capture = one forward per prompt; steer = per steered
  layer and direction (found + n_random) and alpha, the unmarked prompts x n_samples answered;
  patchgen = per direction, the settings source, target and each patch layer, every pair x
  n_samples answered, plus one capture forward per source prompt per patched layer; heads =
  per direction and pair, two traces, the fast engine's n_layers x n_heads head cells at the
  last position, one frozen-attention forward and one forward per layer (heads stacked).

FLOP are weight matmuls, 2 per weight per token (hallu/engine/cost.py for the fast engine's
pieces). Time is `calls x n_layers x per-layer call latency + FLOP / rate (+ generated tokens x a
per-token cost on the CPU)`: a small model is bound by per-call overhead (a toy's forward costs
about the same for 1 token as for 30) and, when it generates, by the per-row work of each step
(sampling one row at a time, the cache), a large one by FLOP. Rates: on a GPU, its datasheet
peak x MFU and `GPU_LAYER_CALL_S`; on the CPU, the calibration file's "cpu" entry or
`CPU_DEFAULTS` (hallu/run/gpus.py).

On a GPU a decode step (every generate() call after its prefill) is priced by what it reads:
every weight of the replica once, plus the keys and values of every row's tokens so far, at the
datasheet memory bandwidth x `ASSUMED_DECODE_BANDWIDTH`; or by its FLOP at peak x MFU when that
is longer (a large batch): max(bytes / bandwidth, FLOP / rate) per step, step by step, since
the cache grows. So a decode step costs about the same for 1 row as for 16. A replica whose
layers are split over N GPUs runs them one after the other: each reads its 1/N of the weights
at its own bandwidth, so a step takes as long as on one GPU holding them all (as for FLOP, N
GPUs count once in the rate and N times in the cost). The weights read are all but the input
embedding table, of which a step gathers only its rows' vectors (a large share of a small model
with a large vocabulary). The CPU prices decoding by FLOP, like any forward pass: its
calibration measures that.
"""

from __future__ import annotations

import math
from dataclasses import dataclass
from typing import Any

from hallu.engine.cost import cell_flops, token_flops, trace_flops

NOISE_MAX_PAIRS = 16  # hallu/run/noise.py measure()'s default
NOISE_BATCH = 8  # each prompt in a batch of 8 there


@dataclass(frozen=True)
class Decode:
    """The decode steps of `batches` alike generate() calls, after each one's prefill call:
    step i (0, 1, ...) runs `rows` rows over a cache of `context + i` tokens each."""

    batches: int
    rows: int
    context: float  # tokens each row attends to at the first step: the (padded) prompt + 1
    steps: int  # max_new_tokens - 1
    weight_bytes: float  # the replica's weights but the input embedding, read once per step
    kv_token_bytes: float  # keys and values of one token of one row, every layer
    flops: float  # per step: 2 per weight per row

    def seconds(self, bytes_per_s: float, flops_per_s: float) -> float:
        """All its steps: each the longer of its reads and its FLOP (module docstring)."""
        compute = self.flops / flops_per_s
        per_batch = sum(
            max((self.weight_bytes + self.rows * self.kv_token_bytes * (self.context + i))
                / bytes_per_s, compute)
            for i in range(self.steps)
        )  # fmt: skip
        return self.batches * per_batch


@dataclass(frozen=True)
class Stage:
    name: str
    calls: int  # forward calls (a decode step is one); each runs every layer once
    tokens: float  # token positions the calls process
    generated: int  # tokens generated (0: forward passes only)
    flops: float
    memory: float  # bytes beyond the weights and the CUDA context
    decode: tuple[Decode, ...] = ()  # its generate() calls' decode steps (module docstring)
    other_dtypes: float = 0.0  # noise floor: bytes its other dtypes hold beside the weights
    units: int = 0  # executor units (mechanism), for the printout


@dataclass(frozen=True)
class Rates:
    """How fast one replica runs: per-layer call latency, FLOP/s and (on a GPU) the bytes/s a
    decode step reads at; `where`: the words the plan prints about them."""

    layer_call_s: float
    flops_per_s: float
    where: str
    token_s: float = 0.0  # per generated token and row: sampling, cache and Python (CPU only)
    bytes_per_s: float | None = None  # None: decode steps priced by FLOP (the CPU)


def seconds(stage: Stage, rates: Rates, n_layers: int) -> float:
    """One stage's wall time on one replica (module docstring)."""
    calls = stage.calls * n_layers * rates.layer_call_s
    rows = stage.generated * rates.token_s
    flops, decode = stage.flops, 0.0
    if rates.bytes_per_s is not None:  # decode steps by their reads, the rest by FLOP
        flops -= sum(d.batches * d.steps * d.flops for d in stage.decode)
        decode = sum(d.seconds(rates.bytes_per_s, rates.flops_per_s) for d in stage.decode)
    return calls + rows + flops / rates.flops_per_s + decode


def kv_bytes(shape: Any, rows: int, n_tokens: int, b: int) -> float:
    """Keys and values of every layer for `rows` sequences of `n_tokens`."""
    hd = shape.head_size
    return rows * 2 * shape.n_layers * shape.n_kv_heads * hd * n_tokens * b


def generation(
    name: str, shape: Any, params: int, lens: list[float], new: int, b: int, repeats: int = 1
) -> Stage:
    """`repeats` generate() batches over prompts of `lens` tokens, `new` tokens each: a prefill
    call, then `new - 1` decode steps of one token per row."""
    tokens = repeats * (sum(lens) + len(lens) * (new - 1))
    width = max(lens, default=0)  # prompts are left-padded to the longest
    read = (params - shape.vocab_size * shape.d_model) * b  # embedding rows: gathered, not read
    steps = Decode(repeats, len(lens), width + 1, new - 1, read, kv_bytes(shape, 1, 1, b),
                   len(lens) * 2 * params)  # fmt: skip
    return Stage(
        name, repeats * new, tokens, repeats * len(lens) * new, tokens * 2 * params,
        kv_bytes(shape, len(lens), width + new, b), decode=(steps,) if lens and new > 1 else (),
    )  # fmt: skip


def combined(name: str, parts: list[Stage], **changes: Any) -> Stage:
    """One stage doing the work of `parts` one after the other (memory: the largest)."""
    return _with(
        Stage(name, sum(p.calls for p in parts), sum(p.tokens for p in parts),
              sum(p.generated for p in parts), sum(p.flops for p in parts),
              max((p.memory for p in parts), default=0.0),
              decode=tuple(d for p in parts for d in p.decode)),
        **changes,
    )  # fmt: skip


def noise_stage(cfg: Any, shape: Any, params: int, lengths: dict) -> Stage:
    """hallu/run/noise.py's forward passes (module docstring)."""
    pairs = list(lengths.values())[:NOISE_MAX_PAIRS]
    lens = [n for conds in pairs for c, n in conds.items() if c in ("certain", "uncertain")]
    dtypes = 3  # float32, bfloat16, float16: the run's dtype is one of them
    per_dtype = sum(lens) * (1 + NOISE_BATCH) + len(lens) * max(lens, default=0)
    tokens = dtypes * per_dtype
    # Memory: the padded batch's logits; the other dtypes' +2 bytes a weight apart (docstring).
    return Stage(
        "noise floor", dtypes * (2 * len(lens) + 1), tokens, 0, tokens * 2 * params,
        len(lens) * max(lens, default=0) * shape.vocab_size * 4, other_dtypes=2 * params,
    )  # fmt: skip


def mechanism_stages(
    cfg: Any, shape: Any, params: int, rows: list[tuple[Any, int]], b: int
) -> list[Stage]:
    """capture, steer, patchgen and heads of +sweep=mechanism; `rows`: (PromptRow, tokens) of
    every prompt of the selected pairs (hallu/mechanism/units.py)."""
    from hallu.config import DIRECTIONS
    from hallu.shape import resolve_layers

    m, L = cfg.sweep.mechanism, shape.n_layers
    claims = {r.claim_id for r, _ in rows}
    by_pair: dict[str, dict[str, int]] = {}
    for r, n in rows:
        if r.condition is not None:
            by_pair.setdefault(r.pair_id, {})[r.condition] = n
    pairs = [c for c in by_pair.values() if {"certain", "uncertain", "neutral"} <= set(c)]
    lens = [n for _, n in rows]
    cap_units = math.ceil(len(claims) / m.claims_per_shard)
    out = [
        Stage("mechanism capture", len(rows), sum(lens), 0, sum(lens) * 2 * params,
              kv_bytes(shape, 1, max(lens, default=0), b), units=cap_units),
    ]  # fmt: skip
    steer_layers = resolve_layers(m.steer_layers, L)
    neutral = [n for r, n in rows if r.condition == "neutral"]
    samples = [n for n in neutral for _ in range(m.n_samples)]
    n_steer = len(steer_layers) * (1 + m.n_random)
    steer = generation("mechanism steer", shape, params, samples, m.max_new_tokens, b,
                       n_steer * len(m.alphas))  # fmt: skip
    out.append(_with(steer, units=n_steer))
    patch_layers = resolve_layers(m.patch_layers, L)
    parts = []
    for direction in cfg.sweep.directions:
        src, tgt = DIRECTIONS[direction]
        for cond, times in ((src, 1), (tgt, 1 + len(patch_layers))):
            lens_c = [c[cond] for c in pairs for _ in range(m.n_samples)]
            parts.append(generation("", shape, params, lens_c, m.max_new_tokens, b, times))
        capture = len(patch_layers) * sum(c[src] for c in pairs)  # the source's resid_pre
        parts.append(Stage("", len(patch_layers) * len(pairs), capture, 0, capture * 2 * params, 0))
    n_dir = len(cfg.sweep.directions)
    out.append(combined("mechanism patchgen", parts, units=n_dir))
    if m.heads:
        out.append(_heads(cfg, shape, params, pairs, b))
    return out


def _heads(cfg: Any, shape: Any, params: int, pairs: list[dict[str, int]], b: int) -> Stage:
    """Per direction and pair: two traces, L x H head cells (suffix 1), the target's frozen
    attention outputs (one forward) and one forward per layer with the H heads stacked."""
    from hallu.config import DIRECTIONS

    L, H = shape.n_layers, shape.n_heads
    f = token_flops(shape.d_model, H, shape.n_kv_heads, shape.d_mlp, shape.vocab_size)
    cells = H * sum(cell_flops(L, layer, 1, f) for layer in range(L))
    batch = max(cfg.sweep.batch_size, 1)
    calls = tokens = flops = 0.0
    memory = 0.0
    for direction in cfg.sweep.directions:
        src, tgt = DIRECTIONS[direction]
        for c in pairs:
            ls, lt = c[src], c[tgt]
            flops += trace_flops(L, ls, f) + trace_flops(L, lt, f) + cells
            flops += (1 + L * H) * lt * 2 * params
            calls += 2 + math.ceil(L * H / batch) + 1 + L
            tokens += ls + lt + L * H + (1 + L * H) * lt
            d = shape.d_model
            memory = max(memory, 2 * (3 * L + 1) * max(ls, lt) * d * b + kv_bytes(shape, H, lt, b))
    units = len(cfg.sweep.directions)
    return Stage("mechanism heads", int(calls), tokens, 0, flops, memory, units=units)


def _with(stage: Stage, **changes: Any) -> Stage:
    from dataclasses import replace

    return replace(stage, **changes)
