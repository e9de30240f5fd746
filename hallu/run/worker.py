"""What runs a shard: the `Worker` holds one model replica and turns shards into result tables.

It calls `hallu.run.prepare.prepare` on its own machine (tokenizer, prompts, metric), loads the
weights once, and then runs shards. It imports nothing from Ray: the Ray executor wraps it.
"""

from __future__ import annotations

import math
import time
from typing import Any

import pyarrow as pa
import torch

from hallu.config import DIRECTIONS, Config
from hallu.engine.adapters import Adapter
from hallu.engine.attribution import screen
from hallu.engine.cells import Cell, known_cells, make_cells, patch_pairs
from hallu.engine.fast import BatchOptions, Trace, trace
from hallu.engine.hooks import capture_resid_pre, patched_logits
from hallu.engine.host_memory import keep_freed_memory
from hallu.engine.metrics import kl_to_clean, resolution
from hallu.engine.models import decoder_layers, load_model, replica_devices
from hallu.errors import UserError
from hallu.run.plan import Shard, resolve_positions
from hallu.run.prepare import prepare
from hallu.store import schema
from hallu.store.timing import stamp


class Worker:
    """Holds one model replica; `run_shard` is deterministic for a given shard and config."""

    def __init__(self, cfg: Config, run_id: str):
        keep_freed_memory()  # the engine's CPU runs reuse freed buffers (engine/host_memory.py)
        self.prep = prepare(cfg)
        self.run_id = run_id
        # One replica, over `cluster.resources.num_gpus` GPUs when it asks for several.
        devices = replica_devices(cfg)
        self.model, self.revision = load_model(cfg.model, len(self.prep.tokenizer), devices)
        self.layers = decoder_layers(self.model)
        self.model_dtype = next(self.model.parameters()).dtype
        self.dtype = str(self.model_dtype).removeprefix("torch.")
        self.adapter = _adapter(self.model, cfg.sweep.engine, cfg.sweep.component)
        memory = cfg.sweep.memory_gb
        # The attribution screen's (estimates, rank correlation) for the pair being run.
        self._approx: tuple[list[float], float] | None = None
        # The fast engine sizes its batches from memory (sweep.batch_size is the hook engine's).
        self.options = BatchOptions(memory_bytes=None if memory is None else int(memory * 2**30))

    def _patch_pair(
        self, src_ids: list[int], tgt_ids: list[int], positions: list[tuple[int, int]], layers
    ) -> tuple[torch.Tensor, torch.Tensor, list[Cell], torch.Tensor, list[bool]]:
        """(source logits, target logits, cells, [cells, V] patched logits, known) of a pair run
        alone: the hook engine, or the attribution screen."""
        sweep = self.prep.cfg.sweep
        n_layers = len(self.layers)
        if self.adapter is None:  # the hook engine: one forward pass of the target per cell
            resid, src_logits = capture_resid_pre(self.model, self.layers, src_ids)
            _, tgt_logits = capture_resid_pre(self.model, self.layers, tgt_ids)
            cells = make_cells("resid_pre", layers, positions, n_layers)
            logits = patched_logits(
                self.model,
                self.layers,
                tgt_ids,
                resid,
                [((c.layer, c.position, c.source_position),) for c in cells],
                sweep.batch_size,
            )
            known = [False] * len(cells)
        else:
            ad, comp = self.adapter, sweep.component
            source, target = trace(ad, src_ids, [comp]), trace(ad, tgt_ids, [comp])
            src_logits, tgt_logits = source.logits, target.logits
            cells = make_cells(comp, layers, positions, n_layers, sweep.window, ad.n_heads)
            # Without the screen, pairs run through the shard's schedule (`_patch_shard`).
            assert sweep.screen_top_k is not None, "fast-engine pairs run via _patch_shard"
            logits, known = self._screen(source, target, cells, sweep.screen_top_k)
        return src_logits, tgt_logits, cells, logits, known

    def _patch_shard(self, shard: Shard) -> dict[str, tuple]:
        """`_patch_pair`'s result for every pair of the shard, computed as one engine schedule
        (rows of pairs whose targets have the same length share batches). Empty when the shard
        cannot run that way (hook engine, attribution screen): its pairs then run one by one."""
        sweep = self.prep.cfg.sweep
        if self.adapter is None or sweep.screen_top_k is not None:
            return {}
        ad, comp, n_layers = self.adapter, sweep.component, len(self.layers)
        inputs = [self._pair_inputs(shard, pid) for pid in shard.pair_ids]
        items = []
        for src_ids, tgt_ids, positions in inputs:
            # One prompt per trace: a target's own run is then bit for bit the one every other
            # path computes (control shards, the hook engine), whatever else the shard holds.
            source, target = trace(ad, src_ids, [comp]), trace(ad, tgt_ids, [comp])
            cells = make_cells(comp, shard.layers, positions, n_layers, sweep.window, ad.n_heads)
            items.append((source, target, cells))
        done = patch_pairs(ad, comp, items, self.options)
        return {
            pid: (source.logits, target.logits, cells, logits, known)
            for pid, (source, target, cells), (logits, known) in zip(
                shard.pair_ids, items, done, strict=True
            )
        }

    def _pair_inputs(self, shard: Shard, pid: str) -> tuple[list[int], list[int], list]:
        """(source ids, target ids, (target, source) positions) of a pair in a shard."""
        prep = self.prep
        source_cond, target_cond = DIRECTIONS[shard.direction]
        src_ids, tgt_ids = prep.token_ids[pid][source_cond], prep.token_ids[pid][target_cond]
        positions = resolve_positions(prep.cfg.sweep.positions, pid, len(src_ids), len(tgt_ids))
        return src_ids, tgt_ids, positions

    def _screen(
        self, source: Trace, target: Trace, cells: list[Cell], k: int
    ) -> tuple[torch.Tensor, list[bool]]:
        """Attribution screen: exact logits for known and top-K cells, NaN for the rest."""
        res = screen(self.adapter, source, target, cells, self.prep.metric, k, self.options)
        known = known_cells(
            self.prep.cfg.sweep.component, source, target, cells, self.adapter.head_dim
        )
        logits = torch.full((len(cells), target.logits.shape[-1]), math.nan)
        logits = logits.to(target.logits)
        for i, is_k in enumerate(known):
            if is_k:
                logits[i] = target.logits
        logits[torch.tensor(res.top, dtype=torch.long)] = res.logits.to(logits.dtype)
        self._approx = (res.approx.tolist(), res.spearman)
        return logits, known

    def _metrics(
        self, src_logits, tgt_logits, logits, pair
    ) -> dict[str, tuple[float, float, list]]:
        """metric name -> (clean, corrupted, patched per cell), all float32.

        `pair` = (source ids, target ids, cells, known) for metrics that rerun the model."""
        out = {}
        for name in [self.prep.cfg.metric.name, *self.prep.cfg.metric.extra]:
            if name == "logprob_diff":
                out[name] = self._logprob_diff(logits, *pair)
                continue
            if name == "kl_to_clean":
                f = lambda x: kl_to_clean(x, src_logits)  # noqa: E731
            else:
                f = self.prep.metric
            out[name] = (float(f(src_logits)), float(f(tgt_logits)), f(logits).float())
        return out

    def _logprob_diff(self, logits, src_ids, tgt_ids, cells, known):
        """logprob_diff through the hook route; known cells are the baseline, and cells the
        attribution screen left out (NaN logits) stay NaN, as for the main metric."""
        todo = [i for i, k in enumerate(known) if not k and not logits[i].isnan().any()]
        clean, corrupted, computed = self.prep.logprob_diff.pair(
            self.model,
            self.layers,
            src_ids,
            tgt_ids,
            [(cells[i].layer, cells[i].position, cells[i].source_position) for i in todo],
            self.prep.cfg.sweep.batch_size,
        )
        values = torch.tensor([corrupted if k else math.nan for k in known])
        if todo:
            values[torch.tensor(todo)] = computed
        return clean, corrupted, values

    def run_shard(self, shard: Shard, progress: Any = None) -> pa.Table:
        started = time.time()
        device = next(self.model.parameters()).device.type
        if shard.control is not None:
            from hallu.run.controls import run_control_shard

            meta = {"run_id": self.run_id, "model_revision": self.revision, "dtype": self.dtype}
            table = run_control_shard(self.prep, self.model, self.layers, shard, meta, progress)
            return stamp(table, started, device)
        cols: dict[str, list] = {name: [] for name in schema.SCHEMA.names}
        patched = self._patch_shard(shard)
        for pid in shard.pair_ids:
            n_cells = self._pair_rows(shard, pid, cols, patched.get(pid))
            if progress is not None:
                progress.update(n_cells)
        cfg, n = self.prep.cfg, len(cols["layer"])
        constant = {
            "run_id": self.run_id,
            "shard_id": shard.shard_id,
            "model": cfg.model.name_or_path,
            "model_revision": self.revision,
            "dtype": self.dtype,
            "experiment": "patching",
            "direction": shard.direction,
            "component": cfg.sweep.component,
            "seed": cfg.seed,
            "control": None,
        }
        for k, v in constant.items():
            cols[k] = [v] * n
        return stamp(schema.to_table(cols), started, device)

    def _pair_rows(self, shard: Shard, pid: str, cols: dict[str, list], patched=None) -> int:
        """Append a row per (metric, cell) of one pair to `cols`; the cell count. `patched`:
        the pair's part of the shard's schedule (`_patch_shard`), else it is patched here."""
        prep = self.prep
        target_cond = DIRECTIONS[shard.direction][1]
        src_ids, tgt_ids, positions = self._pair_inputs(shard, pid)
        self._approx = None
        if patched is None:
            patched = self._patch_pair(src_ids, tgt_ids, positions, shard.layers)
        src_logits, tgt_logits, cells, logits, known = patched
        tokens = (
            prep.tokenizer.convert_ids_to_tokens(tgt_ids),
            prep.tokenizer.convert_ids_to_tokens(src_ids),
        )
        anchors = prep.anchors[pid][target_cond] if prep.anchors else None
        metrics = self._metrics(src_logits, tgt_logits, logits, (src_ids, tgt_ids, cells, known))
        for name, (clean, corrupted, values) in metrics.items():
            # The main metric's step is taken at its logits' magnitude; others at their own.
            steps = (
                prep.metric.resolution(logits, self.model_dtype)
                if name == prep.cfg.metric.name
                else resolution(values, self.model_dtype)
            ).tolist()
            baselines = (clean, corrupted, anchors)
            for row in self._cell_rows(pid, name, cells, known, tokens, baselines, values, steps):
                for k, v in row.items():
                    cols[k].append(v)
        return len(cells)

    def _cell_rows(self, pid, name, cells, known, tokens, baselines, values, steps) -> list[dict]:
        """One metric's rows for a pair's cells; `tokens` = (target, source) token strings,
        `baselines` = (clean, corrupted, the target's template anchors)."""
        clean, corrupted, anchors = baselines
        approx, rho = self._approx or ([None] * len(cells), None)
        screened = name == self.prep.cfg.metric.name and rho is not None
        rows = []
        for cell, value, step, was_known, est in zip(
            cells, values.tolist(), steps, known, approx, strict=True
        ):
            t, s = cell.position, cell.source_position
            rows.append(
                {
                    "metric": name,
                    "approx": est if screened else None,
                    "screen_spearman": rho if screened else None,
                    "resolution": step,
                    "layer": cell.layer,
                    "layer_window": cell.window,
                    "head": cell.head,
                    "known": was_known,
                    **schema.cell_fields(pid, t, s, *tokens, clean, corrupted, value, anchors),
                }
            )
        return rows


def _adapter(model: Any, engine: str, component: str) -> Adapter | None:
    """The fast engine's adapter, or None for the hook engine (which does resid_pre only)."""
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
