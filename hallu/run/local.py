"""Run a plan's unfinished shards and store each as it finishes.

`cluster=local` runs them in this process, one after another, with one model replica (the debug
mode: CPU or a single GPU). Finished shards (already in the store) are skipped, so rerunning an
interrupted run with the same run_id completes it without redoing or duplicating work.
"""

from __future__ import annotations

import sys
from typing import Any

from tqdm import tqdm

from hallu.config import Config
from hallu.run.plan import Plan
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
