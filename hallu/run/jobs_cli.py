"""`hallu jobs submit|follow|list|stop`: a run as a Ray Job on a remote cluster (hallu/run/jobs.py).

submit: `hallu jobs submit [-m] cluster=lambda storage=s3 storage.bucket=B ...` is `hallu run`
with those overrides, refusing (for one study) cluster kinds that run here instead. follow/stop
take a submission id (`hallu-<run_id>`); list prints every hallu job (never a job's environment:
it holds the passed-through credentials). Ctrl-C while following detaches; the job keeps going.
"""

from __future__ import annotations

import argparse
import sys
from collections.abc import Callable

from hallu.errors import EXIT_USER_ERROR, UserError
from hallu.run import jobs


def _parser() -> argparse.ArgumentParser:
    p = argparse.ArgumentParser(prog="hallu jobs", description=__doc__.split("\n")[0])
    sub = p.add_subparsers(dest="action", required=True, metavar="{submit,follow,list,stop}")
    s = sub.add_parser("submit", help="submit a run (cluster=lambda|runpod ...) and follow it")
    s.add_argument("overrides", nargs=argparse.REMAINDER, help="the run's Hydra overrides")
    for name, doc in [
        ("follow", "print a job's log until it ends"),
        ("stop", "stop a job (its stored shards are kept; resubmitting resumes)"),
        ("list", "list hallu jobs: id, status, start, entry point"),
    ]:
        a = sub.add_parser(name, help=doc)
        if name != "list":
            a.add_argument("submission_id", help="hallu-<run_id> (hallu jobs list shows them)")
        a.add_argument(
            "--address",
            default=None,
            help=f"job server URL (default: $RAY_ADDRESS, else {jobs.DEFAULT_ADDRESS})",
        )
    return p


def submit(argv: list[str]) -> int:
    from hallu.config import compose

    if argv[:1] in (["-m"], ["--multirun"]):  # one job for all studies: the launcher's path
        from hallu.run.launch import main

        return main(argv)
    cfg = compose(argv)
    if cfg.cluster.kind not in ("lambda", "runpod"):
        raise UserError(
            f"cluster={cfg.cluster.kind} runs on this machine (hallu run); to submit, add "
            "cluster=lambda or cluster=runpod (and cluster.address=URL if not tunnelled to "
            "127.0.0.1:8265)"
        )
    jobs.refuse_config_dir(cfg, None)
    return jobs.submit_and_follow(cfg, argv)


def main(argv: list[str]) -> int:
    # submit's arguments are the launcher's (-m, overrides), which argparse would try to read.
    if argv[:1] == ["submit"] and not {"-h", "--help"} & set(argv[1:]):
        return _handled(lambda: submit(argv[1:]))
    args = _parser().parse_args(argv)
    return _handled(lambda: _client_action(args))


def _handled(action: Callable[[], int]) -> int:
    try:
        return action()
    except UserError as err:
        print(f"hallu: error: {err}", file=sys.stderr)
        return EXIT_USER_ERROR


def _client_action(args: argparse.Namespace) -> int:
    """follow, stop or list, against the job server at --address (or $RAY_ADDRESS)."""
    client = jobs.client(args.address or jobs.address())
    if args.action == "follow":
        return jobs.follow(client, args.submission_id)
    if args.action == "stop":
        stopped = jobs.stop(client, args.submission_id)
        print(f"{args.submission_id}: {'stop requested' if stopped else 'was not running'}")
        return 0
    lines = jobs.describe_jobs(client)
    print("\n".join(lines) if lines else "no hallu jobs")
    return 0
