"""Local files written whole or not at all, with the process's normal permissions.

`create_new` never replaces (a result); `write_atomic` replaces in one step (a derived file, a
lease renewal). Both write a temp file beside the target, fsync it, give it the mode a plain
open() would (0644 under the usual umask 022; mkstemp's own is 0600), then link or rename it.
"""

from __future__ import annotations

import os
import tempfile
from pathlib import Path


def _file_mode() -> int:
    """What open() would give a new file under the current umask (0644 for umask 022)."""
    mask = os.umask(0o022)
    os.umask(mask)
    return 0o666 & ~mask


def _temp_beside(path: Path, data: bytes) -> str:
    path.parent.mkdir(parents=True, exist_ok=True)
    fd, tmp = tempfile.mkstemp(dir=path.parent, prefix=f".{path.name}.", suffix=".tmp")
    try:
        with os.fdopen(fd, "wb") as f:
            f.write(data)
            f.flush()
            os.fsync(f.fileno())
            os.fchmod(f.fileno(), _file_mode())  # mkstemp makes 0600
    except BaseException as err:  # a full disk, a signal: no half-written temp file left behind
        os.unlink(tmp)
        if isinstance(err, OSError) and err.filename is None:  # name the file it was for
            raise OSError(err.errno, err.strerror, str(path)) from None
        raise
    return tmp


def create_new(path: Path, data: bytes) -> None:
    """Create `path` holding `data`, complete or absent; FileExistsError if it exists."""
    tmp = _temp_beside(path, data)
    try:
        os.link(tmp, path)  # fails instead of replacing
    finally:
        os.unlink(tmp)


def write_atomic(path: Path, data: bytes) -> None:
    """Replace `path` with `data` in one step: readers see the old file or the new, never half."""
    tmp = _temp_beside(path, data)
    try:
        os.replace(tmp, path)
    except BaseException:
        os.unlink(tmp)
        raise
