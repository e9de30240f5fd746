"""Ray Job submission against a Ray head started here on loopback, results to moto's S3."""

from __future__ import annotations

import json
import subprocess
import sys

import pytest

from hallu.config import compose
from hallu.run.jobs import entrypoint, submission_id
from hallu.run.launch import main
from hallu.run.prepare import prepare
from hallu.store.s3 import S3Store

from .cluster_fixtures import (
    TEST_ENV,
    free_port,
    local_reference,
    ray_head,
    service_env,
    sorted_rows,
)


@pytest.fixture(scope="module")
def head():
    """This module's own Ray head (not shared with other modules): job submission needs the
    dashboard's job server, and these tests need token auth on (as infra/ sets a head up; a
    client without the token must be refused)."""
    with service_env(), ray_head(num_cpus=2) as h:
        yield h


@pytest.fixture
def services(moto, head):
    """The session's moto server (a bucket of this test's own) and this module's head."""
    return moto, head


def _job_args(moto, head, run_id: str) -> list[str]:
    return [
        "+sweep=debug",
        "cluster=lambda",
        f"cluster.address={head.dashboard_url}",
        "cluster.num_workers=1",
        "cluster.resources.num_cpus=1",
        "cluster.resources.num_gpus=0",
        "cluster.gpu=null",  # CPU workers: nothing to price (a GPU kind would be refused)
        f"run_id={run_id}",
        *moto.overrides("jobs"),
    ]


@pytest.mark.slow
def test_submitted_job_runs_the_sweep_on_the_cluster(services, tmp_path):
    moto, head = services
    args = _job_args(moto, head, "job1")
    # The submitter authenticates with Ray's token, as a user of a token-auth cluster would.
    env = head.client_env()
    proc = subprocess.run(
        [sys.executable, "-m", "hallu.launch", *args],
        capture_output=True,
        text=True,
        timeout=300,
        env=env,
        cwd=tmp_path,
    )
    out = proc.stdout + proc.stderr
    assert proc.returncode == 0, out[-4000:]
    assert "submitted hallu-job1" in out and "job hallu-job1 SUCCEEDED" in out
    assert "not passed (they stay on this machine): AWS_ACCESS_KEY_ID" in out, "names kept here"
    for secret in (TEST_ENV["AWS_ACCESS_KEY_ID"], TEST_ENV["AWS_SECRET_ACCESS_KEY"]):
        assert secret not in out, "values never printed"
    # The job's own log, followed by the submitter: the launcher ran inside the cluster.
    assert f"hallu: run job1 -> s3://{moto.bucket}/jobs/job1" in out
    cfg = compose(args)
    plan = prepare(cfg).plan()
    assert f"{len(plan.shards)} shard(s) run, 0 already done" in out
    got = S3Store(cfg.storage, "job1").read_results()
    # the job's one worker has one CPU: the reference runs at one torch thread, as it does
    assert sorted_rows(got).equals(local_reference(cfg, tmp_path, plan))

    listed = subprocess.run(
        [sys.executable, "-m", "hallu", "jobs", "list", "--address", head.dashboard_url],
        capture_output=True,
        text=True,
        timeout=60,
        env=env,
    )
    assert listed.returncode == 0, listed.stderr
    assert "hallu-job1\tSUCCEEDED" in listed.stdout
    assert TEST_ENV["AWS_SECRET_ACCESS_KEY"] not in listed.stdout
    # Without the token the job server refuses, and the command says how to fix it.
    no_token = head.client_env(with_token=False)
    refused = subprocess.run(
        [sys.executable, "-m", "hallu", "jobs", "list", "--address", head.dashboard_url],
        capture_output=True,
        text=True,
        timeout=60,
        env=no_token,
    )
    assert refused.returncode == 2 and "RAY_AUTH_MODE=token" in refused.stderr, refused.stderr


@pytest.mark.slow
def test_a_multirun_is_one_job_and_its_report_reads_the_bucket(services, tmp_path):
    moto, head = services
    args = [a for a in _job_args(moto, head, "mrjob") if not a.startswith("storage.prefix=")]
    args.append("storage.prefix=multi")
    env = head.client_env()
    proc = subprocess.run(
        [sys.executable, "-m", "hallu.launch", "-m", *args, "sweep.pairs=2,3"],
        capture_output=True, text=True, timeout=600, env=env, cwd=tmp_path,
    )  # fmt: skip
    out = proc.stdout + proc.stderr
    assert proc.returncode == 0, out[-4000:]
    assert out.count("submitted hallu-") == 1 and "job hallu-mrjob SUCCEEDED" in out
    # Inside the job the studies ran one after another on the cluster, into the bucket.
    root = f"s3://{moto.bucket}/multi/mrjob"
    assert f"multirun: {root} (multirun.json)" in out
    index_store = S3Store(compose(args).storage, "mrjob")
    index = index_store.read_file("multirun.json")
    studies = json.loads(index)["studies"]
    assert [s["status"] for s in studies] == ["done", "done"]
    for s, pairs in zip(studies, (2, 3), strict=True):
        cfg = compose([*args, f"sweep.pairs={pairs}", "storage.prefix=multi/mrjob"])
        rows = S3Store(cfg.storage, s["run_id"]).read_results()
        assert set(rows["pair_id"].to_pylist()) == set(prepare(cfg).token_ids)
    report_env = {**env, "AWS_ENDPOINT_URL": moto.url, "AWS_DEFAULT_REGION": "us-east-1"}
    rep = subprocess.run(
        [sys.executable, "-m", "hallu.report", root, "--n-boot", "100", "--n-perm", "100"],
        capture_output=True, text=True, timeout=300, env=report_env, cwd=tmp_path,
    )  # fmt: skip
    assert rep.returncode == 0, rep.stderr[-3000:]
    md = index_store.read_file("multirun_report.md").decode()
    assert "| sweep.pairs=2 | sweep.pairs=3 |" in md


SUBMIT = """
import json, sys, time
from hallu.run.jobs import client, submit
jobs = client(sys.argv[1])
sid = submit(jobs, ["--help"], "secrets")
while jobs.get_job_info(sid).status in ("PENDING", "RUNNING"):
    time.sleep(0.5)
info = jobs.get_job_info(sid)
print(json.dumps({"status": str(info.status), "runtime_env": info.runtime_env,
                  "metadata": info.metadata, "entrypoint": info.entrypoint,
                  "logs": jobs.get_job_logs(sid), "listed": repr(jobs.list_jobs())}))
"""


@pytest.mark.slow
def test_a_submitted_job_records_no_credential_of_the_submitter(head, tmp_path):
    """The job server keeps each job's runtime environment and shows it to whoever can reach it:
    a job submitted with AWS keys and a hub token in the shell records only the profile and the
    region (read back from the job server itself)."""
    secrets = {
        "AWS_ACCESS_KEY_ID": "AKIA-submitter-key-1234",
        "AWS_SECRET_ACCESS_KEY": "submitter-secret-5678",
        "AWS_SESSION_TOKEN": "submitter-session-9012",
        "HF_TOKEN": "hf_submitter_token_3456",
    }
    env = {**head.client_env(), **secrets, "AWS_PROFILE": "research"}
    proc = subprocess.run([sys.executable, "-c", SUBMIT, head.dashboard_url], capture_output=True,
                          text=True, timeout=300, env=env, cwd=tmp_path)  # fmt: skip
    assert proc.returncode == 0, proc.stderr[-3000:]
    out, job = proc.stdout, json.loads(proc.stdout.splitlines()[-1])
    assert job["status"].endswith("SUCCEEDED"), job
    assert job["runtime_env"]["env_vars"] == {
        "AWS_PROFILE": "research",
        "AWS_DEFAULT_REGION": TEST_ENV["AWS_DEFAULT_REGION"],
    }
    assert job["metadata"]["hallu_run_id"] == "secrets"
    for value in secrets.values():
        assert value not in out, "no credential in the job's record, its log or this output"
    (kept,) = [ln for ln in out.splitlines() if ln.startswith("hallu: not passed (they stay")]
    assert all(k in kept for k in secrets), kept


def test_submission_ids_and_entrypoint_follow_the_run_id():
    assert submission_id("r7") == "hallu-r7" and submission_id("r7", 2) == "hallu-r7-r2"
    cmd = entrypoint(["+sweep=full", "run_id=old", "cluster=lambda", "cluster.kind=x"], "r7")
    assert cmd == (
        "python -m hallu.launch +sweep=full cluster=lambda run_id=r7 cluster.kind=ray "
        "cluster.address=null"
    )


def test_remote_cluster_needs_object_storage(capsys):
    assert main(["cluster=lambda"]) == 2
    err = capsys.readouterr().err
    assert "cluster=lambda" in err and "storage=s3 storage.bucket=NAME" in err


def test_no_job_server_is_one_clear_error(moto, capsys):  # no head needed: there is none
    dead = f"http://127.0.0.1:{free_port()}"
    args = ["+sweep=debug", "cluster=runpod", f"cluster.address={dead}", *moto.overrides("j")]
    assert main(args) == 2
    err = capsys.readouterr().err
    assert err.startswith(f"hallu: error: cluster.address={dead}: no Ray job server answers")
