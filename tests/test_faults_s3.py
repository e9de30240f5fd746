"""Faults on storage=s3, against moto's server on 127.0.0.1 (issue 11): an endpoint that goes away
for 20 s, shards the store loses mid-run, a held or stale lease, a scheme-less endpoint and a
half-set credential pair. Each ends with the undisturbed run's rows or one line and exit 2."""

from __future__ import annotations

import json
import os
import socket
import subprocess
import sys
import threading
import time

import pytest

from hallu.errors import UserError
from hallu.run.launch import main
from hallu.store import verify
from hallu.store.lease import LeaseLost
from hallu.store.local import LocalStore
from hallu.store.s3 import S3Store

from .cluster_fixtures import pipe, sorted_rows
from .conftest import tiny_config
from .test_faults import SMALL, one_line_error

# 24 shards of one pair each: long enough (about 30 s) to break the store in the middle of it.
LONG = [*SMALL, "sweep.pairs_per_shard=1", "sweep.pairs=12", "sweep.positions=last:12"]


@pytest.fixture(scope="module")
def reference(tmp_path_factory):
    """The undisturbed run of LONG, in a local directory."""
    root = tmp_path_factory.mktemp("ref") / "runs"
    done = _launch(LONG, f"storage.root={root}", "run_id=ref").wait()
    assert done.returncode == 0, done.stderr[-3000:]
    return sorted_rows(verify.read_verified(LocalStore(root, "ref")))


class _launch:
    """`python -m hallu.launch ARGS` in the background; stderr goes to a file (a progress bar
    would fill a pipe nobody reads)."""

    def __init__(self, args: list[str], *more: str):
        import tempfile

        self.err = tempfile.TemporaryFile("w+")
        cmd = [sys.executable, "-m", "hallu.launch", *args, *more]
        self.proc = subprocess.Popen(cmd, stdout=subprocess.DEVNULL, stderr=self.err, text=True)

    def poll(self) -> int | None:
        return self.proc.poll()

    def stderr(self) -> str:
        self.err.seek(0)
        return self.err.read()

    def wait(self, timeout: float = 900) -> subprocess.CompletedProcess:
        self.proc.wait(timeout=timeout)
        return subprocess.CompletedProcess(self.proc.args, self.proc.returncode, "", self.stderr())


def _s3(moto, prefix: str, endpoint: str | None = None) -> list[str]:
    return [
        "storage=s3",
        f"storage.bucket={moto.bucket}",
        f"storage.prefix={prefix}",
        f"storage.endpoint_url={endpoint or moto.url}",
        "storage.region=us-east-1",
    ]


def _wait_for_markers(moto, prefix: str, n: int, proc: _launch) -> None:
    deadline = time.monotonic() + 600
    while len(moto.keys(f"{prefix}/done/")) < n:
        assert proc.poll() is None, proc.stderr()[-3000:]
        assert time.monotonic() < deadline
        time.sleep(0.2)


def _rows(moto, prefix: str, run_id: str):
    cfg = tiny_config(*_s3(moto, prefix))
    return sorted_rows(verify.read_verified(S3Store(cfg.storage, run_id)))


class OutageProxy:
    """A TCP proxy on 127.0.0.1 in front of moto that can go down (connections refused, open
    ones reset) and come back on the same port."""

    def __init__(self, target: str):
        host, port = target.removeprefix("http://").split(":")
        self.target = (host, int(port))
        self.sock = socket.create_server(("127.0.0.1", 0))
        self.port = self.sock.getsockname()[1]
        self.url = f"http://127.0.0.1:{self.port}"
        self.conns: list[socket.socket] = []
        self.accepted = 0
        self._serve()

    def _serve(self) -> None:
        threading.Thread(target=self._accept, args=(self.sock,), daemon=True).start()

    def _accept(self, listener: socket.socket) -> None:
        while True:
            try:
                conn, _ = listener.accept()
            except OSError:
                return
            self.accepted += 1
            upstream = socket.create_connection(self.target)
            self.conns += [conn, upstream]
            for a, b in ((conn, upstream), (upstream, conn)):
                threading.Thread(target=pipe, args=(a, b), daemon=True).start()

    def down(self) -> None:
        try:
            self.sock.shutdown(socket.SHUT_RDWR)  # wakes the accept() blocked on it (Linux)
        except OSError:
            pass
        self.sock.close()
        for c in self.conns:
            try:
                c.shutdown(socket.SHUT_RDWR)
            except OSError:
                pass
        self.conns = []

    def up(self) -> None:
        self.sock = socket.create_server(("127.0.0.1", self.port))
        self._serve()

    def refused(self) -> bool:
        try:
            socket.create_connection(("127.0.0.1", self.port), timeout=1).close()
        except ConnectionRefusedError:
            return True
        return False


@pytest.mark.slow
def test_endpoint_down_for_20_s_then_back_the_run_goes_on(moto, reference):
    proxy = OutageProxy(moto.url)
    # Two attempts per request: botocore's own retries alone give up within seconds, so what
    # rides out the outage is storage.retry_seconds (default 300).
    proc = _launch(LONG, *_s3(moto, "outage", proxy.url), "run_id=o", "storage.max_attempts=2")
    _wait_for_markers(moto, "outage/o", 2, proc)
    proxy.down()
    assert proxy.refused()
    done_at_outage = len(moto.keys("outage/o/done/"))
    time.sleep(20)
    assert proc.poll() is None, "the run waited"
    proxy.up()
    done = proc.wait()
    assert done.returncode == 0, done.stderr[-3000:]
    assert "retrying" in done.stderr and "Traceback" not in done.stderr
    assert done_at_outage < 24, "the outage fell in the middle of the run"
    assert _rows(moto, "outage", "o").equals(reference)


@pytest.mark.slow
def test_endpoint_down_for_longer_than_retry_seconds_is_one_line(moto):
    proxy = OutageProxy(moto.url)
    proc = _launch(LONG, *_s3(moto, "gone", proxy.url), "run_id=g", "storage.retry_seconds=5")
    _wait_for_markers(moto, "gone/g", 1, proc)
    proxy.down()
    one_line_error(proc.wait(), "(storage.retry_seconds=5;", "run_id=g")


@pytest.mark.slow
def test_shards_lost_mid_run_are_named_and_recomputed(moto, reference):
    """The store loses every stored shard while the run goes on (a wiped prefix): the run ends
    with exit 2 naming them, and rerunning computes them again."""
    proc = _launch(LONG, *_s3(moto, "wiped"), "run_id=w")
    _wait_for_markers(moto, "wiped/w", 3, proc)
    client = moto.client()
    for key in moto.keys("wiped/w/shards/"):
        client.delete_object(Bucket=moto.bucket, Key=key)
    one_line_error(proc.wait(), "do not match the plan", "marked done, but its object is missing")
    again = _launch(LONG, *_s3(moto, "wiped"), "run_id=w").wait()
    assert again.returncode == 0, again.stderr[-3000:]
    assert _rows(moto, "wiped", "w").equals(reference)
    assert moto.keys("wiped/w/quarantine/"), "the lost shards' markers are kept aside"


def test_s3_lease_refuses_a_second_writer_and_is_taken_over_when_stale(moto, capsys):
    cfg = tiny_config(*_s3(moto, "lease"))
    first, second = S3Store(cfg.storage, "l"), S3Store(cfg.storage, "l")
    first.lease.acquire("l")
    with pytest.raises(
        UserError, match=f"run_id=l is being written by another launch .pid {os.getpid()}"
    ):
        second.lease.acquire("l")
    first.lease.check_writer()
    # The first driver stops renewing (its host is gone): after ttl the lease is stale.
    note = json.loads(
        moto.client().get_object(Bucket=moto.bucket, Key="lease/l/.lease")["Body"].read()
    )
    note.update(host="another-host", renewed=time.time() - 1000)
    moto.client().put_object(
        Bucket=moto.bucket, Key="lease/l/.lease", Body=json.dumps(note).encode()
    )
    second.lease.acquire("l")
    assert "its lease is stale (not renewed for 1000 s)" in capsys.readouterr().err
    with pytest.raises(LeaseLost):
        first.lease.check_writer()  # the old driver's workers store nothing more
    second.lease.release()
    assert moto.keys("lease/l/") == []
    first.lease._stop.set()


def test_scheme_less_endpoint_and_half_set_credentials_are_one_line(moto, capsys, monkeypatch):
    base = [*SMALL, f"storage.bucket={moto.bucket}", "storage=s3"]
    assert main([*base, "storage.endpoint_url=127.0.0.1:9000"]) == 2
    err = capsys.readouterr().err
    assert "storage.endpoint_url" in err and "http://127.0.0.1:9000" in err
    assert "Traceback" not in err
    monkeypatch.delenv("AWS_SECRET_ACCESS_KEY")
    monkeypatch.setenv("AWS_SHARED_CREDENTIALS_FILE", "/nonexistent")
    monkeypatch.delenv("AWS_PROFILE", raising=False)
    assert main([*base, f"storage.endpoint_url={moto.url}"]) == 2
    err = capsys.readouterr().err
    lines = [ln for ln in err.splitlines() if ln.startswith("hallu: error:")]
    assert len(lines) == 1 and "AWS_SECRET_ACCESS_KEY" in lines[0], err
    assert "Traceback" not in err
