"""Run a plan's unfinished shards (or behaviour chunks) in this process and store each as it ends.

`cluster=local` runs them one after another, with one model replica (the debug mode: CPU or a
single GPU). On Ray, shards and behaviour chunks run on the workers instead (hallu/run/ray.py).
Finished work (already in the store) is skipped, so rerunning an interrupted run with the same
run_id completes it without redoing or duplicating.
"""

from __future__ import annotations

import sys
from typing import Any

import torch
from tqdm import tqdm

from hallu.behavior.experiment import BehaviorWorker
from hallu.behavior.schema import FOLDER, Chunk, n_answers
from hallu.config import Config
from hallu.run.plan import Plan
from hallu.run.prepare import Prepared
from hallu.run.worker import Worker
from hallu.store.base import Store


def run_local(cfg: Config, plan: Plan, store: Store, run_meta: dict[str, Any]) -> int:
    """Run every shard not yet in `store`; return how many were run.

    The model loads before run.json is written, so a model that fails to load leaves no run.
    """
    done = store.done_shards()
    todo = [s for s in plan.shards if s.shard_id not in done]
    if not todo:
        return 0
    worker = Worker(cfg, store.run_id)
    store.create(cfg, {**run_meta, "model_revision": worker.revision, "dtype": worker.dtype})
    cells = sum(s.n_cells for s in todo)
    with tqdm(
        total=cells,
        unit="cell",
        desc="patching",
        file=sys.stderr,
        smoothing=0.1,
        dynamic_ncols=True,
    ) as bar:
        for shard in todo:
            store.write_shard(shard.shard_id, worker.run_shard(shard, progress=bar))
    return len(todo)


def run_behavior(
    prep: Prepared, chunks: list[Chunk], store: Store, run_meta: dict[str, Any]
) -> int:
    """Run every chunk not yet in `store` (in this process); return how many were run."""
    done = store.table_names(FOLDER)
    todo = [c for c in chunks if c.chunk_id not in done]
    if not todo:
        return 0
    torch.manual_seed(prep.cfg.seed)
    worker = BehaviorWorker(prep, store.run_id)  # loads before run.json: a bad model leaves no run
    store.create(prep.cfg, {**run_meta, "model_revision": worker.revision, "dtype": worker.dtype})
    with tqdm(
        total=n_answers(prep.cfg, todo), unit="answer", desc="behavior", file=sys.stderr
    ) as bar:
        for chunk in todo:
            store.write_table(f"{FOLDER}/{chunk.chunk_id}.parquet", worker.run_chunk(chunk, bar))
    return len(todo)
