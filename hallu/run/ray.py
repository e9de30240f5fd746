"""Run a study's unfinished units on Ray: long-lived worker actors, bounded work, lost work redone.

`cluster=ray_local` starts Ray on this machine; `cluster=ray` joins a running cluster
(`cluster.address`, else `$RAY_ADDRESS`, else auto). Each of `cluster.num_workers` actors wraps one
`hallu.run.runner.ShardRunner`, the runner cluster=local uses in-process (hallu/run/local.py), and
adds nothing but transport (the model is loaded once per actor, with `cluster.resources`
reserved for it); it runs every kind of unit (hallu/run/units.py): patching and control shards,
behaviour chunks, the noise floor, mechanism units. Workers write what they run to the store
themselves; the driver only hands out unit specs and tracks small manifests, and loads no weights.
The driver keeps at most `cluster.shards_per_worker` units in flight per actor and waits with
`ray.wait`, so it never blocks on one slow unit.

Faults:
- a worker process that dies (killed, OOM, node lost) fails its in-flight calls with
  ActorUnavailableError/ActorDiedError: those units go back to the front of the queue, and the
  actor (restarted by Ray up to `cluster.max_worker_restarts` times) gets work again only after it
  answers `ready` (model reloaded);
- a unit that fails `cluster.max_shard_failures` times stops the run, naming the unit;
- a model that fails to load stops the run with the worker's error, before any unit runs on it;
- a unit stored twice (its first worker died after storing it) is kept once: the store refuses to
  replace it, and the driver counts it done.
Finished units are in the store, so a killed driver is resumed by rerunning with the same run_id.
"""

from __future__ import annotations

import math
import os
import sys
import time
from collections import Counter, defaultdict, deque
from dataclasses import dataclass, field
from typing import Any

from tqdm import tqdm

from hallu.config import ClusterCfg, Config
from hallu.errors import UserError
from hallu.run.plan import Plan, Shard
from hallu.run.progress import Progress
from hallu.run.runner import ShardRunner
from hallu.run.units import WorkUnit, created_meta, describe, stage, unfinished, unit_id
from hallu.run.watchdog import Watchdog
from hallu.store.base import Store

__all__ = ["RayStats", "ShardRunner", "connect", "run_ray"]


@dataclass
class RayStats:
    """What the driver saw; the benchmarks and the launch's log read these."""

    workers: int = 0
    shards_run: int = 0  # units of every kind run (stored, or found stored) in this call
    worker_failures: int = 0  # calls that failed because an actor process died
    requeued: int = 0
    seconds: float = 0.0  # from the first worker ready to the last unit stored
    worker_seconds: float = 0.0  # sum over units of time inside `run` (compute + upload)
    round_trips: list[float] = field(default_factory=list)  # driver-seen seconds per unit
    by_stage: Counter[str] = field(default_factory=Counter)  # units run per stage
    pids: dict[str, set[int]] = field(default_factory=lambda: defaultdict(set))  # stage -> pids
    model_loads: dict[int, int] = field(default_factory=dict)  # worker pid -> load_model calls

    def where(self) -> str:
        """Which worker processes ran each stage, e.g. for `hallu: on the workers: ...`."""
        stages = "; ".join(
            f"{name} {n} on worker pid(s) {', '.join(map(str, sorted(self.pids[name])))}"
            for name, n in self.by_stage.items()
        )
        loads = ", ".join(f"pid {p}: {n}" for p, n in sorted(self.model_loads.items()))
        return f"{stages}; model loads per worker {loads}"


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
            # One machine: Ray's services listen on loopback only, not on the network.
            _node_ip_address="127.0.0.1",
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


class Pool:
    """The run's worker actors: started on first use, kept for every dispatch of the run
    (patching, controls, noise floor, behaviour, both mechanism stages), so each actor loads
    the model once; `close` kills them and stops a Ray this process started."""

    def __init__(self, cfg: Config, store: Store, runner: type = ShardRunner):
        self.cfg, self.store, self.runner = cfg, store, runner
        self.actors: list[Any] = []
        self._started = False
        self._guard: Watchdog | None = None
        self.progress: Progress | None = None  # set by the launch: status.json and the budget

    def get(self) -> list[Any]:
        if not self.actors:
            import ray

            self._started = connect(self.cfg.cluster)
            # A local Ray dies with this driver, even if the driver is killed (run/watchdog.py).
            if self._started and self.cfg.cluster.kind == "ray_local":
                self._guard = Watchdog()
            resources = self.cfg.cluster.resources
            remote = ray.remote(self.runner).options(
                num_cpus=resources.num_cpus,
                num_gpus=resources.num_gpus,
                max_restarts=self.cfg.cluster.max_worker_restarts,
                max_task_retries=0,  # the driver re-queues, so it can count failures per unit
            )
            n = _workers_that_fit(self.cfg.cluster)
            self.actors = [remote.remote(self.cfg, self.store) for _ in range(n)]
        return self.actors

    def close(self) -> None:
        if self.actors or self._started:
            import ray

            for actor in self.actors:
                ray.kill(actor, no_restart=True)
            if self._started:
                ray.shutdown()
        if self._guard is not None:
            self._guard.stop()
        self.actors, self._started, self._guard = [], False, None

    def __enter__(self) -> Pool:
        return self

    def __exit__(self, *_: Any) -> None:
        self.close()


def run_ray(
    cfg: Config,
    work: Plan | list[WorkUnit],
    store: Store,
    run_meta: dict[str, Any],
    stats: RayStats | None = None,
    runner: type = ShardRunner,
    pool: Pool | None = None,
) -> int:
    """Run every unit (a plan's shards, or any list of units) not yet in `store` on Ray actors;
    return how many were run. `pool`: the run's actors (kept open by the caller); without one,
    actors are started for this call and stopped after it. `runner`: the actor body, a
    ShardRunner (benchmarks/driver_throughput.py passes one that does no model work, to time the
    driver alone)."""
    units: list[WorkUnit] = list(work.shards) if isinstance(work, Plan) else list(work)
    todo = _in_order(unfinished(store, units))
    progress = pool.progress if pool is not None else None
    if progress is not None:
        progress.expect(units, todo)
    if not todo:
        return 0
    own = pool is None
    pool = pool if pool is not None else Pool(cfg, store, runner)
    try:
        actors = pool.get()
        stats = stats if stats is not None else RayStats()
        stats.workers = len(actors)
        if progress is not None:
            progress.n_workers = len(actors)
        Driver(cfg, store, run_meta, todo, actors, stats, progress).run()
    finally:
        if own:
            pool.close()
    missing = unfinished(store, todo)
    if missing:
        raise UserError(
            f"{len(missing)} unit(s) ran but are not visible in {store.dir} (e.g. "
            f"{describe(missing[0])}): workers on other machines wrote to their own disks. "
            "Fix: use storage=s3 (or a storage.root on a filesystem every node shares)"
        )
    return len(todo)


def _in_order(units: list[WorkUnit]) -> list[WorkUnit]:
    """Longest first, so the run does not end on one straggler: the noise floor (its forward
    passes in three dtypes), behaviour chunks (generation), then shards by FLOPs."""
    rank = {"noise floor": 0, "behavior": 1}
    return sorted(
        units,
        key=lambda u: (rank.get(stage(u), 2), -u.flops_naive if isinstance(u, Shard) else 0),
    )


@dataclass(frozen=True)
class Call:
    """One call in flight on an actor: a unit to run, or `ready` (unit None) while it loads."""

    actor: int
    unit: WorkUnit | None
    seq: int  # submission order; calls on one actor run in this order


class Driver:
    """Hands units to actors, at most `cluster.shards_per_worker` each, and reacts to answers.

    State: `queue` (units not yet handed out), `pending` (ref -> Call), `free` (unit slots per
    actor; 0 until it answers `ready`), `alive` (actors not dead for good), `failures` (per unit),
    `innocent` (failed calls already blamed on their actor's death), `sent_at` (per ref).
    """

    def __init__(
        self,
        cfg: Config,
        store: Store,
        run_meta: dict[str, Any],
        todo: list[WorkUnit],
        actors: list,
        stats: RayStats,
        progress: Progress | None = None,
    ):
        self.cfg, self.store, self.run_meta, self.actors, self.stats = (
            cfg,
            store,
            run_meta,
            actors,
            stats,
        )
        self.progress = progress
        self.where: dict[int, str] = {}  # actor -> "pid P on HOST, node N" (from `ready`)
        self.down: set[int] = set()  # actors whose death was announced, until ready again
        self.n_todo = len(todo)
        self.per_stage = Counter(stage(u) for u in todo)
        self.queue: deque[WorkUnit] = deque(todo)
        self.failures: Counter[str] = Counter()
        self.pending: dict[Any, Call] = {}
        self.free = [0] * len(actors)
        self.inflight = [0] * len(actors)  # units (not `ready` calls) in flight per actor
        self.alive = set(range(len(actors)))
        self.seq = 0
        self.sent_at: dict[Any, float] = {}
        self.innocent: set[Any] = set()
        self.created = False
        self.first_ready_at: float | None = None
        for i in range(len(actors)):
            self._submit(i, None)

    def run(self) -> None:
        """Until every unit is stored (or a UserError says why it cannot be)."""
        import ray

        desc = " + ".join(self.per_stage)
        with tqdm(total=self.n_todo, unit="unit", desc=desc, file=sys.stderr) as bar:
            bar.set_postfix_str(f"loading {len(self.actors)} workers")
            while (self.queue and not self._stopping()) or any(self.inflight):
                self._dispatch()
                ready_refs, _ = ray.wait(list(self.pending), num_returns=1, timeout=60)
                if not ready_refs:
                    self._say_if_stuck()
                    continue
                self._collect(ready_refs[0], bar)
        self.stats.seconds = time.perf_counter() - (self.first_ready_at or time.perf_counter())
        if self.queue and self.progress is not None:  # stopped at the budget, nothing in flight
            raise self.progress.stop()

    def _stopping(self) -> bool:
        """The budget is spent or projected past (hallu/run/progress.py): dispatch nothing."""
        return self.progress is not None and self.progress.over_budget() is not None

    def _submit(self, i: int, unit: WorkUnit | None) -> None:
        self.seq += 1
        actor = self.actors[i]
        ref = actor.ready.remote() if unit is None else actor.run.remote(unit)
        self.pending[ref] = Call(i, unit, self.seq)
        if unit is not None:
            self.sent_at[ref] = time.perf_counter()
            self.inflight[i] += 1

    def _dispatch(self) -> None:
        if self._stopping():
            return
        for i in sorted(self.alive):
            while self.free[i] > 0 and self.queue:
                self._submit(i, self.queue.popleft())
                self.free[i] -= 1

    def _busy(self, i: int) -> bool:
        return self.inflight[i] > 0

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
        sent = self.sent_at.pop(ref, None)
        if call.unit is not None:
            self.inflight[call.actor] -= 1
        try:
            out = ray.get(ref)  # already finished: this does not block
        except (ActorUnavailableError, ActorDiedError) as err:
            self._on_actor_error(ref, call, err, permanent=isinstance(err, ActorDiedError))
            return
        except RayTaskError as err:  # the unit raised inside the worker
            if call.unit is None:  # ready() itself failed: no worker of this kind can start
                raise UserError(
                    f"worker {call.actor} could not start ({_why(err)}); the results stored so "
                    "far are kept. Fix: rerun with the same run_id once the cause is fixed"
                ) from None
            self.free[call.actor] += 1
            if self.progress is not None:
                self.progress.failed(f"worker {call.actor}", stage(call.unit), _why(err))
            self._count_failure(call.unit, err)
            self.queue.append(call.unit)  # to the back: another worker may succeed
            self.stats.requeued += 1
            return
        if call.unit is None:
            self._on_ready(call.actor, out)
        else:
            self._on_stored(call, out, bar, sent or time.perf_counter())
        busy = sum(1 for j in self.alive if self._busy(j))
        done = ", ".join(f"{k} {self.stats.by_stage[k]}/{n}" for k, n in self.per_stage.items())
        # No forced redraw: tqdm repaints at most every 0.1 s, not once per unit.
        bar.set_postfix_str(f"{done}; workers busy {busy}/{len(self.actors)}", refresh=False)

    def _on_ready(self, i: int, out: dict[str, Any]) -> None:
        """A worker finished loading the model: the first one creates the run."""
        if out["error"]:
            raise UserError(
                f"worker {i} (pid {out['pid']} on {out['host']}) could not load the "
                f"model: {out['error']}"
            )
        if not self.created:
            self.store.create(self.cfg, created_meta(self.run_meta, out))
            self.created, self.first_ready_at = True, time.perf_counter()
        self.free[i] = self.cfg.cluster.shards_per_worker
        node = f", node {out['node']}" if out.get("node") else ""
        self.where[i] = f"pid {out['pid']} on {out['host']}{node}"
        self.down.discard(i)
        if self.progress is not None:
            self.progress.ready(f"worker {i}", out)

    def _on_stored(self, call: Call, out: dict[str, Any], bar: tqdm, sent: float) -> None:
        self.stats.shards_run += 1
        self.stats.by_stage[out["stage"]] += 1
        self.stats.pids[out["stage"]].add(out["pid"])
        self.stats.model_loads[out["pid"]] = out["model_loads"]
        self.stats.worker_seconds += out["seconds"]
        self.stats.round_trips.append(time.perf_counter() - sent)
        self.free[call.actor] += 1
        bar.update(1)
        if self.progress is not None:
            cells = call.unit.n_cells if isinstance(call.unit, Shard) else 0
            self.progress.stored(f"worker {call.actor}", out["stage"], out, cells)

    def _on_actor_error(self, ref: Any, call: Call, err: Exception, permanent: bool) -> None:
        """The actor's process died (`permanent`: its restarts are used up; else restarting)."""
        i, unit = call.actor, call.unit
        if unit is not None:
            # Calls run in order: only the oldest in-flight unit was running when the
            # process died; the ones queued behind it are re-queued without blame.
            same = {r: c for r, c in self.pending.items() if c.actor == i and c.unit}
            if ref not in self.innocent:
                oldest = min([call, *same.values()], key=lambda c: c.seq).unit
                assert oldest is not None
                self._count_failure(oldest, err)
                self.innocent.update(same)
            self.queue.appendleft(unit)
            self.stats.requeued += 1
        if permanent and getattr(err, "actor_init_failed", False):
            raise UserError(
                f"worker {i} could not start ({_why(err)}); check that every node "
                "has the project and its packages installed (see Dockerfile)"
            ) from None
        self._actor_lost(i, err, permanent)

    def _actor_lost(self, i: int, err: Exception, permanent: bool) -> None:
        if i not in self.down:  # once per death, though each of its calls fails
            self.down.add(i)
            back = "gone for good" if permanent else "restarting"
            print(
                f"hallu: worker {i} ({self.where.get(i, 'not ready yet')}) lost, {back}: "
                f"{_why(err)}; its units are re-queued",
                file=sys.stderr,
            )
            if self.progress is not None:
                self.progress.lost(f"worker {i}", f"worker {i} lost: {_why(err)}")
        self.stats.worker_failures += 1
        self.free[i] = 0
        if permanent:
            self.alive.discard(i)
        elif not any(c.actor == i and c.unit is None for c in self.pending.values()):
            self._submit(i, None)  # back to work once the model is reloaded
        if not self.alive:
            raise UserError(
                f"all {len(self.actors)} workers died (last: {_why(err)}); {len(self.queue)} "
                f"unit(s) not run. Raise cluster.max_worker_restarts, or rerun with "
                f"run_id={self.store.run_id} to finish (stored results are kept)"
            )

    def _count_failure(self, unit: WorkUnit, err: Exception) -> None:
        limit = self.cfg.cluster.max_shard_failures
        key = f"{stage(unit)}/{unit_id(unit)}"
        self.failures[key] += 1
        if self.failures[key] >= limit:
            raise UserError(
                f"{describe(unit)} failed {self.failures[key]} times (cluster.max_shard_failures="
                f"{limit}); last error: {_why(err)}. Stored results are kept: fix the cause and "
                f"rerun with run_id={self.store.run_id}"
            )


def _why(err: Exception) -> str:
    """One line saying what went wrong inside Ray, without the remote traceback."""
    cause = getattr(err, "cause", None)
    if isinstance(cause, BaseException):
        return f"{type(cause).__name__}: {cause}"
    lines = [ln.strip() for ln in str(err).strip().splitlines() if ln.strip()]
    return lines[-1] if lines else type(err).__name__
