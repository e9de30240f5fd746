"""Run directories: `run.json` first, then one Parquet file per shard and its done marker.

Layout of `<storage.root>/<run_id>/`:
  run.json                     resolved config, study identity, versions, git sha (written first,
                               created exclusively: never replaced)
  .lease                       the driver that owns the run (hallu/store/lease.py)
  shards/<shard_id>.parquet    one per finished shard, with page checksums
  done/<shard_id>.json         its done marker: rows, byte length, SHA-256 (integrity.py); the
                               markers, not the files, say which shards are done
  quarantine/                  shards that failed their checks, moved aside on resume (kept)
  summary.md, summary.json, *.png   written by the summary from the shards
  behavior/responses/<chunk_id>.parquet   Experiment 1 answers (behavior/), never replaced,
  behavior/responses/_done/<chunk_id>.json  their done markers, as shards' (the "_" keeps them
                               out of a Parquet dataset read of the folder)
  mechanism/<kind>/<unit_id>.parquet      mechanism units, markers in mechanism/<kind>/_done/

A file appears atomically (written to a temp name, then hard-linked into place, which fails if the
name exists), so a crash leaves no half-written result and no result is replaced. Files get the
process's umask (0644 for the usual 022), so colleagues and other nodes sharing the folder can
read them. A run written before done markers existed (no done/) has each unit's file taken as
done, and gets markers on its first resume.
"""

from __future__ import annotations

import json
import os
from datetime import datetime, timezone
from pathlib import Path
from typing import Any

import pyarrow as pa

from hallu.config import Config
from hallu.errors import UserError
from hallu.store import integrity
from hallu.store.base import ReadsShards
from hallu.store.files import create_new, write_atomic
from hallu.store.lease import LocalLease
from hallu.store.study import run_metadata, same_study


class LocalStore(ReadsShards):
    """A run directory on a local (or shared) filesystem; implements hallu.store.base.Store."""

    def __init__(self, root: str | Path, run_id: str):
        self.run_id = run_id
        self.dir = Path(root).expanduser() / run_id
        self.shard_dir = self.dir / "shards"
        self.done_dir = self.dir / "done"
        self.lease = LocalLease(self.dir / ".lease")

    # -- run.json ----------------------------------------------------------------------------

    def read_meta(self) -> dict[str, Any] | None:
        raw = self.read_file("run.json")
        return None if raw is None else json.loads(raw)

    def check_compatible(self, cfg: Config, identity: dict[str, str] | None = None) -> bool:
        """True if this run exists with the same study (resume); UserError if it differs."""
        meta = self.read_meta()
        if meta is not None:
            return same_study(meta, cfg, self.run_id, self.dir, identity)
        if self.dir.exists() and any(p.name != ".lease" for p in self.dir.iterdir()):
            raise UserError(
                f"run_id={self.run_id}: {self.dir} exists without run.json; "
                "choose another run_id or storage.root"
            )
        return False

    def create(self, cfg: Config, extra: dict[str, Any]) -> None:
        """Write run.json (before any shard) unless the run exists already."""
        if self.check_compatible(cfg, extra.get("identity")):
            self._mark_legacy()
            return
        self.shard_dir.mkdir(parents=True, exist_ok=True)
        self.done_dir.mkdir(exist_ok=True)
        meta = json.dumps(run_metadata(cfg, self.run_id, extra), indent=2).encode()
        try:
            create_new(self.dir / "run.json", meta)
        except FileExistsError:  # another launch created it first: same study, or an error
            self.check_compatible(cfg, extra.get("identity"))

    # -- units: shards and tables, each with a done marker ------------------------------------

    def _paths(self, folder: str, stem: str) -> tuple[Path, Path]:
        """A unit's file and its done marker: shards/ keeps its markers in done/ (the run's
        first layout), every other folder in its own _done/ (which Parquet dataset readers skip)."""
        marks = self.done_dir if folder == "shards" else self.dir / folder / "_done"
        return self.dir / folder / f"{stem}.parquet", marks / f"{stem}.json"

    def _done(self, folder: str) -> set[str]:
        files, marker = self._paths(folder, "x")
        if marker.parent.is_dir():
            return {p.stem for p in marker.parent.glob("*.json")}
        if not files.parent.is_dir():
            return set()
        return {p.stem for p in files.parent.glob("*.parquet")}  # a run from before markers

    def _note(self, folder: str, stem: str) -> dict[str, Any] | None:
        path = self._paths(folder, stem)[1]
        return integrity.read_marker(stem, path.read_bytes()) if path.is_file() else None

    def _write(self, folder: str, stem: str, table: pa.Table) -> Path:
        """Store a unit and then its marker; FileExistsError if it is already stored."""
        self.lease.check_writer()  # a worker whose driver is gone writes nothing
        data = integrity.encode(table)
        path, mark = self._paths(folder, stem)
        if path.parent.exists() and not path.parent.is_dir():
            # Not FileExistsError: callers read that as "this result is already stored".
            raise NotADirectoryError(f"{path.parent} is not a directory")
        try:
            create_new(path, data)
        except FileExistsError:
            if mark.exists():
                raise FileExistsError(f"{path} exists; results are never replaced") from None
            data = self._adopt(folder, stem, path, data)
        create_new(mark, integrity.marker(stem, data, table.num_rows))  # exists: stored already
        return path

    def _adopt(self, folder: str, stem: str, path: Path, data: bytes) -> bytes:
        """A file without a marker (its writer died between the two, or a run from before
        markers): keep it if it reads back whole, else move it aside and store ours. Returns the
        bytes now stored."""
        old = path.read_bytes()
        try:
            integrity.decode(stem, old, None, None)
            return old
        except integrity.ShardUnreadable as err:
            self._quarantine(folder, stem, err.why)
            create_new(path, data)
            return data

    def _read(self, folder: str, stem: str, table_schema: pa.Schema | None) -> pa.Table:
        path = self._paths(folder, stem)[0]
        if not path.is_file():
            raise integrity.ShardUnreadable(stem, "marked done, but its file is missing")
        return integrity.decode(stem, path.read_bytes(), self._note(folder, stem), table_schema)

    def _strays(self, folder: str) -> list[str]:
        """Names in a unit folder (and its markers' folder) that are no done unit's."""
        done = self._done(folder)
        path, mark = self._paths(folder, "x")
        out = []
        for d, suffix in ((path.parent, ".parquet"), (mark.parent, ".json")):
            if d.is_dir():
                out += [
                    str(p.relative_to(self.dir))
                    for p in d.iterdir()
                    if p != mark.parent
                    and not (p.name.endswith(suffix) and p.name.removesuffix(suffix) in done)
                ]
        return sorted(out)

    def _quarantine(self, folder: str, stem: str, why: str) -> None:
        """Move a unit and its marker to quarantine/ (kept, not read), so it is computed again."""
        stamp = datetime.now(timezone.utc).strftime("%Y%m%dT%H%M%S%f")
        dest = self.dir / "quarantine"
        dest.mkdir(exist_ok=True)
        path, mark = self._paths(folder, stem)
        for src in (mark, path):  # marker first: never done without a file
            if src.exists():
                os.rename(src, dest / f"{stem}.{stamp}{src.suffix}")
        create_new(dest / f"{stem}.{stamp}.why", why.encode())

    def _mark_legacy(self) -> None:
        """Resuming a run from before done markers: mark each unit that reads back whole, in
        shards/ and in the behaviour and mechanism folders."""
        folders = ["shards", "behavior/responses"]
        mechanism = self.dir / "mechanism"
        if mechanism.is_dir():
            folders += [f"mechanism/{d.name}" for d in mechanism.iterdir() if d.is_dir()]
        planned = {s["shard_id"] for s in (self.read_meta() or {}).get("plan") or []}
        for folder in folders:
            files, mark = self._paths(folder, "x")
            if mark.parent.is_dir() or not files.parent.is_dir():
                continue
            mark.parent.mkdir()
            for path in sorted(files.parent.glob("*.parquet")):
                if folder == "shards" and planned and path.stem not in planned:
                    continue  # a copy or leftover: stays unmarked, so it is never read
                data = path.read_bytes()
                try:
                    rows = integrity.decode(path.stem, data, None, None).num_rows
                except integrity.ShardUnreadable as err:
                    self._quarantine(folder, path.stem, err.why)
                    continue
                note = integrity.marker(path.stem, data, rows)
                create_new(self._paths(folder, path.stem)[1], note)

    # -- other tables (behaviour answers, mechanism units) and files -------------------------

    def write_file(self, name: str, data: bytes) -> Path:
        path = self.dir / name
        write_atomic(path, data)
        return path

    def read_file(self, name: str) -> bytes | None:
        path = self.dir / name
        return path.read_bytes() if path.is_file() else None
