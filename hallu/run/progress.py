"""The driver's view of a running study: status.json every few seconds, the budget, calibration.

`Progress` is told what the executor sees (units expected, workers ready, units stored or
failed, workers lost) and keeps status.json (hallu/store/status_file.py) up to date from a
background thread, so `hallu status` needs only the store. Its numbers:

- billed hours: wall time since the pool started x workers x GPUs per worker (a CPU-only worker
  bills as one), added to what earlier sessions of the run billed (their status.json);
- cost: billed hours x the price per GPU-hour (cluster.price_per_gpu_hour, else cluster.gpu's
  list price; none without either);
- ETA and projection: units still to run x the wall time per unit this session (since the first
  worker was ready), so a unit of any stage counts alike, and mechanism units that a stage plans
  only when it starts are not in it yet.

Budget (cluster.budget_usd, cluster.max_hours): once a warm-up of `warmup()` units has been
stored, a projection or spend past either limit makes `over_budget` return why; the executor
then dispatches nothing more, lets in-flight units finish, and raises `BudgetStop`. At the end,
what was measured (load time, cells/s, peak memory per worker, seconds per unit of each stage)
goes to the calibration file for this card and model (hallu/run/gpus.py), which `mode=plan`
reads.
"""

from __future__ import annotations

import json
import math
import shlex
import sys
import threading
import time
from collections import defaultdict
from typing import Any

from hallu.config import Config
from hallu.errors import UserError
from hallu.run.gpus import GPUS, calibrated_model, card, write_run_calibration
from hallu.run.units import WorkUnit, stage, unit_id
from hallu.store import status_file
from hallu.store.base import Store

WARMUP_UNITS = 2  # at least this many units stored before a projection counts
WARMUP_FRACTION = 0.05  # ... and this share of the session's units


class BudgetStop(UserError):
    """The run stopped at its budget; what is stored is kept and the message says how to resume."""


def price(cfg: Config) -> float | None:
    """USD per GPU-hour: cluster.price_per_gpu_hour, else cluster.gpu's list price, else None."""
    c = cfg.cluster
    if c.price_per_gpu_hour is not None:
        return c.price_per_gpu_hour
    return GPUS[c.gpu].price_per_hour if c.gpu in GPUS else None


def check_budget(cfg: Config) -> None:
    """A budget in dollars needs a price; UserError (before anything runs) if there is none."""
    if cfg.cluster.budget_usd is not None and price(cfg) is None:
        raise UserError(
            f"cluster.budget_usd={cfg.cluster.budget_usd:g} has no price to count against. Fix: "
            "add cluster.gpu=a100_40gb|a100_80gb|h100|h200|l40s or cluster.price_per_gpu_hour=USD"
        )


class Progress:
    """What the driver saw, for status.json, the budget and the calibration file."""

    def __init__(self, cfg: Config, store: Store, argv: list[str] | None = None,
                 plan: dict[str, float] | None = None):  # fmt: skip
        self.cfg, self.store, self.argv, self.plan = cfg, store, list(argv or []), plan
        self.lock = threading.Lock()
        self.started = time.time()  # billing starts when the pool does
        self.first_ready: float | None = None
        self.n_workers = 1 if cfg.cluster.kind == "local" else cfg.cluster.num_workers
        self.stages: dict[str, dict[str, float]] = defaultdict(
            lambda: dict.fromkeys(("total", "before", "done", "failed", "seconds", "cells"), 0)
        )
        self.seen: set[str] = set()
        self.workers: dict[str, dict[str, Any]] = {}
        self.load_s: list[float] = []
        self.last_error: str | None = None
        self.state, self.stop_reason = "running", None
        old = status_file.read(store)  # an earlier session of this run: its bill carries over
        self.hours_before = float(old.get("billed_hours", 0.0)) if old else 0.0
        self.created = store.read_meta() is not None  # nothing is written before run.json
        self._wake = threading.Event()  # set once, by close()
        self._news = threading.Event()  # a unit stored: write soon, not EVERY_S later
        self._thread: threading.Thread | None = None

    # -- what the executor reports ---------------------------------------------------------
    def expect(self, units: list[WorkUnit], todo: list[WorkUnit]) -> None:
        """`units` are the run's (of one executor call); those not in `todo` are stored."""
        waiting = {f"{stage(u)}/{unit_id(u)}" for u in todo}
        with self.lock:
            for u in units:
                key = f"{stage(u)}/{unit_id(u)}"
                if key not in self.seen:
                    self.seen.add(key)
                    self.stages[stage(u)]["total"] += 1
                    self.stages[stage(u)]["before"] += key not in waiting

    def ready(self, worker: str, out: dict[str, Any]) -> None:
        """A worker loaded the model (and, if it is the first, run.json exists now)."""
        now = time.time()
        with self.lock:
            self.created = True
            self.first_ready = self.first_ready or now
            self.load_s.append(float(out.get("load_s") or 0.0))
            w = self.workers.setdefault(worker, {"units": 0, "peak_bytes": 0})
            w.update(host=out.get("host"), pid=out.get("pid"), node=out.get("node"),
                     state="ready", heartbeat=now)  # fmt: skip
        self._start()

    def stored(self, worker: str, name: str, out: dict[str, Any], cells: int = 0) -> None:
        with self.lock:
            s = self.stages[name]
            s["done"] += 1
            s["seconds"] += float(out.get("seconds", 0.0))
            s["cells"] += cells
            w = self.workers.setdefault(worker, {"units": 0, "peak_bytes": 0})
            w["units"] += 1
            w["peak_bytes"] = max(w["peak_bytes"], int(out.get("peak_bytes") or 0))
            w.update(state="busy", heartbeat=time.time())
        self._news.set()

    def failed(self, worker: str, name: str | None, why: str) -> None:
        with self.lock:
            if name is not None:
                self.stages[name]["failed"] += 1
            self.last_error = why[: status_file.MAX_ERROR]
            if worker in self.workers:
                self.workers[worker]["heartbeat"] = time.time()

    def lost(self, worker: str, why: str) -> None:
        with self.lock:
            self.last_error = why[: status_file.MAX_ERROR]
            if worker in self.workers:
                self.workers[worker]["state"] = "lost"

    # -- numbers ---------------------------------------------------------------------------
    def _numbers(self, now: float) -> dict[str, Any]:
        c = self.cfg.cluster
        per_hour = self.n_workers * max(c.resources.num_gpus, 1)  # GPU-hours per wall hour
        hours = self.hours_before + (now - self.started) / 3600 * per_hour
        done = sum(s["done"] for s in self.stages.values())
        left = sum(s["total"] - s["before"] - s["done"] for s in self.stages.values())
        out: dict[str, Any] = {"billed_hours": hours, "units_left": left, "units_done": done}
        p = price(self.cfg)
        out["spent_usd"] = hours * p if p is not None else None
        if done and self.first_ready is not None:
            per_unit = (now - self.first_ready) / done  # wall seconds per unit, all workers
            out["units_per_s"] = 1 / per_unit if per_unit > 0 else None
            out["eta_s"] = left * per_unit
            out["projected_hours"] = hours + left * per_unit / 3600 * per_hour
            out["projected_usd"] = out["projected_hours"] * p if p is not None else None
        return out

    def warmup(self) -> int:
        session = sum(s["total"] - s["before"] for s in self.stages.values())
        return max(WARMUP_UNITS, math.ceil(WARMUP_FRACTION * session))

    def over_budget(self) -> str | None:
        """Why the run must stop dispatching (spend or projection past a limit), else None."""
        c = self.cfg.cluster
        if self.stop_reason or (c.budget_usd is None and c.max_hours is None):
            return self.stop_reason
        with self.lock:
            n = self._numbers(time.time())
            if n["units_done"] < self.warmup() or n["units_left"] == 0:
                return None
        wall = n["billed_hours"] / (self.n_workers * max(c.resources.num_gpus, 1))
        projected_wall = n["projected_hours"] / (self.n_workers * max(c.resources.num_gpus, 1))
        if c.budget_usd is not None and n["projected_usd"] > c.budget_usd:
            self.stop_reason = (
                f"cluster.budget_usd={c.budget_usd:g}: spent ${n['spent_usd']:.4g} so far, "
                f"projected ${n['projected_usd']:.4g} for the {n['units_left']} unit(s) left"
            )
            self._suggest = f"cluster.budget_usd={_round_up(1.25 * n['projected_usd'])}"
        elif c.max_hours is not None and projected_wall > c.max_hours:
            self.stop_reason = (
                f"cluster.max_hours={c.max_hours:g}: {wall:.3g} h so far, projected "
                f"{projected_wall:.3g} h for the {n['units_left']} unit(s) left"
            )
            self._suggest = f"cluster.max_hours={_round_up(1.25 * projected_wall)}"
        return self.stop_reason

    def stop(self) -> BudgetStop:
        """The exception to raise once in-flight units have finished."""
        self.state = "stopped"
        keep = ("run_id=", "cluster.budget_usd=", "cluster.max_hours=")
        argv = [a for a in self.argv if not a.startswith(keep)]
        argv += [f"run_id={self.store.run_id}", self._suggest]
        return BudgetStop(
            f"{self.stop_reason}; stopped dispatching, in-flight units finished, every stored "
            "result is kept. Fix: resume with a higher budget: "
            f"python -m hallu.launch {shlex.join(argv)}"
        )

    # -- status.json -----------------------------------------------------------------------
    def snapshot(self) -> dict[str, Any]:
        now = time.time()
        with self.lock:
            workers = sorted(self.workers.items())
            doc = {
                "run_id": self.store.run_id,
                "state": self.state,
                "stop_reason": self.stop_reason,
                "started_at": self.started,
                "updated_at": now,
                "cluster": self.cfg.cluster.kind,
                "workers_planned": self.n_workers,
                "gpus_per_worker": self.cfg.cluster.resources.num_gpus,
                "price_per_gpu_hour": price(self.cfg),
                "budget_usd": self.cfg.cluster.budget_usd,
                "max_hours": self.cfg.cluster.max_hours,
                "plan": self.plan,
                "stages": {
                    k: {**v, "seconds_per_unit": v["seconds"] / v["done"] if v["done"] else None}
                    for k, v in self.stages.items()
                },  # fmt: skip
                "workers": [{"name": k, **v} for k, v in workers[: status_file.MAX_WORKERS]],
                "workers_not_listed": max(0, len(workers) - status_file.MAX_WORKERS),
                "last_error": self.last_error,
                **self._numbers(now),
            }
        return doc

    def write(self) -> None:
        if self.created:
            self.store.write_file(status_file.FILE, json.dumps(self.snapshot()).encode())

    def _start(self) -> None:
        if self._thread is None:
            self._thread = threading.Thread(target=self._loop, name="hallu-status", daemon=True)
            self._thread.start()

    def _loop(self) -> None:
        """Write every EVERY_S, and within NEWS_S of a stored unit (at most once per NEWS_S, so
        a fast stage costs few store requests)."""
        while not self._wake.is_set():
            news = self._news.wait(status_file.EVERY_S)
            self._news.clear()
            if self._wake.wait(status_file.NEWS_S if news else 0):
                return
            try:
                self.write()
            except Exception as err:  # a status write never stops the run; say it once
                self.last_error = f"status.json not written: {type(err).__name__}: {err}"

    def close(self, state: str) -> None:
        """The last status (finished, stopped or failed) and the measured rates, once."""
        self._wake.set()
        if self._thread is not None:
            self._thread.join()
        if self.state == "running":
            self.state = state
        with self.lock:
            for w in self.workers.values():
                w["state"] = "lost" if w.get("state") == "lost" else "stopped"
        try:  # called while the run ends, maybe on an error: never mask it, never fail a run
            self.write()
            if self.created and state == "finished":
                self.calibrate()
        except Exception as err:
            print(f"hallu: warning: status or calibration not written ({type(err).__name__}: "
                  f"{err})", file=sys.stderr)  # fmt: skip

    def calibrate(self) -> None:
        """Record this session's rates for mode=plan (hallu/run/gpus.py), if it ran anything."""
        with self.lock:
            ran = {k: v for k, v in self.stages.items() if v["done"]}
            if not ran:
                return
            entry = {
                "load_s": max(self.load_s, default=0.0),
                "peak_bytes_per_worker": max(
                    (w["peak_bytes"] for w in self.workers.values()), default=0
                ),
                "seconds_per_unit": {k: v["seconds"] / v["done"] for k, v in ran.items()},
                "stage_seconds": {k: v["seconds"] for k, v in ran.items()},
            }
            cells = sum(v["cells"] for v in ran.values())
            secs = sum(v["seconds"] for k, v in ran.items() if v["cells"])
            if cells and secs > 0:
                entry["cells_per_s"] = cells / secs  # one worker's rate, compute and upload
        write_run_calibration(card(self.cfg), calibrated_model(self.cfg), entry)


def _round_up(x: float) -> str:
    """A limit to type: two significant digits, rounded up."""
    if x <= 0:
        return "0.01"
    step = 10 ** (math.floor(math.log10(x)) - 1)
    return f"{math.ceil(x / step) * step:.10g}"
