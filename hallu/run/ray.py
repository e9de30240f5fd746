"""Run a plan's unfinished shards on Ray: long-lived worker actors, bounded work, lost work redone.

`cluster=ray_local` starts Ray on this machine; `cluster=ray` joins a running cluster
(`cluster.address`, else `$RAY_ADDRESS`, else auto). Each of `cluster.num_workers` actors wraps one
`hallu.run.worker.Worker` (the model is loaded once per actor, with `cluster.resources` reserved for
it) and writes the shards it runs to the store itself; the driver only hands out shard specs and
tracks small manifests. The driver keeps at most `cluster.shards_per_worker` shards in flight per
actor and waits with `ray.wait`, so it never blocks on one slow shard.

Faults:
- a worker process that dies (killed, OOM, node lost) fails its in-flight calls with
  ActorUnavailableError/ActorDiedError: those shards go back to the front of the queue, and the
  actor (restarted by Ray up to `cluster.max_worker_restarts` times) gets work again only after it
  answers `ready` (model reloaded);
- a shard that fails `cluster.max_shard_failures` times stops the run, naming the shard;
- a model that fails to load stops the run with the worker's error, before any shard runs on it;
- a shard written twice (its first worker died after writing) is kept once: the store refuses to
  replace it, and the driver counts it done.
Finished shards are in the store, so a killed driver is resumed by rerunning with the same run_id.
"""

from __future__ import annotations

import math
import os
import socket
import sys
import time
from collections import Counter, deque
from dataclasses import dataclass, field
from typing import Any

from tqdm import tqdm

from hallu.config import ClusterCfg, Config
from hallu.errors import UserError
from hallu.run.plan import Plan, Shard
from hallu.run.worker import Worker
from hallu.store.base import Store


class ShardRunner:
    """The actor body: one model replica; runs shards and writes them to the store."""

    def __init__(self, cfg: Config, store: Store):
        self.store = store
        self.error: str | None = None
        try:
            self.worker: Worker | None = Worker(cfg, store.run_id)
        except Exception as err:  # reported by ready(), so the driver stops with this message
            self.worker, self.error = None, f"{type(err).__name__}: {err}"

    def ready(self) -> dict[str, Any]:
        w = self.worker
        return {
            "error": self.error,
            "revision": w.revision if w else None,
            "dtype": w.dtype if w else None,
            "pid": os.getpid(),
            "host": socket.gethostname(),
        }

    def run(self, shard: Shard) -> dict[str, Any]:
        assert self.worker is not None, self.error
        start = time.perf_counter()
        table = self.worker.run_shard(shard)
        try:
            self.store.write_shard(shard.shard_id, table)
            existed = False
        except FileExistsError:  # a previous attempt stored it before its worker died
            existed = True
        return {"rows": table.num_rows, "seconds": time.perf_counter() - start, "existed": existed}


@dataclass
class RayStats:
    """What the driver saw; the benchmark reads these."""

    workers: int = 0
    shards_run: int = 0
    worker_failures: int = 0  # calls that failed because an actor process died
    requeued: int = 0
    seconds: float = 0.0  # from the first worker ready to the last shard stored
    worker_seconds: float = 0.0  # sum over shards of time inside `run` (compute + upload)
    round_trips: list[float] = field(default_factory=list)  # driver-seen seconds per shard


def connect(cluster: ClusterCfg) -> bool:
    """Start or join Ray as the config says; True if this call started it (and must stop it)."""
    import ray

    if ray.is_initialized():
        return False
    if cluster.kind == "ray_local":
        os.environ.setdefault("RAY_USAGE_STATS_ENABLED", "0")  # no phoning home from a laptop
        ray.init(
            address="local",  # always a fresh local instance, never someone's running cluster
            num_cpus=max(1, math.ceil(cluster.num_workers * cluster.resources.num_cpus)),
            include_dashboard=False,
            logging_level="WARNING",
        )
        return True
    address = cluster.address or os.environ.get("RAY_ADDRESS") or "auto"
    try:
        ray.init(address=address, logging_level="WARNING")
    except (ConnectionError, RuntimeError, ValueError) as err:
        raise UserError(
            f"cluster.address={address}: cannot join a Ray cluster ({err}). Fix: start one "
            "(`ray start --head`, or see infra/), set cluster.address or RAY_ADDRESS, or use "
            "cluster=ray_local"
        ) from None
    return True


def _workers_that_fit(cluster: ClusterCfg) -> int:
    """How many of the requested workers the cluster could ever hold; UserError if none."""
    import ray

    total = ray.cluster_resources()
    need = {"CPU": cluster.resources.num_cpus, "GPU": cluster.resources.num_gpus}
    fits = cluster.num_workers
    for name, per in need.items():
        if per > 0:
            fits = min(fits, int(total.get(name, 0) // per))
    if fits == 0:
        raise UserError(
            f"cluster.resources asks {need['CPU']} CPUs and {need['GPU']} GPUs per worker, but "
            f"the Ray cluster has {total.get('CPU', 0):g} CPUs and {total.get('GPU', 0):g} GPUs "
            "in all. Fix: lower cluster.resources.num_gpus/num_cpus or add nodes"
        )
    if fits < cluster.num_workers:
        print(
            f"hallu: the cluster holds {fits} of cluster.num_workers={cluster.num_workers} "
            "workers; running with those",
            file=sys.stderr,
        )
    return fits


def run_ray(
    cfg: Config,
    plan: Plan,
    store: Store,
    run_meta: dict[str, Any],
    stats: RayStats | None = None,
) -> int:
    """Run every shard not yet in `store` on Ray actors; return how many were run."""
    done = store.done_shards()
    # Largest first: the longest shards start early, so the run does not end on one straggler.
    todo = sorted((s for s in plan.shards if s.shard_id not in done), key=lambda s: -s.flops_naive)
    if not todo:
        return 0
    import ray

    started = connect(cfg.cluster)
    actors: list[Any] = []
    try:
        n = _workers_that_fit(cfg.cluster)
        remote = ray.remote(ShardRunner).options(
            num_cpus=cfg.cluster.resources.num_cpus,
            num_gpus=cfg.cluster.resources.num_gpus,
            max_restarts=cfg.cluster.max_worker_restarts,
            max_task_retries=0,  # the driver re-queues, so it can count failures per shard
        )
        actors = [remote.remote(cfg, store) for _ in range(n)]
        stats = stats if stats is not None else RayStats()
        stats.workers = n
        _drive(cfg, store, run_meta, todo, actors, stats)
    finally:
        for actor in actors:
            ray.kill(actor, no_restart=True)
        if started:
            ray.shutdown()
    missing = {s.shard_id for s in todo} - store.done_shards()
    if missing:
        raise UserError(
            f"{len(missing)} shard(s) ran but are not visible in {store.dir} (e.g. "
            f"{sorted(missing)[0]}): workers on other machines wrote to their own disks. "
            "Fix: use storage=s3 (or a storage.root on a filesystem every node shares)"
        )
    return len(todo)


def _drive(
    cfg: Config,
    store: Store,
    run_meta: dict[str, Any],
    todo: list[Shard],
    actors: list,
    stats: RayStats,
) -> None:
    import ray
    from ray.exceptions import ActorDiedError, ActorUnavailableError, RayTaskError

    c = cfg.cluster
    queue: deque[Shard] = deque(todo)
    failures: Counter[str] = Counter()
    # ref -> (actor index, shard or None for a `ready` call, submit sequence number)
    pending: dict[Any, tuple[int, Shard | None, int]] = {}
    free = [0] * len(actors)  # shard slots per actor; 0 until it answers `ready`
    alive = set(range(len(actors)))
    seq, sent_at, created, first_ready_at = 0, {}, False, None
    innocent: set[Any] = set()  # failed calls already accounted for by their actor's death
    for i, actor in enumerate(actors):
        pending[actor.ready.remote()] = (i, None, seq := seq + 1)

    def actor_lost(i: int, err: Exception, permanent: bool) -> None:
        stats.worker_failures += 1
        free[i] = 0
        if permanent:
            alive.discard(i)
        elif not any(j == i and s is None for j, s, _ in pending.values()):
            pending[actors[i].ready.remote()] = (i, None, 0)  # back to work once reloaded
        if not alive:
            raise UserError(
                f"all {len(actors)} workers died (last: {_why(err)}); {len(queue)} shard(s) not "
                f"run. Raise cluster.max_worker_restarts, or rerun with run_id={store.run_id} "
                "to finish (stored shards are kept)"
            )

    total_cells = sum(s.n_cells for s in todo)
    with tqdm(total=total_cells, unit="cell", desc="patching", file=sys.stderr) as bar:
        bar.set_postfix_str(f"shards 0/{len(todo)}, loading {len(actors)} workers")
        while queue or any(s is not None for _, s, _ in pending.values()):
            for i in sorted(alive):
                while free[i] > 0 and queue:
                    shard = queue.popleft()
                    ref = actors[i].run.remote(shard)
                    pending[ref] = (i, shard, seq := seq + 1)
                    sent_at[ref] = time.perf_counter()
                    free[i] -= 1
            ready_refs, _ = ray.wait(list(pending), num_returns=1, timeout=60)
            if not ready_refs:  # still loading or computing; say so if no worker can take work
                if not any(free[j] or _busy(pending, j) for j in alive):
                    print(
                        f"hallu: waiting for workers (0 of {len(alive)} ready: loading the "
                        "model, restarting, or waiting for cluster resources)",
                        file=sys.stderr,
                    )
                continue
            ref = ready_refs[0]
            i, shard, my_seq = pending.pop(ref)
            try:
                out = ray.get(ref)  # already finished: this does not block
            except (ActorUnavailableError, ActorDiedError) as err:
                if shard is not None:
                    # Calls run in order: only the oldest in-flight shard was running when the
                    # process died; the ones queued behind it are re-queued without blame.
                    same = {r: (q, s) for r, (j, s, q) in pending.items() if j == i and s}
                    if ref not in innocent:
                        oldest = min([(my_seq, shard), *same.values()], key=lambda t: t[0])[1]
                        _count_failure(failures, oldest, c.max_shard_failures, err, store, queue)
                        innocent.update(same)
                    queue.appendleft(shard)
                    stats.requeued += 1
                permanent = isinstance(err, ActorDiedError)  # restarts used up; else restarting
                if permanent and getattr(err, "actor_init_failed", False):
                    raise UserError(
                        f"worker {i} could not start ({_why(err)}); check that every node "
                        "has the project and its packages installed (see Dockerfile)"
                    ) from None
                actor_lost(i, err, permanent)
                continue
            except RayTaskError as err:  # the shard raised inside the worker
                assert shard is not None
                free[i] += 1
                _count_failure(failures, shard, c.max_shard_failures, err, store, queue)
                queue.append(shard)  # to the back: another worker may succeed
                stats.requeued += 1
                continue
            if shard is None:  # a worker finished loading the model
                if out["error"]:
                    raise UserError(
                        f"worker {i} (pid {out['pid']} on {out['host']}) could not load the "
                        f"model: {out['error']}"
                    )
                if not created:
                    store.create(
                        cfg, {**run_meta, "model_revision": out["revision"], "dtype": out["dtype"]}
                    )
                    created, first_ready_at = True, time.perf_counter()
                free[i] = c.shards_per_worker
            else:
                stats.shards_run += 1
                stats.worker_seconds += out["seconds"]
                stats.round_trips.append(time.perf_counter() - sent_at.pop(ref))
                free[i] += 1
                bar.update(shard.n_cells)
            busy = {j for j in alive if _busy(pending, j)}
            bar.set_postfix_str(
                f"shards {stats.shards_run}/{len(todo)}, workers busy {len(busy)}/{len(actors)}"
            )
    stats.seconds = time.perf_counter() - (first_ready_at or time.perf_counter())


def _busy(pending: dict, i: int) -> bool:
    return any(j == i and s is not None for j, s, _ in pending.values())


def _count_failure(
    failures: Counter[str], shard: Shard, limit: int, err: Exception, store: Store, queue: deque
) -> None:
    failures[shard.shard_id] += 1
    if failures[shard.shard_id] >= limit:
        raise UserError(
            f"shard {shard.shard_id} ({shard.direction}, pairs {', '.join(shard.pair_ids)}) failed "
            f"{failures[shard.shard_id]} times (cluster.max_shard_failures={limit}); last error: "
            f"{_why(err)}. Stored shards are kept: fix the cause and rerun with "
            f"run_id={store.run_id}"
        )


def _why(err: Exception) -> str:
    """One line saying what went wrong inside Ray, without the remote traceback."""
    cause = getattr(err, "cause", None)
    if isinstance(cause, BaseException):
        return f"{type(cause).__name__}: {cause}"
    lines = [ln.strip() for ln in str(err).strip().splitlines() if ln.strip()]
    return lines[-1] if lines else type(err).__name__
