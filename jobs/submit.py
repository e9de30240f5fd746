"""Submit a run as a Ray Job and follow it: `python jobs/submit.py cluster=lambda storage=s3 ...`.

The same as `python -m hallu.launch ...` with cluster=lambda or cluster=runpod (it refuses other
cluster kinds, which run here rather than being submitted). Ctrl-C detaches; the job keeps going.
"""

import sys

from _common import run

from hallu.config import compose
from hallu.errors import UserError
from hallu.run.jobs import submit_and_follow


def main() -> int:
    argv = sys.argv[1:]
    cfg = compose(argv)
    if cfg.cluster.kind not in ("lambda", "runpod"):
        raise UserError(
            f"cluster={cfg.cluster.kind} runs on this machine; to submit, choose "
            "cluster=lambda or cluster=runpod (and set cluster.address if not tunnelled to "
            "127.0.0.1:8265)"
        )
    return submit_and_follow(cfg, argv)


if __name__ == "__main__":
    run(main)
