"""List hallu jobs (id, status, start, entry point): `python jobs/list.py [--address URL]`.

Never prints a job's environment (it holds the passed-through credentials).
"""

from _common import client, parser, run

from hallu.run.jobs import describe_jobs


def main() -> int:
    a = parser(__doc__).parse_args()
    lines = describe_jobs(client(a.address))
    print("\n".join(lines) if lines else "no hallu jobs")
    return 0


if __name__ == "__main__":
    run(main)
