"""`hallu run|plan|report|status|bench|jobs ...`: the one command line (console script `hallu`).

Each subcommand hands its arguments to the module that owns them, imported only when chosen, so
`hallu --help` and `hallu status` load no torch. The older spellings keep working: `python -m
hallu.launch` is `hallu run`, `python -m hallu.report` is `hallu report`.
"""

from __future__ import annotations

import sys
from collections.abc import Callable

from hallu.errors import EXIT_USER_ERROR


def _run(argv: list[str]) -> int:
    from hallu.run.launch import main

    return main(argv)


def _plan(argv: list[str]) -> int:
    from hallu.run.launch import main

    # Last, so it wins over a mode= given earlier; --help and --cfg are answered before it counts.
    return main([*argv, "mode=plan"])


def _report(argv: list[str]) -> int:
    from hallu.report.__main__ import main

    return main(argv)


def _status(argv: list[str]) -> int:
    from hallu.status import main

    return main(argv)


def _bench(argv: list[str]) -> int:
    from hallu.bench import main

    return main(argv) or 0


def _jobs(argv: list[str]) -> int:
    from hallu.run.jobs_cli import main

    return main(argv)


COMMANDS: dict[str, tuple[str, Callable[[list[str]], int]]] = {
    "run": ("run a study: [--config-dir DIR] [-m] group=option key=value ...", _run),
    "plan": ("print the resolved config, work plan, time and cost; runs nothing", _plan),
    "report": ("build the HTML report of a run or multirun: hallu report RUN", _report),
    "status": ("progress, ETA, cost and workers of a run (local path or s3:// URL)", _status),
    "bench": ("time the patching engine against the hook baselines", _bench),
    "jobs": ("Ray Jobs on a remote cluster: submit, follow, list, stop", _jobs),
}


def usage() -> str:
    lines = ["usage: hallu COMMAND [ARGS ...]   (hallu COMMAND --help for each)", "", "commands:"]
    lines += [f"  {name:8s} {doc}" for name, (doc, _) in COMMANDS.items()]
    lines += ["", "e.g. hallu plan +sweep=debug; hallu run +sweep=debug; hallu report runs/RUN_ID"]
    return "\n".join(lines)


def main(argv: list[str] | None = None) -> int:
    argv = sys.argv[1:] if argv is None else list(argv)
    if not argv or argv[0] in ("-h", "--help", "help"):
        print(usage(), file=sys.stdout if argv else sys.stderr)
        return 0 if argv else EXIT_USER_ERROR
    name, rest = argv[0], argv[1:]
    if name in COMMANDS:
        return COMMANDS[name][1](rest)
    from hallu.suggest import closest

    if "=" in name or name.startswith("-"):  # an override or flag with no command before it
        fix = f"hallu run {' '.join(argv)}"
    else:
        near = closest(name, list(COMMANDS))
        fix = f"hallu {near} {' '.join(rest)}".rstrip() if near else "hallu --help"
    print(f"hallu: error: unknown command '{name}'; did you mean: {fix}", file=sys.stderr)
    return EXIT_USER_ERROR


def cli() -> None:
    """The console script's entry (pyproject.toml [project.scripts]) and `python -m hallu`'s."""
    sys.exit(main())
