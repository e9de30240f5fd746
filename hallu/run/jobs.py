"""Submit a run to a remote Ray cluster as a Ray Job, then follow, stop or list jobs.

`python -m hallu.launch ... cluster=lambda` (or runpod) composes and checks the config here, picks
the run id, checks the bucket (storage=s3 is required: workers on other machines write the
results), and submits `python -m hallu.launch <the same overrides> run_id=<id> cluster.kind=ray
cluster.address=null` with this repository as the job's working directory. Ray starts the job in
its copy of that directory, and `python -m` puts the current directory first on sys.path, so the
job imports the uploaded hallu (not whatever the node has installed) without editing sys.path.
Inside the cluster it joins the cluster it runs on (Ray sets RAY_ADDRESS for jobs) and keeps every
other setting of the preset, so the job is the same program as a local run.

The submission id is derived from the run id (`hallu-<run_id>`, then `-r2`, `-r3` for reruns that
resume it), so submitting a run that is already running follows that job instead of starting a
second driver. Secrets stay on the machine that has them: the job server records a job's runtime
environment and shows it to whoever can reach it, so only settings that name things travel with
the job (`PASSED`: which AWS profile and region, which hub endpoint); credentials (AWS keys, the
hub token) come from the cluster's own nodes, as infra/ sets them up (instance role, a profile in
the nodes' ~/.aws, or the node environment the cluster was started with).
"""

from __future__ import annotations

import os
import re
import shlex
import sys
import time
from pathlib import Path
from typing import Any

from hallu.config import ClusterCfg, Config
from hallu.errors import UserError

REPO = Path(__file__).resolve().parents[2]
DEFAULT_ADDRESS = "http://127.0.0.1:8265"  # the head's job server, through an SSH tunnel
# Settings that name a profile, a region or an endpoint: never a credential.
PASSED = ("AWS_PROFILE", "AWS_REGION", "AWS_DEFAULT_REGION", "HF_ENDPOINT", "HF_HUB_OFFLINE")
SECRET_PREFIXES = ("HF_", "HUGGING_FACE_", "AWS_")  # the rest of these stay here
# Not uploaded with the working directory (besides what .gitignore already excludes).
EXCLUDES = [".git", "runs/", "outputs/", "**/__pycache__", ".venv/", "*.parquet", ".ruff_cache/"]
ACTIVE = ("PENDING", "RUNNING")


def address(cluster: ClusterCfg | None = None) -> str:
    return (
        (cluster.address if cluster else None) or os.environ.get("RAY_ADDRESS") or DEFAULT_ADDRESS
    )


def client(addr: str) -> Any:
    from ray.exceptions import AuthenticationError
    from ray.job_submission import JobSubmissionClient

    try:
        return JobSubmissionClient(addr)
    except AuthenticationError:
        raise UserError(
            f"cluster.address={addr}: the cluster wants Ray's auth token. Fix: export "
            "RAY_AUTH_MODE=token and RAY_AUTH_TOKEN=<the cluster's token> (infra/README.md)"
        ) from None
    except (ConnectionError, RuntimeError, ValueError) as err:
        raise UserError(
            f"cluster.address={addr}: no Ray job server answers there ({_first_line(err)}). "
            "Fix: open the SSH tunnel to the head node (infra/README.md), or set cluster.address "
            "or RAY_ADDRESS to http://HOST:8265"
        ) from None


def passed_env() -> dict[str, str]:
    """The settings the job takes from this shell (`PASSED`): names, never credentials."""
    return {k: os.environ[k] for k in PASSED if os.environ.get(k)}


def kept_here() -> list[str]:
    """AWS and hub variables set here that the job does not get (credentials among them)."""
    return sorted(k for k in os.environ if k.startswith(SECRET_PREFIXES) and k not in PASSED)


def submission_id(run_id: str, attempt: int = 1) -> str:
    return f"hallu-{run_id}" + (f"-r{attempt}" if attempt > 1 else "")


def entrypoint(argv: list[str], run_id: str) -> str:
    """The job's command: the user's overrides (and -m for a multirun), minus the ones the job
    decides itself."""
    keep = [a for a in argv if not re.match(r"^(run_id|cluster\.kind|cluster\.address)=", a)]
    inside = [f"run_id={run_id}", "cluster.kind=ray", "cluster.address=null"]
    return shlex.join(["python", "-m", "hallu.launch", *keep, *inside])


def refuse_config_dir(cfg: Config, config_dir: str | None) -> None:
    from hallu.config import CONFIG_DIR_ENV

    if config_dir or os.environ.get(CONFIG_DIR_ENV):
        raise UserError(
            f"cluster={cfg.cluster.kind}: the job composes its config on the cluster, which "
            "cannot see your --config-dir; put those options in hallu/conf/ of the checkout"
        )


def submit_and_follow(cfg: Config, argv: list[str], run_id: str | None = None) -> int:
    """Submit (or rejoin) the run's job and follow it to the end; returns the job's exit code.

    A multirun (`argv` starting with -m) is one job under its multirun id `run_id`: its studies
    are checked by the job itself, each in its own folder below that id."""
    from hallu.store.study import new_run_id

    if cfg.mode == "plan":
        raise UserError(
            f"mode=plan with cluster={cfg.cluster.kind}: plan locally instead "
            "(drop cluster=..., the plan does not depend on it)"
        )
    if not (REPO / "pyproject.toml").is_file():  # an installed wheel: site-packages, no checkout
        raise UserError(
            f"cluster={cfg.cluster.kind} uploads a source checkout as the job's working "
            f"directory, and {REPO} is not one; run from a clone (git clone ...; pip install -e .)"
        )
    if cfg.storage.kind != "s3":
        raise UserError(
            f"cluster={cfg.cluster.kind} runs workers on other machines, whose local disks you "
            "cannot read: use storage=s3 storage.bucket=NAME"
        )
    from hallu.store.s3 import S3Store

    run_id = run_id or cfg.run_id or new_run_id(cfg)
    store = S3Store.open(cfg.storage, run_id)  # catch a wrong bucket before renting time on it
    if argv[:1] != ["-m"]:
        store.check_compatible(cfg)
    addr = address(cfg.cluster)
    jobs = client(addr)
    sid = submit(jobs, argv, run_id)
    print(f"hallu: run {run_id} -> {store.dir}; job {sid} on {addr}", file=sys.stderr)
    return follow(jobs, sid)


def submit(jobs: Any, argv: list[str], run_id: str) -> str:
    """Submit the run unless a job for it is active; return the submission id to follow."""
    mine = re.compile(re.escape(submission_id(run_id)) + r"(-r\d+)?")
    previous = [j for j in jobs.list_jobs() if mine.fullmatch(j.submission_id or "")]
    for j in previous:
        if j.status in ACTIVE:
            print(f"hallu: job {j.submission_id} is already running this run; following it")
            return j.submission_id
    env = passed_env()
    sid = submission_id(run_id, attempt=len(previous) + 1)
    jobs.submit_job(
        entrypoint=entrypoint(argv, run_id),
        submission_id=sid,
        runtime_env={"working_dir": str(REPO), "excludes": EXCLUDES, "env_vars": env},
        metadata={"hallu_run_id": run_id},
    )
    names = ", ".join(sorted(env)) or "none"
    print(f"hallu: submitted {sid}; passed through environment variables: {names}")
    if kept_here():
        print(
            f"hallu: not passed (they stay on this machine): {', '.join(kept_here())}; the job "
            "uses the cluster's own credentials (instance role, profile or node environment: "
            "infra/README.md)"
        )
    return sid


def follow(jobs: Any, sid: str, poll_s: float = 2.0) -> int:
    """Print the job's log as it grows until it ends; Ctrl-C detaches (the job keeps running)."""
    shown = 0
    try:
        while True:
            info = jobs.get_job_info(sid)
            logs = jobs.get_job_logs(sid)
            if len(logs) > shown:
                sys.stdout.write(logs[shown:])
                sys.stdout.flush()
                shown = len(logs)
            if info.status not in ACTIVE:
                break
            time.sleep(poll_s)
    except KeyboardInterrupt:
        print(
            f"\nhallu: detached; {sid} keeps running. Follow: hallu jobs follow {sid}; "
            f"stop: hallu jobs stop {sid}",
            file=sys.stderr,
        )
        return 130
    print(f"hallu: job {sid} {info.status}: {info.message or ''}".rstrip(), file=sys.stderr)
    if info.status == "SUCCEEDED":
        return 0
    m = re.search(r"exit code (\d+)", info.message or "")
    return int(m.group(1)) if m else 1


def stop(jobs: Any, sid: str) -> bool:
    return bool(jobs.stop_job(sid))


def describe_jobs(jobs: Any) -> list[str]:
    """One line per hallu job: id, status, run id, entry point (never its environment)."""
    lines = []
    for j in sorted(jobs.list_jobs(), key=lambda j: j.start_time or 0):
        if not (j.submission_id or "").startswith("hallu-"):
            continue
        started = time.strftime("%Y-%m-%d %H:%M", time.gmtime((j.start_time or 0) / 1000))
        lines.append(f"{j.submission_id}\t{j.status}\t{started} UTC\t{j.entrypoint}")
    return lines


def _first_line(err: Exception) -> str:
    text = str(err).strip()
    return text.splitlines()[0] if text else type(err).__name__
