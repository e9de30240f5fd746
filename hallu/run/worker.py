"""What runs a shard: the `Worker` holds one model replica and turns shards into result tables.

It calls `hallu.run.prepare.prepare` on its own machine (tokenizer, prompts, metric), loads the
weights once, and then runs shards. It imports nothing from Ray: the Ray executor wraps it.
"""

from __future__ import annotations

import time
from typing import Any

import pyarrow as pa

from hallu.config import DIRECTIONS, Config
from hallu.engine.models import decoder_layers, load_model, replica_devices
from hallu.engine.patch import MetricSet, Pair, PairResult, Patcher, Route
from hallu.run.plan import Shard, resolve_positions
from hallu.run.prepare import prepare
from hallu.store import schema
from hallu.store.timing import stamp


class Worker:
    """Holds one model replica; `run_shard` is deterministic for a given shard and config."""

    def __init__(self, cfg: Config, run_id: str):
        self.prep = prepare(cfg)
        self.run_id = run_id
        # One replica, over `cluster.resources.num_gpus` GPUs when it asks for several.
        devices = replica_devices(cfg)
        self.model, self.revision = load_model(cfg.model, len(self.prep.tokenizer), devices)
        self.layers = decoder_layers(self.model)
        self.dtype = str(next(self.model.parameters()).dtype).removeprefix("torch.")
        sweep = cfg.sweep
        route = Route(sweep.engine, sweep.component, sweep.window, sweep.screen_top_k,
                      sweep.batch_size, sweep.memory_gb)  # fmt: skip
        self.engine = Patcher(self.model, self.layers, route)
        self.metrics = MetricSet(
            (cfg.metric.name, *cfg.metric.extra), self.prep.metric, self.prep.logprob_diff
        )

    @property
    def adapter(self) -> Any:
        """The fast engine's adapter, or None on the hook route."""
        return self.engine.adapter

    def _pair_inputs(self, shard: Shard, pid: str) -> Pair:
        """A pair of a shard as the engine takes it."""
        prep = self.prep
        source_cond, target_cond = DIRECTIONS[shard.direction]
        src_ids, tgt_ids = prep.token_ids[pid][source_cond], prep.token_ids[pid][target_cond]
        positions = resolve_positions(prep.cfg.sweep.positions, pid, len(src_ids), len(tgt_ids))
        return Pair(src_ids, tgt_ids, positions, shard.layers)

    def run_shard(self, shard: Shard, progress: Any = None) -> pa.Table:
        started = time.time()
        device = next(self.model.parameters()).device.type
        if shard.control is not None:
            from hallu.run.controls import run_control_shard

            meta = {"run_id": self.run_id, "model_revision": self.revision, "dtype": self.dtype}
            table = run_control_shard(self.prep, self.engine, shard, meta, progress)
            return stamp(table, started, device)
        cols: dict[str, list] = {name: [] for name in schema.SCHEMA.names}
        pairs = [self._pair_inputs(shard, pid) for pid in shard.pair_ids]
        done = self.engine.run(pairs, self.metrics)
        for pid, pair, res in zip(shard.pair_ids, pairs, done, strict=True):
            self._pair_rows(shard, pid, pair, res, cols)
            if progress is not None:
                progress.update(len(res.cells))
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

    def _pair_rows(
        self, shard: Shard, pid: str, pair: Pair, res: PairResult, cols: dict[str, list]
    ) -> None:
        """Append a row per (metric, cell) of one patched pair to `cols`."""
        prep = self.prep
        target_cond = DIRECTIONS[shard.direction][1]
        tokens = (
            prep.tokenizer.convert_ids_to_tokens(pair.target_ids),
            prep.tokenizer.convert_ids_to_tokens(pair.source_ids),
        )
        anchors = prep.anchors[pid][target_cond] if prep.anchors else None
        for name, (clean, corrupted, values, steps) in res.metrics.items():
            baselines = (clean, corrupted, anchors)
            for row in self._cell_rows(pid, name, res, tokens, baselines, values, steps):
                for k, v in row.items():
                    cols[k].append(v)

    def _cell_rows(self, pid, name, res, tokens, baselines, values, steps) -> list[dict]:
        """One metric's rows for a pair's cells; `tokens` = (target, source) token strings,
        `baselines` = (clean, corrupted, the target's template anchors)."""
        clean, corrupted, anchors = baselines
        cells, known, rho = res.cells, res.known, res.spearman
        approx = res.approx or [None] * len(cells)
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
