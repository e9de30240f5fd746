"""A run's live status (status.json, `hallu status`), its budget, and the rates it measures.

Issue 25, items 1, 2 and the calibration part of 4: the driver writes status.json while it
runs and at the end; `hallu status` reads it from the store alone (a local folder, or S3 on
moto); a budget below the projection stops the run cleanly and the printed command resumes it
to the rows an unbudgeted run gives; a finished run's rates change the next plan's time.
"""

from __future__ import annotations

import json
import os
import re
import shlex
import signal
import subprocess
import sys
import tempfile
import time

import pytest

from hallu import commands
from hallu.run.progress import _round_up
from hallu.store import status_file
from hallu.store.factory import store_at
from hallu.store.local import LocalStore

from .cluster_fixtures import TEST_ENV, sorted_rows
from .conftest import TINY

# 8 one-pair shards (4 pairs, 2 directions): several units for a warm-up and a stop.
QUICK = [*TINY, "model.tiny.n_layers=3", "model.tiny.d_model=32", "model.tiny.d_mlp=64"]
QUICK += ["sweep.experiments=[patching]", "sweep.positions=last:1", "sweep.pairs=4"]
QUICK += ["sweep.pairs_per_shard=1", "sweep.controls=[]"]
PRICE = "cluster.price_per_gpu_hour=3600"  # $1 per second of one worker: a budget bites fast


def status(*args: str, capsys) -> tuple[int, str, str]:
    code = commands.main(["status", *args])
    out, err = capsys.readouterr()
    return code, out, err


@pytest.mark.slow  # three launches
def test_budget_stops_cleanly_and_the_printed_command_resumes_to_the_unbudgeted_rows(
    run_cli, tmp_path, capsys
):
    stopped = run_cli(*QUICK, PRICE, "cluster.budget_usd=0.000001", "run_id=b")
    assert stopped.returncode == 2, stopped.stderr[-2000:]
    assert "Traceback" not in stopped.stderr
    error = [ln for ln in stopped.stderr.splitlines() if ln.startswith("hallu: error:")]
    assert len(error) == 1 and "cluster.budget_usd=1e-06: spent $" in error[0], error
    assert "projected $" in error[0] and "unit(s) left" in error[0]
    store = LocalStore(tmp_path / "runs", "b")
    # Checks start after the warm-up (2 of 8 units); in-process, nothing else is in flight.
    assert len(store.done_shards()) == 2
    st = status_file.read(store)
    assert st["state"] == "stopped" and st["stages"]["patching"]["done"] == 2
    assert st["spent_usd"] > 1e-6 and st["projected_usd"] > st["spent_usd"]
    assert not (tmp_path / "runs" / "b" / ".lease").exists()  # the lease was released
    # The command in the message, as typed, with a budget above the projection.
    resume = shlex.split(error[0].split("Fix: resume with a higher budget: ")[1])
    assert resume[:3] == ["python", "-m", "hallu.launch"] and "run_id=b" in resume
    budget = float(next(a for a in resume if a.startswith("cluster.budget_usd=")).split("=")[1])
    assert budget >= st["projected_usd"]
    done = run_cli(*resume[3:], "cluster.budget_usd=1000000", tiny=False, root=False)
    assert done.returncode == 0, done.stderr[-2000:]
    assert "6 shard(s) run, 2 already done" in done.stderr
    st = status_file.read(store)
    assert st["state"] == "finished" and st["stages"]["patching"]["before"] == 2
    assert st["billed_hours"] > 0 and st["spent_usd"] == pytest.approx(st["billed_hours"] * 3600)
    free = run_cli(*QUICK, "run_id=free")
    assert free.returncode == 0, free.stderr[-2000:]
    ref = LocalStore(tmp_path / "runs", "free").read_results()
    assert sorted_rows(store.read_results()).equals(sorted_rows(ref))


def test_budget_without_a_price_is_refused_before_anything_runs(run_cli, tmp_path):
    proc = run_cli(*QUICK, "cluster.budget_usd=5")
    assert proc.returncode == 2 and "Traceback" not in proc.stderr
    assert "cluster.budget_usd=5 has no price" in proc.stderr
    assert "cluster.price_per_gpu_hour=USD" in proc.stderr
    assert not (tmp_path / "runs").exists()


def test_finished_local_run_status_shows_totals_and_json(run_cli, tmp_path, capsys):
    assert run_cli(*QUICK, PRICE, "run_id=f").returncode == 0
    run = str(tmp_path / "runs" / "f")
    code, out, _ = status(run, capsys=capsys)
    assert code == 0
    assert "patching shards              8/8 done (100%)" in out
    assert "driver: finished" in out and "8 done, 0 failed / 8" in out
    assert re.search(r"worker-hours \(no GPU\) [0-9.e-]+, cost \$[0-9.]+", out), out
    assert "local: stopped, pid" in out and "last error: none" in out
    code, out, _ = status(run, "--watch", capsys=capsys)  # a finished run: drawn once
    assert code == 0 and out.startswith("\x1b[H\x1b[J") and out.count("driver: finished") == 1
    code, out, _ = status(run, "--json", capsys=capsys)
    doc = json.loads(out)["f"]
    assert doc["stages"] == [{"stage": "patching shards", "done": 8, "planned": 8}]
    assert doc["status"]["units_left"] == 0 and doc["status"]["eta_s"] == 0
    assert doc["status"]["plan"]["seconds"] > 0


@pytest.mark.slow  # two plans and a run
def test_plan_time_changes_after_a_run_measures_its_rates(run_cli, calibration_file):
    def planned_seconds() -> float:
        proc = run_cli(*QUICK, "mode=plan")
        assert proc.returncode == 0, proc.stderr[-2000:]
        total = re.search(r"^total: .*, ([0-9.]+) (s|min|h) \(with", proc.stdout, re.M)
        assert total, proc.stdout
        return float(total[1]) * {"s": 1, "min": 60, "h": 3600}[total[2]], proc.stdout

    before, text = planned_seconds()
    assert "measured:" not in text and not calibration_file.exists()
    assert run_cli(*QUICK, "run_id=c").returncode == 0
    entry = json.loads(calibration_file.read_text())["runs"]["cpu|tiny"]
    assert entry["cells_per_s"] > 0 and entry["load_s"] > 0
    assert entry["peak_bytes_per_worker"] > 0 and entry["seconds_per_unit"]["patching"] > 0
    after, text = planned_seconds()
    assert "measured: patching and the load time" in text
    # Now: the measured load plus the plan's cells at the measured cells/s (one worker).
    cells = int(re.search(r"^patching: ([0-9,]+) cells", text, re.M)[1].replace(",", ""))
    # (before may round to the same printed time by chance: the source of the number is the check)
    assert after == pytest.approx(entry["load_s"] + cells / entry["cells_per_s"], rel=0.05, abs=0.1)


def test_status_object_is_bounded_and_limits_round_up():
    from hallu.config import compose
    from hallu.run.progress import Progress

    class Store:  # a store with nothing in it yet: status.json is not written before run.json
        run_id, dir = "x", "nowhere"

        def read_file(self, name):
            return None

        def read_meta(self):
            return None

    p = Progress(compose([*QUICK, "cluster=ray_local", "cluster.num_workers=200"]), Store())
    for i in range(200):
        p.ready(f"worker {i}", {"pid": i, "host": "h", "load_s": 1.0})
        p.failed(f"worker {i}", "patching", "x" * 10_000)
    p._wake.set()  # no background writes for this object
    doc = p.snapshot()
    assert len(doc["workers"]) == status_file.MAX_WORKERS and doc["workers_not_listed"] == 136
    assert len(doc["last_error"]) == status_file.MAX_ERROR
    assert len(json.dumps(doc)) < 20_000
    assert [_round_up(x) for x in (0.00123, 1.0, 28.16, 351.2)] == ["0.0013", "1", "29", "360"]


# -- a study in progress, read from another process --------------------------------------------

# 24 one-pair shards of a wider tiny model: long enough for several status writes (every 5 s).
LONG = [*TINY, "sweep.experiments=[patching]", "sweep.pairs_per_shard=1", "sweep.pairs=12"]
LONG += ["sweep.positions=last:12", "model.tiny.n_layers=8", "model.tiny.d_model=256"]
LONG += ["model.tiny.d_mlp=1024", PRICE]


def _launch(*args: str) -> tuple[subprocess.Popen, object]:
    err = tempfile.TemporaryFile("w+")
    env = {**os.environ, **TEST_ENV, "OMP_NUM_THREADS": "1"}
    cmd = [sys.executable, "-m", "hallu.launch", *LONG, *args]
    return subprocess.Popen(cmd, stdout=subprocess.DEVNULL, stderr=err, text=True, env=env), err


def _watch_live(target: str, proc: subprocess.Popen, capsys) -> str:
    """`hallu status` output once status.json says running with a unit stored."""
    deadline = time.monotonic() + 600
    while time.monotonic() < deadline:
        assert proc.poll() is None, "the launch ended before its status was seen running"
        try:
            st = status_file.read(store_at(target))
        except Exception:
            st = None
        if st and st["state"] == "running" and st["units_done"] >= 1 and st["units_left"] > 1:
            code, out, _ = status(target, capsys=capsys)
            assert code == 0
            return out
        time.sleep(0.5)
    raise AssertionError("no running status within 600 s")


def _check_running(out: str) -> None:
    assert "driver: running (status.json written" in out, out
    assert re.search(r"throughput: [0-9.]+ units/min; ETA [0-9.]+ (s|min|h)", out), out
    assert re.search(r"worker-hours \(no GPU\) [0-9.e-]+, cost \$[0-9.e-]+, projected \$", out), out
    assert "heartbeat" in out and "last error: none" in out


@pytest.mark.slow
def test_status_and_report_of_a_running_local_study(tmp_path, capsys):
    from .conftest import run_module

    proc, err = _launch(f"storage.root={tmp_path}", "run_id=live")
    try:
        out = _watch_live(str(tmp_path / "live"), proc, capsys)
        _check_running(out)
        assert "local: busy" in out
        # Paused (its status stays fresh for status_file.STALE_S), so that the run is still
        # going when the report reads it, however fast this machine finishes the rest.
        os.kill(proc.pid, signal.SIGSTOP)
        try:
            report = run_module("hallu.report", str(tmp_path / "live"))
        finally:
            os.kill(proc.pid, signal.SIGCONT)
        assert report.returncode == 2, report.stderr[-2000:]
        assert "a launch is still writing this run" in report.stderr
        assert f"hallu status {tmp_path / 'live'} --watch" in report.stderr
    finally:
        proc.wait(timeout=900)
    err.seek(0)
    assert proc.returncode == 0, err.read()[-3000:]
    code, out, _ = status(str(tmp_path / "live"), capsys=capsys)
    assert "patching shards              24/24 done (100%)" in out and "driver: finished" in out


@pytest.mark.slow
def test_status_of_a_running_ray_local_study_on_s3(moto, tmp_path, capsys, monkeypatch):
    monkeypatch.setenv("AWS_ENDPOINT_URL", moto.url)  # how a reader's boto3 finds the store
    ray = ["cluster=ray_local", "cluster.num_workers=2", "cluster.resources.num_cpus=1"]
    proc, err = _launch(*ray, *moto.overrides("p"), "run_id=live")
    target = f"s3://{moto.bucket}/p/live"
    try:
        out = _watch_live(target, proc, capsys)
        _check_running(out)
        assert re.search(r"worker [01]: (ready|busy), pid \d+ on .*, node [0-9a-f]{12}", out), out
    finally:
        proc.wait(timeout=900)
    err.seek(0)
    assert proc.returncode == 0, err.read()[-3000:]
    code, out, _ = status(target, "--json", capsys=capsys)
    st = json.loads(out)["live"]["status"]
    assert st["state"] == "finished" and st["units_done"] == 24 and st["units_left"] == 0
    assert {w["name"] for w in st["workers"]} == {"worker 0", "worker 1"}


@pytest.mark.slow  # two launches that each start a local Ray, and a reference
def test_budget_on_ray_lets_in_flight_units_finish_and_the_resume_completes(run_cli, tmp_path):
    from .cluster_fixtures import local_reference
    from .conftest import tiny_config

    ray = ["cluster=ray_local", "cluster.num_workers=2", "cluster.resources.num_cpus=1"]
    stopped = run_cli(*QUICK, *ray, PRICE, "cluster.budget_usd=0.000001", "run_id=rb")
    assert stopped.returncode == 2 and "Traceback" not in stopped.stderr, stopped.stderr[-3000:]
    error = [ln for ln in stopped.stderr.splitlines() if ln.startswith("hallu: error:")]
    assert len(error) == 1 and "cluster.budget_usd=1e-06: spent $" in error[0], error
    store = LocalStore(tmp_path / "runs", "rb")
    # Two stored (the warm-up), then nothing new sent; what was in flight (at most 3 more:
    # 2 slots per worker, one refilled after the first) finished and was kept.
    stored = len(store.done_shards())
    assert 2 <= stored <= 5, stored
    st = status_file.read(store)
    assert st["state"] == "stopped" and st["units_done"] == stored
    assert not (tmp_path / "runs" / "rb" / ".lease").exists()
    resume = shlex.split(error[0].split("Fix: resume with a higher budget: ")[1])
    done = run_cli(*resume[3:], "cluster.budget_usd=1000000", tiny=False, root=False)
    assert done.returncode == 0, done.stderr[-3000:]
    assert f"{8 - stored} shard(s) run, {stored} already done" in done.stderr
    cfg = tiny_config(*QUICK[2:])
    got = sorted_rows(store.read_results())
    assert got.equals(local_reference(cfg, tmp_path / "ref"))
