"""Print a job's log until it ends: `python jobs/follow.py hallu-<run_id> [--address URL]`."""

from _common import client, parser, run

from hallu.run.jobs import follow


def main() -> int:
    p = parser(__doc__)
    p.add_argument("submission_id")
    a = p.parse_args()
    return follow(client(a.address), a.submission_id)


if __name__ == "__main__":
    run(main)
