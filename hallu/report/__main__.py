"""`python -m hallu.report RUN_DIR` (or `hallu report RUN_DIR`): the command line is
hallu/report/html.py; the document is built section by section in hallu/report/sections.py and
rendered by hallu/report/doc.py. `python -m hallu.report MULTIRUN_DIR` (a directory with
multirun.json) compares its studies side by side instead (hallu/report/multirun.py)."""

import sys


def main(argv: list[str]) -> int:
    from hallu.errors import EXIT_USER_ERROR, UserError
    from hallu.report.multirun import is_multirun

    try:
        multirun = bool(argv) and is_multirun(argv[0])
    except UserError as err:  # an s3:// location that cannot be read: one line
        print(f"hallu: error: {err}", file=sys.stderr)
        return EXIT_USER_ERROR
    if multirun:
        from hallu.report.multirun import main as report
    else:
        from hallu.report.html import main as report
    return report(argv)


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
