"""`hallu jobs submit|follow|list|stop`: a run as a Ray Job on a remote cluster (hallu/run/jobs.py).

submit: `hallu jobs submit cluster=lambda storage=s3 storage.bucket=B ...` is `hallu run` with
those overrides, refusing cluster kinds that run here instead. follow/stop take a submission id
(`hallu-<run_id>`); list prints every hallu job (never a job's environment: it holds the
passed-through credentials). Ctrl-C while following detaches; the job keeps going.
"""

from __future__ import annotations

import argparse
import sys

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
    args = _parser().parse_args(argv)
    try:
        if args.action == "submit":
            return submit(args.overrides)
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
    except UserError as err:
        print(f"hallu: error: {err}", file=sys.stderr)
        return EXIT_USER_ERROR
