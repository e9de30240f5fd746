"""Shards per second the Ray driver dispatches and stores, with workers that do no model work.

    PYTHONPATH=$PWD python benchmarks/driver_throughput.py [--shards N] [--rows R]
        [--workers W] [--stores local,moto]

The production dispatcher (`hallu.run.ray.run_ray`: its Driver, `ray.wait` loop, manifests,
fault bookkeeping) and the production actor body (`hallu.run.runner.ShardRunner.run`: the store
write with its lease check, Parquet encoding with page checksums, done marker) are used as they
are; only `compute` is replaced, by a table of R synthetic rows in the results schema built once
per actor (default 1600 rows: 4 pairs x 40 layers x 10 positions, the size of a 13b shard at
`positions=last:10`). So what is timed is everything a real run does per shard except the model.

Stores: a local run directory (a temp dir) and moto's S3 server (`moto_server`, started as its
own process on 127.0.0.1 so that it does not share the driver's interpreter). Throughput is
shards / seconds from the first worker ready to the last shard stored (`RayStats.seconds`), so
actor start-up is not counted. Targets (issue 13): >= 100 shards/s local, >= 20 shards/s moto.
Prints one markdown row per store and the load average before and after, for docs/benchmarks.md.
"""

from __future__ import annotations

import argparse
import contextlib
import os
import platform
import socket
import subprocess
import sys
import tempfile
import time
from collections.abc import Iterator
from typing import Any

import numpy as np
import pyarrow as pa

from hallu.config import compose
from hallu.run.plan import Shard
from hallu.run.ray import RayStats, run_ray
from hallu.run.runner import ShardRunner
from hallu.store import integrity, schema
from hallu.store.base import Store

ENV = {
    "AWS_ACCESS_KEY_ID": "bench",
    "AWS_SECRET_ACCESS_KEY": "bench",
    "AWS_DEFAULT_REGION": "us-east-1",
    "AWS_EC2_METADATA_DISABLED": "true",
    "RAY_USAGE_STATS_ENABLED": "0",
}
BUCKET = "hallu-bench"


def synthetic_table(n_rows: int, seed: int = 0) -> pa.Table:
    """n_rows result rows with realistic values (tokens, floats, ids) in the results schema."""
    rng = np.random.default_rng(seed)
    cols: dict[str, list] = {}
    for f in schema.SCHEMA:
        if pa.types.is_string(f.type):
            vals: list = [f"{f.name}_{int(i)}" for i in rng.integers(0, 40, n_rows)]
        elif pa.types.is_floating(f.type):
            vals = rng.standard_normal(n_rows).astype(np.float32).tolist()
        elif pa.types.is_boolean(f.type):
            vals = (rng.random(n_rows) < 0.05).tolist()
        else:
            vals = rng.integers(0, 40, n_rows).tolist()
        cols[f.name] = vals
    cols["control"] = [None] * n_rows
    return schema.to_table(cols)


class NoModelRunner(ShardRunner):
    """ShardRunner whose `compute` returns a synthetic table: no model, no prepare()."""

    ROWS = 1600

    def __init__(self, cfg, store: Store):  # noqa: D107 (the base loads a model: not here)
        self.store, self.error, self.worker, self.failure = store, None, None, None
        self.load_s = 0.0  # nothing to load
        self.table = synthetic_table(self.ROWS)

    def compute(self, unit: Shard, progress: Any = None) -> pa.Table:
        return self.table


def shards(n: int) -> list[Shard]:
    return [
        Shard(f"bench{i:06d}", "restore_confidence", (f"p{i}",), tuple(range(40)), 400, 1.0)
        for i in range(n)
    ]


@contextlib.contextmanager
def moto_server() -> Iterator[str]:
    """moto's S3 server as a separate process on a free loopback port; stopped by its pid."""
    import boto3

    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        port = s.getsockname()[1]
    exe = os.path.join(os.path.dirname(sys.executable), "moto_server")
    proc = subprocess.Popen(
        [exe, "-H", "127.0.0.1", "-p", str(port)],
        stdout=subprocess.DEVNULL,
        stderr=subprocess.DEVNULL,
    )
    url = f"http://127.0.0.1:{port}"
    try:
        client = boto3.client("s3", endpoint_url=url, region_name="us-east-1")
        for _ in range(100):
            with contextlib.suppress(Exception):
                client.create_bucket(Bucket=BUCKET)
                break
            time.sleep(0.1)
        yield url
    finally:
        proc.terminate()
        proc.wait(timeout=10)


def measure(
    overrides: list[str], n: int, workers: int, run_id: str
) -> tuple[float, float, RayStats]:
    """(shards/s, driver CPU seconds per shard, stats) of `n` synthetic shards through
    run_ray into a new store."""
    from hallu.store.factory import store_for

    cfg = compose(
        [
            "model=tiny",
            "cluster=ray_local",
            f"cluster.num_workers={workers}",
            f"cluster.resources.num_cpus={2 / workers}",
            *overrides,
        ]
    )
    store = store_for(cfg.storage, run_id)
    store.lease.acquire(run_id)  # as a launch does: every worker write checks it
    stats = RayStats()
    cpu = time.process_time()
    try:
        run_ray(cfg, shards(n), store, {}, stats, runner=NoModelRunner)
    finally:
        store.lease.release()
    cpu = time.process_time() - cpu  # the driver's own CPU, start-up and shutdown included
    assert len(store.done_shards()) == n, "every shard stored"
    return n / stats.seconds, cpu / n, stats


def main(argv: list[str]) -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--shards", type=int, default=1000)
    ap.add_argument("--rows", type=int, default=NoModelRunner.ROWS)
    ap.add_argument("--workers", type=int, default=4)
    ap.add_argument("--stores", default="local,moto")
    args = ap.parse_args(argv)
    NoModelRunner.ROWS = args.rows  # the class travels to the actors by value, with this
    os.environ.update(ENV)
    print(f"load average before: {' '.join(f'{x:.2f}' for x in os.getloadavg())}")
    size = len(integrity.encode(synthetic_table(args.rows)))
    rows = []
    with tempfile.TemporaryDirectory() as tmp:
        for kind in args.stores.split(","):
            with contextlib.ExitStack() as stack:
                if kind == "moto":
                    url = stack.enter_context(moto_server())
                    over = ["storage=s3", f"storage.bucket={BUCKET}", "storage.prefix=bench"]
                    over += [f"storage.endpoint_url={url}", "storage.region=us-east-1"]
                else:
                    over = [f"storage.root={tmp}"]
                rate, cpu, st = measure(over, args.shards, args.workers, f"bench-{kind}")
                trip = 1e3 * float(np.median(st.round_trips))
                work = 1e3 * st.worker_seconds / st.shards_run
                rows.append((kind, args.shards, rate, st.seconds, trip, work, 1e3 * cpu))
    print(f"load average after: {' '.join(f'{x:.2f}' for x in os.getloadavg())}")
    print(
        f"machine: {platform.node()}, {os.cpu_count()} CPUs; {args.workers} no-model workers, "
        f"{args.rows} rows ({size / 1024:.0f} KiB Parquet) per shard"
    )
    print(
        "| store | shards | shards/s | seconds | median round trip (ms) | in worker run (ms) "
        "| driver CPU per shard (ms) |"
    )
    print("|---|---|---|---|---|---|---|")
    for kind, n, rate, secs, trip, work, cpu in rows:
        print(f"| {kind} | {n} | {rate:.1f} | {secs:.2f} | {trip:.1f} | {work:.1f} | {cpu:.2f} |")


if __name__ == "__main__":
    main(sys.argv[1:])
