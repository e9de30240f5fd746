"""The report's faults (issue 24, item 6): an s3:// run with a wrong bucket or an unreachable
endpoint is one line in seconds naming what the report reads (the URL, AWS_ENDPOINT_URL), and a
report during a live launch says a launch holds the run instead of "rerun the launch"."""

from __future__ import annotations

import json
import os
import socket
import time

from hallu.store.local import LocalStore

from .cluster_fixtures import free_port
from .conftest import run_module

FAST = ("--n-boot", "100", "--n-perm", "100")


def one_line(proc) -> str:
    assert proc.returncode == 2, proc.stderr[-3000:]
    assert "Traceback" not in proc.stderr, proc.stderr[-3000:]
    (line,) = [ln for ln in proc.stderr.splitlines() if ln.startswith("hallu: error:")]
    return line


def test_report_on_a_wrong_bucket_is_one_line_naming_the_url(moto, monkeypatch):
    monkeypatch.setenv("AWS_ENDPOINT_URL", moto.url)
    started = time.monotonic()
    line = one_line(run_module("hallu.report", "s3://no-such-bucket-hallu/runs/r1", *FAST))
    assert time.monotonic() - started < 15
    assert line == (
        f"hallu: error: s3://no-such-bucket-hallu/runs/r1: no bucket 'no-such-bucket-hallu' at "
        f"{moto.url}. Fix: check the bucket in the URL"
    )


def test_report_on_an_unreachable_endpoint_is_one_line_in_seconds(moto, monkeypatch):
    dead = f"http://127.0.0.1:{free_port()}"  # nothing listens there
    monkeypatch.setenv("AWS_ENDPOINT_URL", dead)
    started = time.monotonic()
    line = one_line(run_module("hallu.report", f"s3://{moto.bucket}/runs/r1", *FAST))
    assert time.monotonic() - started < 30
    assert f"s3://{moto.bucket}/runs/r1: cannot reach the object store at {dead} in " in line
    assert "Fix: check AWS_ENDPOINT_URL" in line and "storage." not in line, line


def test_report_on_a_hung_endpoint_ends_in_seconds(moto, monkeypatch):
    """An endpoint that accepts connections and never answers."""
    with socket.socket() as server:
        server.bind(("127.0.0.1", 0))
        server.listen(8)
        monkeypatch.setenv("AWS_ENDPOINT_URL", f"http://127.0.0.1:{server.getsockname()[1]}")
        started = time.monotonic()
        line = one_line(run_module("hallu.report", f"s3://{moto.bucket}/runs/r1", *FAST))
        waited = time.monotonic() - started
    assert waited < 30, waited
    assert "cannot reach the object store" in line, line


def test_report_during_a_live_launch_says_a_launch_holds_the_run(run_cli, tmp_path):
    proc = run_cli("model.tiny.n_layers=2", "sweep.experiments=[patching]", "sweep.pairs=2",
                   "sweep.positions=last:1", "sweep.pairs_per_shard=1", "run_id=live")  # fmt: skip
    assert proc.returncode == 0, proc.stderr[-3000:]
    store = LocalStore(tmp_path / "runs", "live")
    lost = sorted(store.done_shards())[0]
    (store.done_dir / f"{lost}.json").unlink()  # not written yet: the launch is still at work
    (store.shard_dir / f"{lost}.parquet").unlink()
    note = {"token": "t", "pid": os.getpid(), "host": socket.gethostname(),
            "started": time.time(), "renewed": time.time(), "ttl": 120.0}  # fmt: skip
    (store.dir / ".lease").write_text(json.dumps(note))  # a live launch: this process
    line = one_line(run_module("hallu.report", str(store.dir), *FAST))
    assert f"a launch is still writing this run (pid {os.getpid()} on" in line, line
    assert f"Fix: follow it with `hallu status {store.dir} --watch`" in line, line
    assert "rerun the launch" not in line.split("Fix:")[1]
    (store.dir / ".lease").unlink()  # the launch ended, the shard never came: now a rerun
    assert "Fix: rerun the launch with run_id=live" in one_line(
        run_module("hallu.report", str(store.dir), *FAST)
    )
