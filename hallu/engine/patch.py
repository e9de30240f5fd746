"""The engine's one entry point for a patching sweep: pairs of prompts, their cells and a route in,
the metrics of every cell out (`Patcher.run`). hallu/run/worker.py turns them into rows.

The route is chosen here, once per model: the fast engine (hallu/engine/fast.py, one trace per
prompt and batched patch rows; with `screen_top_k`, the attribution screen, which computes only
the top-K cells exactly) or the hook route (hallu/engine/hooks.py, one forward per cell,
resid_pre only). The metrics come from the registry in hallu/engine/metrics.py.
"""

from __future__ import annotations

import math
from collections.abc import Iterator, Sequence
from dataclasses import dataclass
from typing import Any

import torch

from hallu.engine.adapters import Adapter
from hallu.engine.attribution import screen
from hallu.engine.cells import Cell, known_cells, make_cells, patch_pairs
from hallu.engine.fast import BatchOptions, Trace, Write, run_rows, trace
from hallu.engine.hooks import HookCell, capture_resid_pre, patched_logits
from hallu.engine.host_memory import keep_freed_memory
from hallu.engine.metrics import HookRun, MetricSet, PatchedPair, evaluate
from hallu.errors import UserError

# MetricSet is part of this face: the caller names the run's metrics with it.
__all__ = ["MetricSet", "Pair", "PairResult", "Patcher", "Route", "choose_adapter"]


@dataclass(frozen=True)
class Route:
    """How cells are computed: the config's sweep.engine/component/window/screen_top_k, the hook
    route's batch size, and the memory the fast engine sizes its batches from (None: the
    device's)."""

    engine: str  # auto | fast | hooks
    component: str
    window: int = 1
    screen_top_k: int | None = None
    batch_size: int = 16
    memory_gb: float | None = None


@dataclass(frozen=True)
class Pair:
    """One pair to patch: (target, source) positions and the layers to sweep."""

    source_ids: list[int]
    target_ids: list[int]
    positions: list[tuple[int, int]]
    layers: Sequence[int]


@dataclass
class PairResult:
    cells: list[Cell]
    known: list[bool]
    # metric name -> (clean, corrupted, [cells] patched, [cells] rounding steps)
    metrics: dict[str, tuple[float, float, torch.Tensor, list[float]]]
    approx: list[float] | None = None  # the attribution screen's estimate per cell (main metric)
    spearman: float | None = None  # its rank correlation with the exact values


class Patcher:
    """A loaded model and its route; `run` is deterministic for the same pairs."""

    def __init__(self, model: torch.nn.Module, layers: torch.nn.ModuleList, route: Route):
        keep_freed_memory()  # the engine's CPU runs reuse freed buffers (engine/host_memory.py)
        self.model, self.layers, self.route = model, layers, route
        self.adapter = choose_adapter(model, route.engine, route.component)
        self.dtype = next(model.parameters()).dtype
        memory = route.memory_gb
        # The fast engine sizes its batches from memory (route.batch_size is the hook route's).
        self.options = BatchOptions(memory_bytes=None if memory is None else int(memory * 2**30))
        self._traces: dict[tuple[int, ...], Trace] = {}  # `_trace`'s, until `forget`

    def run(self, pairs: Sequence[Pair], metrics: MetricSet) -> Iterator[PairResult]:
        """Each pair's cells and their metrics, in order, as each is done; pairs share the fast
        engine's batches when the route allows (no screen: all are done with the first), else
        each runs alone."""
        hook_run = HookRun(self.model, self.layers, self.route.batch_size, self.dtype)
        together = self._schedule(pairs)
        for k, pair in enumerate(pairs):
            scored: tuple[list[float], float] | None = None
            if together:
                src_logits, tgt_logits, cells, logits, known = together[k]
            else:
                src_logits, tgt_logits, cells, logits, known, scored = self._alone(pair, metrics)
            patched = PatchedPair(
                src_logits, tgt_logits, logits, known, pair.source_ids, pair.target_ids, cells
            )
            res = PairResult(cells, known, evaluate(metrics, patched, hook_run))
            if scored is not None:
                res.approx, res.spearman = scored
            yield res

    def clean_run(self, ids: Sequence[int]) -> tuple[torch.Tensor, torch.Tensor]:
        """([L, T, d] residual stream entering every layer, [V] last-position logits) of one
        unpatched run (hallu/run/controls.py's sources and targets): the fast engine's trace,
        kept for `patch_resid`, or the hook route's forward."""
        if self.adapter is None:
            return capture_resid_pre(self.model, self.layers, ids)
        tr = self._trace(ids)
        return tr.resid[:-1], tr.logits

    def patch_resid(
        self, target_ids: Sequence[int], resid: torch.Tensor, cells: Sequence[HookCell]
    ) -> tuple[torch.Tensor, list[bool]]:
        """([len(cells), V] last-position logits, known per cell) of the target with resid_pre
        written from `resid` (any residual stream, e.g. a control's). The fast engine runs the
        cells as rows of its schedule; a cell whose value is the target's own activation there
        bit for bit is known (the target's logits, no forward). The hook route runs one forward
        per cell and calls none known."""
        if self.adapter is None:
            patches = [(c,) for c in cells]
            logits = patched_logits(
                self.model, self.layers, target_ids, resid, patches, self.route.batch_size
            )
            return logits, [False] * len(cells)
        target = self._trace(target_ids)
        logits = target.logits.expand(len(cells), -1).clone()
        if not cells:
            return logits, []
        layer, t, s = (torch.tensor(c) for c in zip(*cells, strict=True))
        values = resid[layer, s].to(target.resid.device)
        known = (values == target.resid[layer, t]).all(-1).tolist()
        todo = [i for i, k in enumerate(known) if not k]
        rows = [(target, (Write(cells[i][0], "resid_pre", cells[i][1], values[i]),)) for i in todo]
        if rows:
            logits[todo] = run_rows(self.adapter, rows, self.options).to(logits.dtype)
        return logits, known

    def forget(self) -> None:
        """Drop the traces kept for `clean_run`/`patch_resid` (a control shard's, at its end)."""
        self._traces.clear()

    def _trace(self, ids: Sequence[int]) -> Trace:
        """The fast engine's trace of `ids` (resid_pre only), kept until `forget`: a control
        shard traces each of its prompts once (a target, a same-class partner, the unrelated
        prompt shared by its pairs)."""
        key = tuple(ids)
        if key not in self._traces:
            assert self.adapter is not None
            self._traces[key] = trace(self.adapter, ids, ["resid_pre"])
        return self._traces[key]

    def _schedule(self, pairs: Sequence[Pair]) -> list[tuple]:
        """Every pair's (source logits, target logits, cells, [cells, V] patched logits, known)
        as one fast-engine schedule (rows of pairs whose targets have the same length share
        batches). Empty when the route runs pairs one by one (hooks, attribution screen)."""
        r = self.route
        if self.adapter is None or r.screen_top_k is not None:
            return []
        ad, comp, n_layers = self.adapter, r.component, len(self.layers)
        items = []
        for p in pairs:
            # One prompt per trace: a target's own run is then bit for bit the one every other
            # path computes (control shards, the hook route), whatever else the shard holds.
            source, target = trace(ad, p.source_ids, [comp]), trace(ad, p.target_ids, [comp])
            cells = make_cells(comp, p.layers, p.positions, n_layers, r.window, ad.n_heads)
            items.append((source, target, cells))
        done = patch_pairs(ad, comp, items, self.options)
        return [
            (source.logits, target.logits, cells, logits, known)
            for (source, target, cells), (logits, known) in zip(items, done, strict=True)
        ]

    def _alone(self, p: Pair, metrics: MetricSet) -> tuple:
        """`_schedule`'s tuple for one pair run alone, and the screen's (estimates, rank
        correlation) or None: the hook route, or the attribution screen."""
        r, n_layers = self.route, len(self.layers)
        if self.adapter is None:  # the hook route: one forward pass of the target per cell
            resid, src_logits = capture_resid_pre(self.model, self.layers, p.source_ids)
            _, tgt_logits = capture_resid_pre(self.model, self.layers, p.target_ids)
            cells = make_cells("resid_pre", p.layers, p.positions, n_layers)
            patches = [((c.layer, c.position, c.source_position),) for c in cells]
            logits = patched_logits(
                self.model, self.layers, p.target_ids, resid, patches, r.batch_size
            )
            return src_logits, tgt_logits, cells, logits, [False] * len(cells), None
        ad, comp = self.adapter, r.component
        source, target = trace(ad, p.source_ids, [comp]), trace(ad, p.target_ids, [comp])
        cells = make_cells(comp, p.layers, p.positions, n_layers, r.window, ad.n_heads)
        assert r.screen_top_k is not None, "fast-engine pairs run via _schedule"
        logits, known, scored = self._screen(source, target, cells, metrics, r.screen_top_k)
        return source.logits, target.logits, cells, logits, known, scored

    def _screen(
        self, source: Trace, target: Trace, cells: list[Cell], metrics: MetricSet, k: int
    ) -> tuple[torch.Tensor, list[bool], tuple[list[float], float]]:
        """Attribution screen on the main metric: exact logits for known and top-K cells, NaN
        for the rest; and (estimates, rank correlation)."""
        ad = self.adapter
        assert ad is not None
        res = screen(ad, source, target, cells, metrics.main, k, self.options)
        known = known_cells(self.route.component, source, target, cells, ad.head_dim)
        logits = torch.full((len(cells), target.logits.shape[-1]), math.nan)
        logits = logits.to(target.logits)
        for i, is_k in enumerate(known):
            if is_k:
                logits[i] = target.logits
        logits[torch.tensor(res.top, dtype=torch.long)] = res.logits.to(logits.dtype)
        return logits, known, (res.approx.tolist(), res.spearman)


def choose_adapter(model: Any, engine: str, component: str) -> Adapter | None:
    """The fast engine's adapter, or None for the hook route (which does resid_pre only)."""
    if engine == "hooks":
        if component != "resid_pre":
            raise UserError(
                f"sweep.component={component} needs the fast engine; set sweep.engine=auto"
            )
        return None
    try:
        return Adapter(model)
    except UserError:
        if engine == "fast" or component != "resid_pre":
            raise
        return None
