"""The one executor: a run's units go to one set of runners, in this process or on Ray.

`open_pool` gives the run's runners: `cluster=local`, one `ShardRunner` in this process
(hallu/run/local.py); otherwise Ray actors wrapping the same class (hallu/run/ray.py). Every
stage of the run (patching, controls, noise floor, behaviour, both mechanism stages) calls
`run_units` with the same pool, so each runner loads the model once per run. Both paths skip
the units the store holds, write run.json after the first model load, and store each result
from the runner.
"""

from __future__ import annotations

from collections import Counter
from typing import TYPE_CHECKING, Any

from hallu.config import Config
from hallu.run.units import WorkUnit
from hallu.store.base import Store

if TYPE_CHECKING:
    from hallu.run.local import LocalPool
    from hallu.run.ray import Pool, RayStats


def open_pool(cfg: Config, store: Store) -> LocalPool | Pool:
    """The run's runners, started on first use; close them with `close()` (or `with`)."""
    if cfg.cluster.kind == "local":
        from hallu.run.local import LocalPool

        return LocalPool(cfg, store)
    from hallu.run.ray import Pool

    return Pool(cfg, store)


def run_units(
    cfg: Config,
    units: list[WorkUnit],
    store: Store,
    run_meta: dict[str, Any],
    pool: LocalPool | Pool,
    stats: RayStats | None = None,
) -> Counter[str]:
    """Run every unit not yet in `store` on the pool's runners; the units run per stage.
    `stats`: on Ray, what the driver saw is added to it (workers, pids, model loads)."""
    from hallu.run.local import LocalPool, run_in_process
    from hallu.run.units import repair

    repair(store, units)  # stored units that fail their checks are computed again
    if isinstance(pool, LocalPool):
        return run_in_process(pool, units, store, run_meta)
    from hallu.run.ray import RayStats, run_ray

    stats = stats if stats is not None else RayStats()
    before = Counter(stats.by_stage)  # `stats` may hold an earlier stage's units
    run_ray(cfg, units, store, run_meta, stats, pool=pool)
    return Counter(stats.by_stage) - before
