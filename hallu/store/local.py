"""Run directories: `run.json` first, then one Parquet file per shard, never overwritten.

Layout of `<storage.root>/<run_id>/`:
  run.json                     resolved config, study hash, versions, git sha (written first)
  shards/<shard_id>.parquet    one per finished shard; its presence marks the shard done
  summary.md, summary.json, *.png   written by aggregate.py from the shards
  behavior/responses/<chunk_id>.parquet   Experiment 1 answers (behavior.py), same rules as shards
  behavior/summary.{json,md}, behavior/*.png   written by behavior_report.py from those

A shard file appears atomically (written to a temp name, then hard-linked into place, which fails
if the name exists), so a crash leaves no half-written result and no result is replaced.
"""

from __future__ import annotations

import json
import os
import platform
import subprocess
import tempfile
from collections.abc import Iterator
from datetime import datetime, timezone
from importlib import metadata
from pathlib import Path
from typing import Any

import pyarrow as pa
import pyarrow.parquet as pq

from hallu.config import Config
from hallu.errors import UserError
from hallu.store import schema

PACKAGES = (
    "hallu",
    "torch",
    "transformers",
    "tokenizers",
    "pyarrow",
    "pydantic",
    "hydra-core",
    "ray",
    "boto3",
)


def new_run_id(cfg: Config) -> str:
    stamp = datetime.now(timezone.utc).strftime("%Y%m%d-%H%M%S")
    return f"{stamp}-{cfg.study_hash()[:6]}"


def versions() -> dict[str, str | None]:
    out: dict[str, str | None] = {"python": platform.python_version()}
    for name in PACKAGES:
        try:
            out[name] = metadata.version(name)
        except metadata.PackageNotFoundError:
            out[name] = None
    return out


def git_sha() -> str | None:
    here = Path(__file__).resolve().parent
    try:
        sha = subprocess.run(
            ["git", "rev-parse", "HEAD"], cwd=here, capture_output=True, text=True, timeout=5
        ).stdout.strip()
        dirty = subprocess.run(
            ["git", "status", "--porcelain", "--untracked-files=no"],
            cwd=here,
            capture_output=True,
            text=True,
            timeout=5,
        ).stdout.strip()
    except (OSError, subprocess.SubprocessError):
        return None
    return (sha + ("-dirty" if dirty else "")) or None


def run_metadata(cfg: Config, run_id: str, extra: dict[str, Any]) -> dict[str, Any]:
    """What run.json holds, whatever the store: config, versions, git sha (no credentials)."""
    return {
        "run_id": run_id,
        "study_hash": cfg.study_hash(),
        "created": datetime.now(timezone.utc).isoformat(timespec="seconds"),
        "config": cfg.model_dump(),
        "versions": versions(),
        "git_sha": git_sha(),
        "host": platform.node(),
        **extra,
    }


def same_study(old_meta: dict[str, Any], cfg: Config, run_id: str, where: object) -> bool:
    """True if an existing run.json is of this study (so the run resumes); UserError if not."""
    if old_meta.get("study_hash") != cfg.study_hash():
        raise UserError(
            f"run_id={run_id}: {where} holds a run with a different config "
            f"(study hash {old_meta.get('study_hash')} vs {cfg.study_hash()}); its results are "
            "kept. Fix: choose a new run_id, or drop run_id= for a fresh one"
        )
    return True


class LocalStore:
    """A run directory on a local (or shared) filesystem; implements hallu.store.base.Store."""

    def __init__(self, root: str | Path, run_id: str):
        self.run_id = run_id
        self.dir = Path(root).expanduser() / run_id
        self.shard_dir = self.dir / "shards"

    def read_meta(self) -> dict[str, Any] | None:
        raw = self.read_file("run.json")
        return None if raw is None else json.loads(raw)

    def check_compatible(self, cfg: Config) -> bool:
        """True if this run exists with the same study (resume); UserError if it differs."""
        meta = self.read_meta()
        if meta is not None:
            return same_study(meta, cfg, self.run_id, self.dir)
        if self.dir.exists() and any(self.dir.iterdir()):
            raise UserError(
                f"run_id={self.run_id}: {self.dir} exists without run.json; "
                "choose another run_id or storage.root"
            )
        return False

    def create(self, cfg: Config, extra: dict[str, Any]) -> None:
        """Write run.json (before any shard) unless the run exists already."""
        if self.check_compatible(cfg):
            return
        self.shard_dir.mkdir(parents=True, exist_ok=True)
        meta = run_metadata(cfg, self.run_id, extra)
        write_atomic(self.dir / "run.json", json.dumps(meta, indent=2).encode())

    def done_shards(self) -> set[str]:
        if not self.shard_dir.is_dir():
            return set()
        return {p.stem for p in self.shard_dir.glob("*.parquet")}

    def write_shard(self, shard_id: str, table: pa.Table) -> Path:
        return self.write_table(f"shards/{shard_id}.parquet", table)

    def read_shards(self) -> Iterator[tuple[str, pa.Table]]:
        for shard_id in sorted(self.done_shards()):
            data = (self.shard_dir / f"{shard_id}.parquet").read_bytes()
            yield shard_id, schema.read_parquet(data, schema.SCHEMA)

    def read_results(self) -> pa.Table:
        return schema.concat(t for _, t in self.read_shards())

    def write_table(self, name: str, table: pa.Table) -> Path:
        """Write `<run>/<name>` (e.g. behavior/responses/x.parquet) atomically, never replacing."""
        final = self.dir / name
        if final.parent.exists() and not final.parent.is_dir():
            # Not FileExistsError: callers read that as "this result is already stored".
            raise NotADirectoryError(f"{final.parent} is not a directory")
        final.parent.mkdir(parents=True, exist_ok=True)
        fd, tmp = tempfile.mkstemp(dir=final.parent, prefix=f".{final.name}.", suffix=".tmp")
        os.close(fd)
        try:
            pq.write_table(table, tmp)
            os.link(tmp, final)  # fails with FileExistsError instead of replacing a result
        finally:
            os.unlink(tmp)
        return final

    def read_tables(self, folder: str, table_schema: pa.Schema | None) -> pa.Table:
        """Every Parquet file in `<run>/<folder>`, in the explicit schema (None: their own)."""
        names = sorted(self.table_names(folder))
        return schema.concat(
            (
                schema.read_parquet((self.dir / folder / f"{n}.parquet").read_bytes(), table_schema)
                for n in names
            ),
            table_schema,
        )

    def table_names(self, folder: str) -> set[str]:
        """Stems of the Parquet files in `<run>/<folder>`: the finished units of that work."""
        d = self.dir / folder
        return {p.stem for p in d.glob("*.parquet")} if d.is_dir() else set()

    def write_file(self, name: str, data: bytes) -> Path:
        path = self.dir / name
        write_atomic(path, data)
        return path

    def read_file(self, name: str) -> bytes | None:
        path = self.dir / name
        return path.read_bytes() if path.is_file() else None


def write_atomic(path: Path, data: bytes) -> None:
    """Replace `path` with `data` in one step: readers see the old file or the new, never half."""
    path.parent.mkdir(parents=True, exist_ok=True)
    fd, tmp = tempfile.mkstemp(dir=path.parent, prefix=f".{path.name}.", suffix=".tmp")
    with os.fdopen(fd, "wb") as f:
        f.write(data)
    os.replace(tmp, path)
