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
from hallu.run.watchdog import Watchdog
from hallu.run.worker import Worker
from hallu.store.base import Store
from hallu.store.lease import LeaseLost, pid_alive


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
            self.store.write_shard(shard.shard_id, table)  # LeaseLost once the driver is gone
            existed = False
        except FileExistsError:  # a previous attempt stored it before its worker died
            existed = True
        except LeaseLost:
            lease = self.store.lease
            if lease.owner_host == socket.gethostname() and not pid_alive(lease.owner_pid or -1):
                os._exit(1)  # the driver is gone: nobody waits for this answer
            raise
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
    # A local Ray dies with this driver, even if the driver is killed (hallu/run/watchdog.py).
    guard = Watchdog() if started and cfg.cluster.kind == "ray_local" else None
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
        Driver(cfg, store, run_meta, todo, actors, stats).run()
    finally:
        for actor in actors:
            ray.kill(actor, no_restart=True)
        if started:
            ray.shutdown()
        if guard is not None:
            guard.stop()
    missing = {s.shard_id for s in todo} - store.done_shards()
    if missing:
        raise UserError(
            f"{len(missing)} shard(s) ran but are not visible in {store.dir} (e.g. "
            f"{sorted(missing)[0]}): workers on other machines wrote to their own disks. "
            "Fix: use storage=s3 (or a storage.root on a filesystem every node shares)"
        )
    return len(todo)


@dataclass(frozen=True)
class Call:
    """One call in flight on an actor: a shard to run, or `ready` (shard None) while it loads."""

    actor: int
    shard: Shard | None
    seq: int  # submission order; calls on one actor run in this order


class Driver:
    """Hands shards to actors, at most `cluster.shards_per_worker` each, and reacts to answers.

    State: `queue` (shards not yet handed out), `pending` (ref -> Call), `free` (shard slots per
    actor; 0 until it answers `ready`), `alive` (actors not dead for good), `failures` (per shard),
    `innocent` (failed calls already blamed on their actor's death), `sent_at` (per ref).
    """

    def __init__(
        self,
        cfg: Config,
        store: Store,
        run_meta: dict[str, Any],
        todo: list[Shard],
        actors: list,
        stats: RayStats,
    ):
        self.cfg, self.store, self.run_meta, self.actors, self.stats = (
            cfg,
            store,
            run_meta,
            actors,
            stats,
        )
        self.n_todo = len(todo)
        self.queue: deque[Shard] = deque(todo)
        self.failures: Counter[str] = Counter()
        self.pending: dict[Any, Call] = {}
        self.free = [0] * len(actors)
        self.alive = set(range(len(actors)))
        self.seq = 0
        self.sent_at: dict[Any, float] = {}
        self.innocent: set[Any] = set()
        self.created = False
        self.first_ready_at: float | None = None
        for i in range(len(actors)):
            self._submit(i, None)

    def run(self) -> None:
        """Until every shard is stored (or a UserError says why it cannot be)."""
        import ray

        total = sum(s.n_cells for s in self.queue)
        with tqdm(total=total, unit="cell", desc="patching", file=sys.stderr) as bar:
            bar.set_postfix_str(f"shards 0/{self.n_todo}, loading {len(self.actors)} workers")
            while self.queue or any(c.shard is not None for c in self.pending.values()):
                self._dispatch()
                ready_refs, _ = ray.wait(list(self.pending), num_returns=1, timeout=60)
                if not ready_refs:
                    self._say_if_stuck()
                    continue
                self._collect(ready_refs[0], bar)
        self.stats.seconds = time.perf_counter() - (self.first_ready_at or time.perf_counter())

    def _submit(self, i: int, shard: Shard | None) -> None:
        self.seq += 1
        actor = self.actors[i]
        ref = actor.ready.remote() if shard is None else actor.run.remote(shard)
        self.pending[ref] = Call(i, shard, self.seq)
        if shard is not None:
            self.sent_at[ref] = time.perf_counter()

    def _dispatch(self) -> None:
        for i in sorted(self.alive):
            while self.free[i] > 0 and self.queue:
                self._submit(i, self.queue.popleft())
                self.free[i] -= 1

    def _busy(self, i: int) -> bool:
        return any(c.actor == i and c.shard is not None for c in self.pending.values())

    def _say_if_stuck(self) -> None:
        """Still loading or computing; say so if no worker can take work."""
        if not any(self.free[j] or self._busy(j) for j in self.alive):
            print(
                f"hallu: waiting for workers (0 of {len(self.alive)} ready: loading the "
                "model, restarting, or waiting for cluster resources)",
                file=sys.stderr,
            )

    def _collect(self, ref: Any, bar: tqdm) -> None:
        """Take one finished call's answer (or its error) and update the state."""
        import ray
        from ray.exceptions import ActorDiedError, ActorUnavailableError, RayTaskError

        call = self.pending.pop(ref)
        try:
            out = ray.get(ref)  # already finished: this does not block
        except (ActorUnavailableError, ActorDiedError) as err:
            self._on_actor_error(ref, call, err, permanent=isinstance(err, ActorDiedError))
            return
        except RayTaskError as err:  # the shard raised inside the worker
            assert call.shard is not None
            self.free[call.actor] += 1
            self._count_failure(call.shard, err)
            self.queue.append(call.shard)  # to the back: another worker may succeed
            self.stats.requeued += 1
            return
        if call.shard is None:
            self._on_ready(call.actor, out)
        else:
            self._on_stored(ref, call, out, bar)
        busy = sum(1 for j in self.alive if self._busy(j))
        bar.set_postfix_str(
            f"shards {self.stats.shards_run}/{self.n_todo}, workers busy {busy}/{len(self.actors)}"
        )

    def _on_ready(self, i: int, out: dict[str, Any]) -> None:
        """A worker finished loading the model: the first one creates the run."""
        if out["error"]:
            raise UserError(
                f"worker {i} (pid {out['pid']} on {out['host']}) could not load the "
                f"model: {out['error']}"
            )
        if not self.created:
            meta = {**self.run_meta, "model_revision": out["revision"], "dtype": out["dtype"]}
            self.store.create(self.cfg, meta)
            self.created, self.first_ready_at = True, time.perf_counter()
        self.free[i] = self.cfg.cluster.shards_per_worker

    def _on_stored(self, ref: Any, call: Call, out: dict[str, Any], bar: tqdm) -> None:
        assert call.shard is not None
        self.stats.shards_run += 1
        self.stats.worker_seconds += out["seconds"]
        self.stats.round_trips.append(time.perf_counter() - self.sent_at.pop(ref))
        self.free[call.actor] += 1
        bar.update(call.shard.n_cells)

    def _on_actor_error(self, ref: Any, call: Call, err: Exception, permanent: bool) -> None:
        """The actor's process died (`permanent`: its restarts are used up; else restarting)."""
        i, shard = call.actor, call.shard
        if shard is not None:
            # Calls run in order: only the oldest in-flight shard was running when the
            # process died; the ones queued behind it are re-queued without blame.
            same = {r: c for r, c in self.pending.items() if c.actor == i and c.shard}
            if ref not in self.innocent:
                oldest = min([call, *same.values()], key=lambda c: c.seq).shard
                assert oldest is not None
                self._count_failure(oldest, err)
                self.innocent.update(same)
            self.queue.appendleft(shard)
            self.stats.requeued += 1
        if permanent and getattr(err, "actor_init_failed", False):
            raise UserError(
                f"worker {i} could not start ({_why(err)}); check that every node "
                "has the project and its packages installed (see Dockerfile)"
            ) from None
        self._actor_lost(i, err, permanent)

    def _actor_lost(self, i: int, err: Exception, permanent: bool) -> None:
        self.stats.worker_failures += 1
        self.free[i] = 0
        if permanent:
            self.alive.discard(i)
        elif not any(c.actor == i and c.shard is None for c in self.pending.values()):
            self._submit(i, None)  # back to work once the model is reloaded
        if not self.alive:
            raise UserError(
                f"all {len(self.actors)} workers died (last: {_why(err)}); {len(self.queue)} "
                f"shard(s) not run. Raise cluster.max_worker_restarts, or rerun with "
                f"run_id={self.store.run_id} to finish (stored shards are kept)"
            )

    def _count_failure(self, shard: Shard, err: Exception) -> None:
        limit = self.cfg.cluster.max_shard_failures
        self.failures[shard.shard_id] += 1
        if self.failures[shard.shard_id] >= limit:
            raise UserError(
                f"shard {shard.shard_id} ({shard.direction}, pairs {', '.join(shard.pair_ids)}) "
                f"failed {self.failures[shard.shard_id]} times (cluster.max_shard_failures="
                f"{limit}); last error: {_why(err)}. Stored shards are kept: fix the cause and "
                f"rerun with run_id={self.store.run_id}"
            )


def _why(err: Exception) -> str:
    """One line saying what went wrong inside Ray, without the remote traceback."""
    cause = getattr(err, "cause", None)
    if isinstance(cause, BaseException):
        return f"{type(cause).__name__}: {cause}"
    lines = [ln.strip() for ln in str(err).strip().splitlines() if ln.strip()]
    return lines[-1] if lines else type(err).__name__
