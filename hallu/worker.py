"""What runs a shard: tokenized prompts and metric (`prepare`), and the model (`Worker`).

`prepare` needs the tokenizer and the model's config but no weights, so the driver uses it to
validate and plan; a `Worker` calls it again on its own machine, loads the weights once, and then
turns shards into result tables. It imports nothing from Ray: the Ray executor wraps it.
"""

from __future__ import annotations

import math
import time
from dataclasses import dataclass
from typing import Any

import pyarrow as pa

from hallu import schema
from hallu.config import DIRECTIONS, Config
from hallu.models import ModelShape, decoder_layers, load_model, load_shape, load_tokenizer
from hallu.patching import LogitDiff, capture_resid_pre, patched_logits
from hallu.plan import Plan, Shard, make_plan, resolve_positions
from hallu.prompts import load_pairs, select_pairs, single_token_id, tokenize_pairs
from hallu.shard_timing import stamp


@dataclass
class Prepared:
    cfg: Config
    tokenizer: Any
    shape: ModelShape
    token_ids: dict[str, dict[str, list[int]]]  # pair id -> condition -> ids
    metric: LogitDiff

    def plan(self) -> Plan:
        lengths = {
            pid: {c: len(ids) for c, ids in conds.items()} for pid, conds in self.token_ids.items()
        }
        return make_plan(self.cfg.sweep, self.shape, lengths, self.cfg.model.name_or_path)


def prepare(cfg: Config) -> Prepared:
    """Everything but the weights; raises UserError for any bad key, file or prompt."""
    tokenizer = load_tokenizer(cfg.model)
    shape = load_shape(cfg.model)
    pairs = select_pairs(load_pairs(cfg.prompts), cfg.sweep)
    token_ids = tokenize_pairs(tokenizer, pairs, cfg.prompts)
    metric = LogitDiff(
        tuple(
            single_token_id(tokenizer, t, "metric.confident_tokens")
            for t in cfg.metric.confident_tokens
        ),
        tuple(
            single_token_id(tokenizer, t, "metric.tentative_tokens")
            for t in cfg.metric.tentative_tokens
        ),
    )
    return Prepared(cfg, tokenizer, shape, token_ids, metric)


class Worker:
    """Holds one model replica; `run_shard` is deterministic for a given shard and config."""

    def __init__(self, cfg: Config, run_id: str):
        self.prep = prepare(cfg)
        self.run_id = run_id
        self.model, self.revision = load_model(cfg.model, len(self.prep.tokenizer))
        self.layers = decoder_layers(self.model)
        self.dtype = str(next(self.model.parameters()).dtype).removeprefix("torch.")

    def run_shard(self, shard: Shard, progress: Any = None) -> pa.Table:
        cfg, prep = self.prep.cfg, self.prep
        started = time.time()
        device = next(self.model.parameters()).device.type
        if shard.control is not None:
            from hallu.controls import run_control_shard

            meta = {"run_id": self.run_id, "model_revision": self.revision, "dtype": self.dtype}
            table = run_control_shard(prep, self.model, self.layers, shard, meta, progress)
            return stamp(table, started, device)
        source_cond, target_cond = DIRECTIONS[shard.direction]
        cols: dict[str, list] = {name: [] for name in schema.SCHEMA.names}
        for pid in shard.pair_ids:
            src_ids, tgt_ids = prep.token_ids[pid][source_cond], prep.token_ids[pid][target_cond]
            resid, src_logits = capture_resid_pre(self.model, self.layers, src_ids)
            _, tgt_logits = capture_resid_pre(self.model, self.layers, tgt_ids)
            clean, corrupted = float(prep.metric(src_logits)), float(prep.metric(tgt_logits))
            positions = resolve_positions(cfg.sweep.positions, pid, len(src_ids), len(tgt_ids))
            cells = [(layer, t, s) for layer in shard.layers for t, s in positions]
            patched = prep.metric(
                patched_logits(
                    self.model,
                    self.layers,
                    tgt_ids,
                    resid,
                    [(c,) for c in cells],
                    cfg.sweep.batch_size,
                )
            ).tolist()
            src_tok = prep.tokenizer.convert_ids_to_tokens(src_ids)
            tgt_tok = prep.tokenizer.convert_ids_to_tokens(tgt_ids)
            gap = clean - corrupted
            for (layer, t, s), value in zip(cells, patched, strict=True):
                row = {
                    "layer": layer,
                    "position": t,
                    "position_from_end": t - len(tgt_ids),
                    "source_position": s,
                    "token": tgt_tok[t],
                    "source_token": src_tok[s],
                    "n_tokens": len(tgt_ids),
                    "pair_id": pid,
                    "clean": clean,
                    "corrupted": corrupted,
                    "patched": value,
                    "restoration": (value - corrupted) / gap if gap != 0 else math.nan,
                }
                for k, v in row.items():
                    cols[k].append(v)
            if progress is not None:
                progress.update(len(cells))
        n = len(cols["layer"])
        constant = {
            "run_id": self.run_id,
            "shard_id": shard.shard_id,
            "model": cfg.model.name_or_path,
            "model_revision": self.revision,
            "dtype": self.dtype,
            "experiment": "patching",
            "direction": shard.direction,
            "component": cfg.sweep.component,
            "layer_window": 1,
            "head": None,
            "metric": cfg.metric.name,
            "seed": cfg.seed,
            "control": None,
        }
        for k, v in constant.items():
            cols[k] = [v] * n
        return stamp(schema.to_table(cols), started, device)
