"""Shared argument handling for the small job commands in this folder.

They import the installed hallu (`pip install -e .`), like any other program that uses it.
"""

import argparse
import sys

from hallu.errors import EXIT_USER_ERROR, UserError
from hallu.run import jobs


def parser(doc: str) -> argparse.ArgumentParser:
    p = argparse.ArgumentParser(description=doc)
    p.add_argument(
        "--address",
        default=None,
        help=f"job server URL (default: $RAY_ADDRESS, else {jobs.DEFAULT_ADDRESS})",
    )
    return p


def run(fn) -> None:
    try:
        sys.exit(fn() or 0)
    except UserError as err:
        print(f"hallu: error: {err}", file=sys.stderr)
        sys.exit(EXIT_USER_ERROR)


def client(address: str | None):
    return jobs.client(address or jobs.address())
