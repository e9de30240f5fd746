"""The metrics a patching sweep reports, by name (`METRICS`), and the numeric resolution of a value.

Each metric says how it is computed from a patched pair and how its rounding step is taken
(its resolution rule). All arithmetic is float32 whatever dtype the model ran in. `resolution` is
the spacing of the model's dtype at a value's magnitude (one rounding step): a bf16 model cannot
tell apart two metric values closer than that, so analysis can flag differences below it.
"""

from __future__ import annotations

import math
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any

import torch

if TYPE_CHECKING:
    from hallu.engine.cells import Cell
    from hallu.engine.logprob_diff import LogprobDiff

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


@dataclass(frozen=True)
class LogitDiff:
    """mean logit of the confident tokens - mean logit of the tentative tokens.

    Arithmetic in float32, or in bfloat16 (`metric.dtype=bfloat16`, what the seed's notebooks
    did: the logits rounded to bf16 and subtracted there); the result is returned as float32."""

    confident_ids: tuple[int, ...]
    tentative_ids: tuple[int, ...]
    dtype: torch.dtype = torch.float32

    def __call__(self, logits: torch.Tensor) -> torch.Tensor:
        logits = logits.to(self.dtype)
        conf = logits[..., list(self.confident_ids)].mean(-1)
        tent = logits[..., list(self.tentative_ids)].mean(-1)
        return (conf - tent).float()

    def magnitude(self, logits: torch.Tensor) -> torch.Tensor:
        """The largest |logit| the metric subtracts, per row: where its rounding step is set."""
        ids = list(self.confident_ids) + list(self.tentative_ids)
        return logits[..., ids].float().abs().amax(-1)

    def resolution(self, logits: torch.Tensor, model_dtype: torch.dtype) -> torch.Tensor:
        """One rounding step of the coarser of the model's and the metric's dtype, at the
        logits' magnitude (a bf16 logit near 10 is known to 0.0625, whatever the difference);
        NaN where the logits are NaN (a cell not computed)."""
        coarse = max((model_dtype, self.dtype), key=lambda d: torch.finfo(d).eps)
        return resolution(self.magnitude(logits), coarse)


# --- the registry ------------------------------------------------------------------------------


@dataclass(frozen=True)
class PatchedPair:
    """What a metric reads of one patched pair."""

    source_logits: torch.Tensor  # [V] the source (clean) run's last-position logits
    target_logits: torch.Tensor  # [V] the target (corrupted) run's
    logits: torch.Tensor  # [cells, V] patched; NaN rows: cells the screen left out
    known: list[bool]  # cells whose answer is the target's own run, unrun
    source_ids: Sequence[int]
    target_ids: Sequence[int]
    cells: Sequence[Cell]


@dataclass(frozen=True)
class MetricSet:
    """The metrics of a run: `names[0]` the main one (metric.name), then metric.extra."""

    names: tuple[str, ...]
    main: LogitDiff
    logprob_diff: LogprobDiff | None = None  # the reference continuations, when asked for


@dataclass(frozen=True)
class HookRun:
    """What a metric that reruns the model through the hook route needs."""

    model: torch.nn.Module
    layers: torch.nn.ModuleList
    batch_size: int
    dtype: torch.dtype  # the model's


Values = tuple[float, float, torch.Tensor]  # (clean, corrupted, [cells] patched), float32


@dataclass(frozen=True)
class Metric:
    values: Callable[[MetricSet, PatchedPair, HookRun], Values]
    # Resolution rule: one rounding step per cell, from (metrics, pair, values, model dtype).
    steps: Callable[[MetricSet, PatchedPair, torch.Tensor, torch.dtype], torch.Tensor]


def _of_logits(f: Callable[[torch.Tensor], torch.Tensor], p: PatchedPair) -> Values:
    return float(f(p.source_logits)), float(f(p.target_logits)), f(p.logits).float()


def _logit_diff(ms: MetricSet, p: PatchedPair, _run: HookRun) -> Values:
    return _of_logits(ms.main, p)


def _kl(_ms: MetricSet, p: PatchedPair, _run: HookRun) -> Values:
    return _of_logits(lambda x: kl_to_clean(x, p.source_logits), p)


def _logprob_diff(ms: MetricSet, p: PatchedPair, run: HookRun) -> Values:
    """Through the hook route; known cells are the baseline, and cells the attribution screen
    left out (NaN logits) stay NaN, as for the main metric."""
    assert ms.logprob_diff is not None, "metric.extra=[logprob_diff] without its continuations"
    known, cells = p.known, p.cells
    todo = [i for i, k in enumerate(known) if not k and not p.logits[i].isnan().any()]
    clean, corrupted, computed = ms.logprob_diff.pair(
        run.model,
        run.layers,
        p.source_ids,
        p.target_ids,
        [(cells[i].layer, cells[i].position, cells[i].source_position) for i in todo],
        run.batch_size,
    )
    values = torch.tensor([corrupted if k else math.nan for k in known])
    if todo:
        values[torch.tensor(todo)] = computed
    return clean, corrupted, values


def _step_at_logits(ms: MetricSet, p: PatchedPair, _v: Any, dtype: torch.dtype) -> torch.Tensor:
    # The logit difference's step is taken at its logits' magnitude (LogitDiff.resolution).
    return ms.main.resolution(p.logits, dtype)


def _step_at_value(_ms: MetricSet, _p: PatchedPair, v: torch.Tensor, dtype: torch.dtype):
    return resolution(v, dtype)


METRICS: dict[str, Metric] = {
    "logit_diff": Metric(_logit_diff, _step_at_logits),
    "kl_to_clean": Metric(_kl, _step_at_value),
    "logprob_diff": Metric(_logprob_diff, _step_at_value),
}


def evaluate(
    ms: MetricSet, pair: PatchedPair, run: HookRun
) -> dict[str, tuple[float, float, torch.Tensor, list[float]]]:
    """metric name -> (clean, corrupted, [cells] patched, [cells] rounding steps)."""
    out = {}
    for name in ms.names:
        metric = METRICS[name]
        clean, corrupted, values = metric.values(ms, pair, run)
        out[name] = (clean, corrupted, values, metric.steps(ms, pair, values, run.dtype).tolist())
    return out
