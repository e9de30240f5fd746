"""Throughput of the Ray executor with 1 and 2 workers, and the driver's overhead per shard.

    PYTHONPATH=$PWD python benchmarks/ray_executor.py [extra overrides ...]

Runs the tiny model's full sweep (default: 5664 cells in 24 shards) in process, then on a local
Ray (`num_cpus=2`) with 1 and 2 worker actors, each into a fresh temp run directory. Prints a
markdown table for docs/benchmarks.md. Times are wall-clock on a shared machine: rerun to see
the noise.
"""

from __future__ import annotations

import platform
import sys
import tempfile
import time

import ray
import torch

from hallu.config import compose
from hallu.run.local import run_local
from hallu.run.prepare import prepare
from hallu.run.ray import RayStats, run_ray
from hallu.store.local import LocalStore


def main(extra: list[str]) -> None:
    base = ["+sweep=full", *extra]
    cfg = compose(base)
    plan = prepare(cfg).plan()
    rows = []
    with tempfile.TemporaryDirectory() as tmp:
        torch.set_num_threads(1)  # what a 1-CPU actor gets
        t = time.perf_counter()
        run_local(cfg, plan, LocalStore(tmp, "local"), {})
        rows.append(("in-process (1 thread)", 1, 0, time.perf_counter() - t, None, None))
        ray.init(address="local", num_cpus=2, include_dashboard=False, logging_level="ERROR")
        for workers, in_flight in ((1, 1), (1, 2), (2, 2)):
            c = compose(
                [
                    *base,
                    "cluster=ray_local",
                    f"cluster.num_workers={workers}",
                    "cluster.resources.num_cpus=1",
                    f"cluster.shards_per_worker={in_flight}",
                ]
            )
            stats = RayStats()
            t = time.perf_counter()
            run_ray(c, plan, LocalStore(tmp, f"ray{workers}{in_flight}"), {}, stats)
            total = time.perf_counter() - t
            n = stats.shards_run
            # Per shard: driver-seen round trip minus time inside the worker's run().
            overhead = (sum(stats.round_trips) - stats.worker_seconds) / n
            idle = (stats.seconds * workers - stats.worker_seconds) / n
            rows.append(
                (
                    f"Ray, {workers} worker(s), {in_flight} in flight",
                    workers,
                    in_flight,
                    stats.seconds,
                    total,
                    (overhead, idle),
                )
            )
        ray.shutdown()
    print(
        f"machine: {platform.node()}, {platform.processor() or platform.machine()}, "
        f"torch {torch.__version__}, ray {ray.__version__}; plan: {plan.describe()}"
    )
    print()
    print(
        "| executor | cells/s (work phase) | work phase s | total s incl. startup | "
        "round trip - worker time per shard (ms) | worker idle per shard (ms) |"
    )
    print("|---|---|---|---|---|---|")
    for name, _, _, work, total, ov in rows:
        tot = f"{total:.1f}" if total else f"{work:.1f}"
        o = f"{ov[0] * 1e3:.1f}" if ov else "-"
        i = f"{ov[1] * 1e3:.1f}" if ov else "-"
        print(f"| {name} | {plan.n_cells / work:.0f} | {work:.2f} | {tot} | {o} | {i} |")


if __name__ == "__main__":
    main(sys.argv[1:])
