"""The in-process executor (`cluster=local`): one runner, one model load, every unit in turn.

`LocalPool` holds one `hallu.run.runner.ShardRunner`, the class a Ray actor wraps
(hallu/run/ray.py), built on the first unit that needs computing and kept for the whole run
(patching, controls, noise floor, behaviour, both mechanism stages). `run_in_process` is the
loop: skip what the store holds (`hallu.run.units.unfinished`), write run.json once the model
has loaded (a model that fails to load leaves no run), then run each unit on the runner, which
stores it. Rerunning an interrupted run with the same run_id completes it without redoing or
duplicating. `run_local` and `run_behavior` are that loop for one plan's shards or one list of
behaviour chunks.
"""

from __future__ import annotations

import sys
from collections import Counter
from typing import Any

from tqdm import tqdm

from hallu.behavior.schema import Chunk, n_answers
from hallu.config import Config
from hallu.run.plan import Plan, Shard
from hallu.run.prepare import Prepared
from hallu.run.progress import Progress
from hallu.run.runner import ShardRunner
from hallu.run.units import WorkUnit, created_meta, stage, unfinished
from hallu.store.base import Store


class LocalPool:
    """cluster=local's one runner: loaded on first use, kept until `close`."""

    def __init__(self, cfg: Config, store: Store):
        self.cfg, self.store = cfg, store
        self._runner: ShardRunner | None = None
        self.progress: Progress | None = None  # set by the launch: status.json and the budget

    def runner(self) -> ShardRunner:
        if self._runner is None:
            runner = ShardRunner(self.cfg, self.store)
            if runner.failure is not None:  # in-process: the loader's own exception
                raise runner.failure
            self._runner = runner
        return self._runner

    def close(self) -> None:
        self._runner = None  # frees the replica once nothing else holds it

    def __enter__(self) -> LocalPool:
        return self

    def __exit__(self, *_: Any) -> None:
        self.close()


def run_in_process(
    pool: LocalPool, units: list[WorkUnit], store: Store, run_meta: dict[str, Any]
) -> Counter[str]:
    """Run every unit not yet in `store`, in the order given, on the pool's runner; the number
    run per stage (hallu/run/units.py's stage names)."""
    todo = unfinished(store, units)
    progress = pool.progress
    if progress is not None:
        progress.expect(units, todo)
    ran: Counter[str] = Counter()
    if not todo:
        return ran
    runner = pool.runner()  # loads before run.json: a model that fails to load leaves no run
    store.create(pool.cfg, created_meta(run_meta, runner.ready()))
    if progress is not None:
        progress.ready(WORKER, runner.ready())
    for name, group in _by_stage(todo):
        with tqdm(
            total=sum(_work(pool.cfg, u) for u in group),
            unit=_UNIT.get(name, "unit"),
            desc=name,
            file=sys.stderr,
            smoothing=0.1,
            dynamic_ncols=True,
        ) as bar:
            for u in group:
                if progress is not None and progress.over_budget():
                    raise progress.stop()  # nothing is in flight in this process
                out = runner.run(u, progress=bar)  # shards and chunks move the bar themselves
                if not isinstance(u, (Shard, Chunk)):
                    bar.update(1)
                ran[name] += 1
                if progress is not None:
                    progress.stored(WORKER, name, out, u.n_cells if isinstance(u, Shard) else 0)
    return ran


WORKER = "local"  # the one runner's name in status.json
_UNIT = {"patching": "cell", "controls": "cell", "behavior": "answer"}


def _work(cfg: Config, u: WorkUnit) -> int:
    if isinstance(u, Shard):
        return u.n_cells
    if isinstance(u, Chunk):
        return n_answers(cfg, [u])
    return 1


def _by_stage(units: list[WorkUnit]) -> list[tuple[str, list[WorkUnit]]]:
    """Consecutive runs of units of one stage (one progress bar each)."""
    groups: list[tuple[str, list[WorkUnit]]] = []
    for u in units:
        if groups and groups[-1][0] == stage(u):
            groups[-1][1].append(u)
        else:
            groups.append((stage(u), [u]))
    return groups


def run_local(cfg: Config, plan: Plan, store: Store, run_meta: dict[str, Any]) -> int:
    """Run every shard of `plan` not yet in `store`, in this process; how many were run."""
    with LocalPool(cfg, store) as pool:
        return sum(run_in_process(pool, list(plan.shards), store, run_meta).values())


def run_behavior(
    prep: Prepared, chunks: list[Chunk], store: Store, run_meta: dict[str, Any]
) -> int:
    """Run every behaviour chunk not yet in `store`, in this process; how many were run."""
    with LocalPool(prep.cfg, store) as pool:
        return sum(run_in_process(pool, list(chunks), store, run_meta).values())
