"""The run's console log: what the launcher prints, also saved beside run.json as console.log.

`tee()` copies sys.stdout and sys.stderr into a buffer while the run goes on (Ray's forwarded
worker lines included, since Ray prints them through this process's streams); `save()` writes
it into the store at the end, after the log of earlier attempts at the same run (a resume
appends, it does not erase). Progress bars redraw a line with carriage returns; only each
line's last drawing is kept. Written only once run.json exists: a folder holding a log but no
run.json would be refused as "exists without run.json" by the next attempt.
"""

from __future__ import annotations

import io
import re
import sys
from collections.abc import Iterator
from contextlib import contextmanager
from typing import Any, TextIO

NAME = "console.log"


class _Tee(io.TextIOBase):
    def __init__(self, stream: TextIO, copy: io.StringIO) -> None:
        self.stream, self.copy = stream, copy

    def write(self, text: str) -> int:
        self.copy.write(text)
        return self.stream.write(text)

    def flush(self) -> None:
        self.stream.flush()

    def isatty(self) -> bool:  # progress bars keep drawing as they would on the terminal
        return self.stream.isatty()

    def fileno(self) -> int:
        return self.stream.fileno()

    @property
    def encoding(self) -> str:  # type: ignore[override]
        return getattr(self.stream, "encoding", "utf-8")

    def __getattr__(self, name: str) -> Any:  # buffer, errors, ...: the terminal's own
        if name in ("stream", "copy"):  # not set yet (a copy being built): no recursion
            raise AttributeError(name)
        return getattr(self.stream, name)


@contextmanager
def tee() -> Iterator[io.StringIO]:
    """Copy everything written to sys.stdout and sys.stderr into the yielded buffer."""
    copy = io.StringIO()
    out, err = sys.stdout, sys.stderr
    sys.stdout, sys.stderr = _Tee(out, copy), _Tee(err, copy)  # type: ignore[assignment]
    try:
        yield copy
    finally:
        sys.stdout, sys.stderr = out, err


def clean(text: str) -> str:
    """Each line as last drawn: the text after its last carriage return, ANSI colours removed."""
    text = re.sub(r"\x1b\[[0-9;]*[A-Za-z]", "", text)
    return "\n".join(line.rsplit("\r", 1)[-1] for line in text.split("\n"))


def save(store: Any, copy: io.StringIO) -> None:
    """Append this attempt's console output to the run's console.log (if run.json exists)."""
    try:
        if store.read_meta() is None:
            return
        before = store.read_file(NAME) or b""
        store.write_file(NAME, before + clean(copy.getvalue()).encode())
    except Exception as err:  # noqa: BLE001 - the log must never hide the run's own outcome
        print(f"hallu: {NAME} not saved ({type(err).__name__}: {err})", file=sys.stderr)
