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
  behavior/responses/<chunk_id>.parquet   Experiment 1 answers (behavior/), never replaced

A file appears atomically (written to a temp name, then hard-linked into place, which fails if the
name exists), so a crash leaves no half-written result and no result is replaced. Files get the
process's umask (0644 for the usual 022), so colleagues and other nodes sharing the folder can
read them. A run written before done markers existed (no done/) has each shard file taken as done.
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
from hallu.store import integrity, schema
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
            self._mark_legacy_shards()
            return
        self.shard_dir.mkdir(parents=True, exist_ok=True)
        self.done_dir.mkdir(exist_ok=True)
        meta = json.dumps(run_metadata(cfg, self.run_id, extra), indent=2).encode()
        try:
            create_new(self.dir / "run.json", meta)
        except FileExistsError:  # another launch created it first: same study, or an error
            self.check_compatible(cfg, extra.get("identity"))

    # -- shards ------------------------------------------------------------------------------

    def done_shards(self) -> set[str]:
        if self.done_dir.is_dir():
            return {p.stem for p in self.done_dir.glob("*.json")}
        if not self.shard_dir.is_dir():
            return set()
        return {p.stem for p in self.shard_dir.glob("*.parquet")}  # a run from before markers

    def marker(self, shard_id: str) -> dict[str, Any] | None:
        path = self.done_dir / f"{shard_id}.json"
        return json.loads(path.read_bytes()) if path.is_file() else None

    def write_shard(self, shard_id: str, table: pa.Table) -> Path:
        """Store the shard and then its marker; FileExistsError if it is already stored."""
        self.lease.check_writer()  # a worker whose driver is gone writes nothing
        data = integrity.encode(table)
        path = self.shard_dir / f"{shard_id}.parquet"
        try:
            create_new(path, data)
        except FileExistsError:
            if self.marker(shard_id) is not None:
                raise FileExistsError(f"{path} exists; shard already stored") from None
            data = self._adopt(shard_id, path, data)
        note = integrity.marker(shard_id, data, table.num_rows)
        create_new(self.done_dir / f"{shard_id}.json", note)  # FileExistsError: stored already
        return path

    def _adopt(self, shard_id: str, path: Path, data: bytes) -> bytes:
        """A shard file without a marker (its writer died between the two): keep it if it reads
        back whole, else move it aside and store ours. Returns the bytes now stored."""
        old = path.read_bytes()
        try:
            integrity.decode(shard_id, old, None, None)
            return old
        except integrity.ShardUnreadable as err:
            self.quarantine(shard_id, err.why)
            create_new(path, data)
            return data

    def read_shard(self, shard_id: str) -> pa.Table:
        """One done shard's rows, checked against its marker; ShardUnreadable if they fail."""
        path = self.shard_dir / f"{shard_id}.parquet"
        if not path.is_file():
            raise integrity.ShardUnreadable(shard_id, "marked done, but its file is missing")
        return integrity.decode(shard_id, path.read_bytes(), self.marker(shard_id), schema.SCHEMA)

    def stray_files(self) -> list[str]:
        """Files under shards/ and done/ that are not a done shard or its marker (e.g. copies)."""
        done = self.done_shards()
        out = []
        for folder, suffix in ((self.shard_dir, ".parquet"), (self.done_dir, ".json")):
            if folder.is_dir():
                out += [
                    f"{folder.name}/{p.name}"
                    for p in folder.iterdir()
                    if not (p.name.endswith(suffix) and p.name.removesuffix(suffix) in done)
                ]
        return sorted(out)

    def quarantine(self, shard_id: str, why: str) -> None:
        """Move a shard and its marker to quarantine/ (kept, not read), so it is computed again."""
        stamp = datetime.now(timezone.utc).strftime("%Y%m%dT%H%M%S%f")
        dest = self.dir / "quarantine"
        dest.mkdir(exist_ok=True)
        for src, suffix in (
            (self.done_dir / f"{shard_id}.json", ".json"),  # marker first: never done, no file
            (self.shard_dir / f"{shard_id}.parquet", ".parquet"),
        ):
            if src.exists():
                os.rename(src, dest / f"{shard_id}.{stamp}{suffix}")
        create_new(dest / f"{shard_id}.{stamp}.why", why.encode())

    def _mark_legacy_shards(self) -> None:
        """Resuming a run from before done markers: mark each shard that reads back whole."""
        if self.done_dir.is_dir() or not self.shard_dir.is_dir():
            return
        self.done_dir.mkdir()
        planned = {s["shard_id"] for s in (self.read_meta() or {}).get("plan") or []}
        for path in sorted(self.shard_dir.glob("*.parquet")):
            if planned and path.stem not in planned:
                continue  # a copy or leftover: stays unmarked, so it is never read
            data = path.read_bytes()
            try:
                rows = integrity.decode(path.stem, data, None, None).num_rows
            except integrity.ShardUnreadable as err:
                self.quarantine(path.stem, err.why)
                continue
            create_new(self.done_dir / f"{path.stem}.json", integrity.marker(path.stem, data, rows))

    # -- other tables and files --------------------------------------------------------------

    def write_table(self, name: str, table: pa.Table) -> Path:
        """Write `<run>/<name>` (e.g. behavior/responses/x.parquet) atomically, never replacing."""
        final = self.dir / name
        if final.parent.exists() and not final.parent.is_dir():
            # Not FileExistsError: callers read that as "this result is already stored".
            raise NotADirectoryError(f"{final.parent} is not a directory")
        create_new(final, integrity.encode(table))
        return final

    def table_names(self, folder: str) -> set[str]:
        """Stems of the Parquet files in `<run>/<folder>`: the finished units of that work."""
        d = self.dir / folder
        return {p.stem for p in d.glob("*.parquet")} if d.is_dir() else set()

    def read_tables(self, folder: str, table_schema: pa.Schema | None) -> pa.Table:
        """Every Parquet file in `<run>/<folder>`, in the explicit schema (None: their own)."""
        names = sorted(self.table_names(folder))
        return schema.concat(
            (
                integrity.decode(n, (self.dir / folder / f"{n}.parquet").read_bytes(), None, None)
                for n in names
            ),
            table_schema,
        )

    def write_file(self, name: str, data: bytes) -> Path:
        path = self.dir / name
        write_atomic(path, data)
        return path

    def read_file(self, name: str) -> bytes | None:
        path = self.dir / name
        return path.read_bytes() if path.is_file() else None
