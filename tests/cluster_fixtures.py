"""Real services on 127.0.0.1 for the cluster and storage tests: moto's S3 server and Ray heads.

Nothing here talks to any other host: fake AWS credentials (so boto3 never asks an instance
metadata service), usage stats off, Ray clusters started with their own temp dir so that no
other process on this machine finds and joins them. Processes are stopped by the ids started.
"""

from __future__ import annotations

import contextlib
import os
import shutil
import signal
import socket
import subprocess
import sys
import tempfile
import time
import uuid
from collections.abc import Iterator
from dataclasses import dataclass

import boto3

from hallu.config import Config
from hallu.run.watchdog import below

from .conftest import tiny_config

TEST_ENV = {
    "AWS_ACCESS_KEY_ID": "hallu-test-key",
    "AWS_SECRET_ACCESS_KEY": "hallu-test-secret",
    "AWS_DEFAULT_REGION": "us-east-1",
    "AWS_EC2_METADATA_DISABLED": "true",
    "RAY_USAGE_STATS_ENABLED": "0",
}
BUCKET = "hallu-test"


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


@contextlib.contextmanager
def service_env() -> Iterator[None]:
    """Set TEST_ENV for this process (and the Ray workers and subprocesses it starts)."""
    old = {k: os.environ.get(k) for k in TEST_ENV}
    os.environ.update(TEST_ENV)
    try:
        yield
    finally:
        for k, v in old.items():
            if v is None:
                os.environ.pop(k, None)
            else:
                os.environ[k] = v


@dataclass
class Moto:
    url: str
    bucket: str = BUCKET  # the `moto` fixture gives each test a bucket of its own

    def client(self):
        return boto3.client("s3", endpoint_url=self.url, region_name="us-east-1")

    def with_new_bucket(self) -> Moto:
        """The same server with a new, empty bucket of a unique name."""
        bucket = f"{BUCKET}-{uuid.uuid4().hex[:12]}"
        self.client().create_bucket(Bucket=bucket)
        return Moto(self.url, bucket)

    def keys(self, prefix: str = "") -> list[str]:
        pages = (
            self.client()
            .get_paginator("list_objects_v2")
            .paginate(Bucket=self.bucket, Prefix=prefix)
        )
        return sorted(o["Key"] for p in pages for o in p.get("Contents", []))

    def overrides(self, prefix: str) -> list[str]:
        return [
            "storage=s3",
            f"storage.bucket={self.bucket}",
            f"storage.prefix={prefix}",
            f"storage.endpoint_url={self.url}",
            "storage.region=us-east-1",
        ]


@contextlib.contextmanager
def moto_server() -> Iterator[Moto]:
    """moto's S3 server mode (a real HTTP S3 API) on 127.0.0.1, with the test bucket."""
    from moto.server import ThreadedMotoServer

    port = free_port()
    server = ThreadedMotoServer(ip_address="127.0.0.1", port=port, verbose=False)
    server.start()
    try:
        moto = Moto(f"http://127.0.0.1:{port}")
        moto.client().create_bucket(Bucket=BUCKET)
        yield moto
    finally:
        server.stop()


@dataclass
class RayHead:
    gcs_address: str
    dashboard_url: str
    token: str  # the head runs with token auth on, as infra/ sets it up

    def client_env(self, with_token: bool = True) -> dict[str, str]:
        """This process's environment, with or without the head's token (never ~/.ray's)."""
        env = {k: v for k, v in os.environ.items() if not k.startswith("RAY_AUTH")}
        # A token file in ~/.ray (written by any earlier ray.init) must not stand in for ours.
        env["RAY_AUTH_TOKEN_PATH"] = os.path.join(tempfile.gettempdir(), "hallu-no-ray-token")
        if with_token:
            env.update(RAY_AUTH_MODE="token", RAY_AUTH_TOKEN=self.token)
        return env


@contextlib.contextmanager
def ray_head(num_cpus: int = 2, token: bool = True, dashboard: bool = True) -> Iterator[RayHead]:
    """`ray start --head --block` on loopback in its own session; stopped by its process group.

    token: token auth on, set explicitly (Ray 2.5x turns it on by itself when a token file exists
    in ~/.ray, so a head without it may still ask for one); dashboard: the job server (for the
    job tests)."""
    port, dash = free_port(), free_port()
    temp = tempfile.mkdtemp(prefix="hallu-ray-", dir="/tmp")  # short: Ray's socket paths must fit
    cmd = [
        sys.executable,
        "-m",
        "ray.scripts.scripts",
        "start",
        "--head",
        "--block",
        f"--port={port}",
        "--node-ip-address=127.0.0.1",
        f"--include-dashboard={'true' if dashboard else 'false'}",
        "--dashboard-host=127.0.0.1",
        f"--dashboard-port={dash}",
        # ports that default to fixed numbers, so that parallel test sessions do not collide
        f"--ray-client-server-port={free_port()}",
        f"--dashboard-agent-listen-port={free_port()}",
        f"--metrics-export-port={free_port()}",
        f"--num-cpus={num_cpus}",
        "--num-gpus=0",
        f"--temp-dir={temp}",
        "--disable-usage-stats",
    ]
    log = open(os.path.join(temp, "head.log"), "w")  # noqa: SIM115
    # Token auth set explicitly: Ray 2.5x turns it on only when a token file happens to exist.
    secret = uuid.uuid4().hex if token else ""
    env = {**os.environ, "PYTHONUNBUFFERED": "1"}  # its "Ray runtime started" reaches the log
    if token:
        env.update(RAY_AUTH_MODE="token", RAY_AUTH_TOKEN=secret)
    proc = subprocess.Popen(
        cmd, stdout=log, stderr=subprocess.STDOUT, start_new_session=True, env=env
    )
    url = f"http://127.0.0.1:{dash}"
    try:
        deadline = time.monotonic() + 120
        while not (_job_server_up(url) if dashboard else _head_started(log.name)):
            if proc.poll() is not None or time.monotonic() > deadline:
                log.flush()
                with open(log.name) as f:
                    raise RuntimeError(f"ray head did not start:\n{f.read()[-3000:]}")
            time.sleep(0.5)
        yield RayHead(f"127.0.0.1:{port}", url, secret)
    finally:
        _stop_group(proc)
        log.close()
        shutil.rmtree(temp, ignore_errors=True)


def _head_started(log: str) -> bool:
    """True once `ray start --block` has said that the head's processes are up."""
    with open(log) as f:
        return "Ray runtime started" in f.read()


def _stop_group(proc: subprocess.Popen) -> None:
    """Stop the head we started: its process group, then any of its descendants left over."""
    started = descendants(proc.pid)
    with contextlib.suppress(ProcessLookupError):
        os.killpg(proc.pid, signal.SIGTERM)
    try:
        proc.wait(timeout=1)  # a test cluster holds nothing worth a slow graceful stop
    except subprocess.TimeoutExpired:
        pass
    with contextlib.suppress(ProcessLookupError):
        os.killpg(proc.pid, signal.SIGKILL)
    proc.wait()
    for pid in started:
        with contextlib.suppress(ProcessLookupError, PermissionError):
            os.kill(pid, signal.SIGKILL)


def _job_server_up(url: str) -> bool:
    """True once the job server answers HTTP (401 counts: it wants Ray's auth token)."""
    import urllib.error
    import urllib.request

    try:
        with urllib.request.urlopen(f"{url}/api/version", timeout=2):
            return True
    except urllib.error.HTTPError:
        return True
    except OSError:
        return False


def small_config(*overrides: str, root=None) -> Config:
    """The tiny test model with a cluster section suitable for a 2-CPU Ray."""
    return tiny_config(
        "cluster=ray_local",
        "cluster.num_workers=2",
        "cluster.resources.num_cpus=1",
        *overrides,
        root=root,
    )


# What identifies a result row: one per cell, direction, control and metric.
CELL = ("direction", "control", "metric", "pair_id", "layer", "head", "position")


def cell_keys(table) -> list[tuple]:
    return list(zip(*(table[c].to_pylist() for c in CELL), strict=True))


def sorted_rows(table):
    """Rows in a canonical order, without the run id (which names the run, not the result)."""
    order = [(c, "ascending") for c in CELL]
    return table.drop_columns(["run_id"]).sort_by(order)


def descendants(pid: int) -> dict[int, str]:
    """pid -> command line of every process below `pid` (the watchdog's /proc walk; Linux)."""
    found = {}
    for child in below(pid):
        try:
            with open(f"/proc/{child}/cmdline", "rb") as f:
                found[child] = f.read().replace(b"\0", b" ").decode(errors="replace")
        except OSError:
            continue
    return found


def pipe(src: socket.socket, dst: socket.socket) -> None:
    """Copy one direction of a proxied TCP connection until either side closes."""
    try:
        while data := src.recv(65536):
            dst.sendall(data)
    except OSError:
        pass
    finally:
        for s in (src, dst):
            try:
                s.shutdown(socket.SHUT_RDWR)
            except OSError:
                pass


def run_killing_a_worker(cfg: Config, units: list, store, stored, wait_s: float = 120) -> tuple:
    """Run `units` on this process's Ray and SIGKILL one worker, from outside, while it is inside
    `run`, once `stored()` says a unit's result is in the store; returns (units run, RayStats)
    after checking that the kill happened and the run still finished."""
    import signal
    import threading

    from hallu.run.ray import RayStats, run_ray

    stats, box = RayStats(), {}

    def drive():
        try:
            box["ran"] = run_ray(cfg, units, store, {}, stats)
        except BaseException as err:  # reported by the assertion below
            box["error"] = err

    driver = threading.Thread(target=drive)
    driver.start()
    killed = None
    deadline = time.monotonic() + wait_s
    while killed is None and driver.is_alive() and time.monotonic() < deadline:
        if stored():
            for pid, cmd in descendants(os.getpid()).items():
                if cmd.startswith("ray::ShardRunner.run"):
                    os.kill(pid, signal.SIGKILL)
                    killed = pid
                    break
        time.sleep(0.05)
    driver.join(timeout=300)
    assert "error" not in box, box.get("error")
    assert killed is not None, "the run ended before a worker could be killed"
    assert stats.worker_failures >= 1 and stats.requeued >= 1
    return box["ran"], stats


def local_reference(cfg: Config, root, plan=None):
    """The in-process run of the same config at one torch thread, as in a 1-CPU actor (another
    thread count may pick other kernels and round differently), rows in canonical order."""
    import torch

    from hallu.run.local import run_local
    from hallu.run.prepare import prepare
    from hallu.store.local import LocalStore

    threads = torch.get_num_threads()
    torch.set_num_threads(1)
    try:
        store = LocalStore(root, "reference")
        run_local(cfg, plan or prepare(cfg).plan(), store, {})
        return sorted_rows(store.read_results())
    finally:
        torch.set_num_threads(threads)
