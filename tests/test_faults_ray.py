"""Faults on `cluster=ray_local` (issue 11): a second launch on a running run is refused, and a
driver killed with SIGKILL takes its workers with it: no shard stored after it is gone, no
process of the run left after 10 s, and rerunning completes the undisturbed run's rows."""

from __future__ import annotations

import os
import signal
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import pytest

from hallu.run.watchdog import running, start_time
from hallu.store import verify
from hallu.store.local import LocalStore

from .cluster_fixtures import TEST_ENV, descendants, sorted_rows
from .test_faults import SMALL, one_line_error

pytest.importorskip("ray")
pytestmark = pytest.mark.slow  # fault injection on launches that each start a Ray

# 24 shards of one pair each: time to act in the middle of the run. The model is made wider
# than SMALL's so that each shard takes a while even on a quiet machine (with 32-wide layers all
# 24 shards were stored within a second of the first one, before the kill landed).
LONG = [*SMALL, "sweep.pairs_per_shard=1", "sweep.pairs=12", "sweep.positions=last:12"]
LONG += ["model.tiny.n_layers=8", "model.tiny.d_model=256", "model.tiny.d_mlp=1024"]
# Each launch starts its own local Ray (not a shared one): what is tested is
# that a killed driver takes the Ray it started (raylet, workers) with it, and that a second
# launch is refused before it starts one.
RAY = ["cluster=ray_local", "cluster.num_workers=2", "cluster.resources.num_cpus=1"]
# One torch thread everywhere, as Ray gives a 1-CPU actor: local and Ray rows agree bit for bit.
ENV = {**os.environ, **TEST_ENV, "OMP_NUM_THREADS": "1"}


class Launch:
    def __init__(self, root: Path, run_id: str, *args: str):
        self.err = tempfile.TemporaryFile("w+")
        cmd = [sys.executable, "-m", "hallu.launch", *LONG, *args]
        cmd += [f"storage.root={root}", f"run_id={run_id}"]
        self.proc = subprocess.Popen(
            cmd, stdout=subprocess.DEVNULL, stderr=self.err, text=True, env=ENV
        )

    def wait(self, timeout: float = 900) -> subprocess.CompletedProcess:
        self.proc.wait(timeout=timeout)
        self.err.seek(0)
        return subprocess.CompletedProcess(
            self.proc.args, self.proc.returncode, "", self.err.read()
        )


def _wait_until(cond, proc: subprocess.Popen, what: str, timeout: float = 600) -> None:
    deadline = time.monotonic() + timeout
    while not cond():
        assert proc.poll() is None, f"the launch ended before {what}"
        assert time.monotonic() < deadline, what
        time.sleep(0.2)


@pytest.fixture(scope="module")
def reference(tmp_path_factory):
    root = tmp_path_factory.mktemp("ref") / "runs"
    done = Launch(root, "ref").wait()
    assert done.returncode == 0, done.stderr[-3000:]
    return sorted_rows(verify.read_verified(LocalStore(root, "ref")))


def test_killed_driver_takes_its_workers_and_the_rerun_completes(tmp_path, reference):
    root = tmp_path / "runs"
    run = Launch(root, "k", *RAY)
    shards = root / "k" / "shards"
    procs: dict[int, int | None] = {}
    names: list[str] = []

    def first_shard_stored() -> bool:  # noting the driver's processes meanwhile
        below = descendants(run.proc.pid)
        procs.update({p: start_time(p) for p in below})
        names.extend(below.values())
        return any((root / "k" / "done").glob("*.json"))

    _wait_until(first_shard_stored, run.proc, "the first shard")
    assert any("raylet" in c for c in names), "a local Ray runs"
    run.proc.send_signal(signal.SIGKILL)
    run.proc.wait()
    time.sleep(1)  # a write that began before the kill may still land
    at_kill = sorted(p.name for p in shards.iterdir())
    time.sleep(10)
    assert sorted(p.name for p in shards.iterdir()) == at_kill, "no shard stored after the kill"
    left = [p for p, t in procs.items() if running(p, t)]
    assert not left, f"still running 11 s after the driver died: {left}"
    assert len(at_kill) < 24, "the kill fell in the middle of the run"

    again = Launch(root, "k", *RAY).wait()
    assert again.returncode == 0, again.stderr[-3000:]
    assert "its lease is stale" in again.stderr
    assert sorted_rows(verify.read_verified(LocalStore(root, "k"))).equals(reference)


def test_second_launch_on_a_running_ray_run_is_refused(tmp_path, reference):
    root = tmp_path / "runs"
    first = Launch(root, "two", *RAY)
    lease = root / "two" / ".lease"
    _wait_until(lease.exists, first.proc, "the lease")
    second = Launch(root, "two", *RAY).wait()
    done = first.wait()
    assert done.returncode == 0, done.stderr[-3000:]
    one_line_error(second, "run_id=two is being written by another launch", f"pid {first.proc.pid}")
    assert "raylet" not in second.stderr
    assert sorted_rows(verify.read_verified(LocalStore(root, "two"))).equals(reference)
