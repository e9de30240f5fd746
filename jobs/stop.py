"""Stop a job: `python jobs/stop.py hallu-<run_id> [--address URL]`.

Stored shards are kept; submitting the same run again (same run_id) resumes it.
"""

from _common import client, parser, run

from hallu.run.jobs import stop


def main() -> int:
    p = parser(__doc__)
    p.add_argument("submission_id")
    a = p.parse_args()
    stopped = stop(client(a.address), a.submission_id)
    print(f"{a.submission_id}: {'stop requested' if stopped else 'was not running'}")
    return 0


if __name__ == "__main__":
    run(main)
