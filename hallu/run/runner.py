"""The executor's runner: one model replica that runs every kind of unit and stores each result.

`ShardRunner` loads the model once (through `hallu.run.worker.Worker`) and then runs whatever it
is handed (hallu/run/units.py): patching and control shards, behaviour chunks, the noise floor,
mechanism units. Behaviour, noise floor and mechanism share the patching replica instead of
loading their own. Each result is written to the store by the runner itself, so its caller only
sees a small manifest. cluster=local runs one in the launching process (hallu/run/local.py); a
Ray actor wraps the same class and adds nothing but transport (hallu/run/ray.py). It imports
nothing from Ray.
"""

from __future__ import annotations

import os
import resource
import socket
import sys
import time
from typing import Any

from hallu.config import Config
from hallu.engine.models import LOADS
from hallu.run.units import NoiseFloor, WorkUnit, rows_of, stage, store_result
from hallu.run.worker import Worker
from hallu.store.base import Store
from hallu.store.lease import LeaseLost, pid_alive


class ShardRunner:
    """One model replica; `run(unit)` computes a unit of any kind and stores it."""

    def __init__(self, cfg: Config, store: Store):
        self.store = store
        self.error: str | None = None
        self.failure: Exception | None = None  # the load's exception, re-raised in-process
        self._behavior: Any = None  # built on the first behaviour chunk, on the same model
        self._mechanism: Any = None
        started = time.perf_counter()
        try:
            self.worker: Worker | None = Worker(cfg, store.run_id)
        except Exception as err:  # reported by ready(), so the driver stops with this message
            self.worker, self.error = None, f"{type(err).__name__}: {err}"
            self.failure = err
        self.load_s = time.perf_counter() - started

    def ready(self) -> dict[str, Any]:
        w = self.worker
        return {
            "error": self.error,
            "revision": w.revision if w else None,
            "dtype": w.dtype if w else None,
            "pid": os.getpid(),
            "host": socket.gethostname(),
            "node": _ray_node(),
            "load_s": self.load_s,
        }

    def run(self, unit: WorkUnit, progress: Any = None) -> dict[str, Any]:
        """Compute `unit`, store it; a manifest. `progress`: a tqdm bar (in-process only)."""
        start = time.perf_counter()
        result = self.compute(unit, progress)
        try:
            existed = store_result(self.store, unit, result)  # LeaseLost once the driver is gone
        except LeaseLost:
            lease = self.store.lease
            if lease.owner_host == socket.gethostname() and not pid_alive(lease.owner_pid or -1):
                os._exit(1)  # the driver is gone: nobody waits for this answer
            raise
        return {
            "rows": rows_of(result),
            "seconds": time.perf_counter() - start,
            "existed": existed,
            "pid": os.getpid(),
            "stage": stage(unit),
            "model_loads": sum(LOADS.values()),  # this process's, since it started
            "peak_bytes": _peak_bytes(),
        }

    def compute(self, unit: WorkUnit, progress: Any = None) -> Any:
        """The unit's result: a table (shard, chunk, mechanism unit) or the noise floor's dict."""
        from hallu.behavior.schema import Chunk
        from hallu.run.plan import Shard

        w = self.worker
        assert w is not None, self.error
        if isinstance(unit, Shard):
            return w.run_shard(unit, progress=progress)
        if isinstance(unit, Chunk):
            if self._behavior is None:
                from hallu.behavior.experiment import BehaviorWorker

                self._behavior = BehaviorWorker(w.prep, w.run_id, (w.model, w.revision))
            return self._behavior.run_chunk(unit, progress)
        if isinstance(unit, NoiseFloor):
            from hallu.run.noise import ReplicaChanged, measure

            try:
                return measure(w.prep.cfg, unit.max_pairs, prep=w.prep, loaded=w.model)
            except ReplicaChanged as err:  # its weights are not the model's: no unit runs on it
                self.worker, self.error = None, str(err)
                raise
        if self._mechanism is None:
            from hallu.mechanism.worker import MechanismWorker

            self._mechanism = MechanismWorker(w.prep, w.run_id, (w.model, w.revision))
        return self._mechanism.run(unit)


def _ray_node() -> str | None:
    """The Ray node this process runs on (inside an actor), else None; Ray is not imported."""
    ray = sys.modules.get("ray")
    if ray is None or not ray.is_initialized():
        return None
    return ray.get_runtime_context().get_node_id()


def _peak_bytes() -> int:
    """This process's peak memory: the GPU's allocations when on CUDA, else resident (RSS)."""
    import torch

    if torch.cuda.is_available() and torch.cuda.is_initialized():
        return int(torch.cuda.max_memory_allocated())
    return resource.getrusage(resource.RUSAGE_SELF).ru_maxrss * 1024  # Linux: KiB
