"""The store contract: what every run store (a local directory, an S3 prefix) offers its callers.

Launch, executors, the behaviour experiment, the summary and the report type against `Store`,
never against one implementation. `LocalStore` (hallu/store/local.py) and `S3Store`
(hallu/store/s3.py) implement it; hallu/store/factory.py picks one (`store_for`, `store_at`), in
its own module because both stores import this one.

Results (shards, behaviour tables) are written once and never replaced; `done_shards` is the one
answer to "which shards are finished", used by resume and by the report alike.
"""

from __future__ import annotations

import sys
from collections.abc import Iterator
from pathlib import Path
from typing import TYPE_CHECKING, Any, Protocol, runtime_checkable

import pyarrow as pa

from hallu.errors import UserError
from hallu.store import integrity, schema
from hallu.store.lease import Lease

if TYPE_CHECKING:
    from hallu.config import Config


class ReadsShards:
    """Every unit-facing method of a store (shards, behaviour chunks, mechanism units), written
    once from six primitives each store implements for its medium: `_done(folder)` (stems with a
    done marker), `_note(folder, stem)` (the marker), `_write(folder, stem, table)` (file, then
    marker), `_read(folder, stem, schema)` (checked against the marker), `_strays(folder)` and
    `_quarantine(folder, stem, why)`."""

    def _done(self, folder: str) -> set[str]:
        raise NotImplementedError

    def _note(self, folder: str, stem: str) -> dict[str, Any] | None:
        raise NotImplementedError

    def _write(self, folder: str, stem: str, table: pa.Table) -> str | Path:
        raise NotImplementedError

    def _read(self, folder: str, stem: str, table_schema: pa.Schema | None) -> pa.Table:
        raise NotImplementedError

    def _strays(self, folder: str) -> list[str]:
        raise NotImplementedError

    def _quarantine(self, folder: str, stem: str, why: str) -> None:
        raise NotImplementedError

    def done_shards(self) -> set[str]:
        return self._done("shards")

    def marker(self, shard_id: str) -> dict[str, Any] | None:
        return self._note("shards", shard_id)

    def write_shard(self, shard_id: str, table: pa.Table) -> str | Path:
        return self._write("shards", shard_id, table)

    def read_shard(self, shard_id: str) -> pa.Table:
        """One done shard's rows, checked against its marker; ShardUnreadable if they fail."""
        return self._read("shards", shard_id, schema.SCHEMA)

    def read_shards(self) -> Iterator[tuple[str, pa.Table]]:
        for shard_id in sorted(self.done_shards()):
            yield shard_id, self.read_shard(shard_id)

    def read_results(self) -> pa.Table:
        return schema.concat(t for _, t in self.read_shards())

    def stray_files(self) -> list[str]:
        """Files under shards/ and its markers that are not a done shard or its marker."""
        return self._strays("shards")

    def quarantine(self, shard_id: str, why: str) -> None:
        self._quarantine("shards", shard_id, why)

    def write_table(self, name: str, table: pa.Table) -> str | Path:
        """`<run>/<name>` (e.g. behavior/responses/x.parquet), then its marker; never replaced."""
        folder, _, stem = name.removesuffix(".parquet").rpartition("/")
        return self._write(folder, stem, table)

    def table_names(self, folder: str) -> set[str]:
        """The finished units of `<run>/<folder>`: the stems with a done marker."""
        return self._done(folder)

    def read_table(self, folder: str, stem: str) -> pa.Table:
        """One finished unit's table (its own schema), checked against its marker."""
        return self._read(folder, stem, None)

    def table_strays(self, folder: str) -> list[str]:
        return self._strays(folder)

    def quarantine_table(self, folder: str, stem: str, why: str) -> None:
        self._quarantine(folder, stem, why)

    def read_tables(
        self, folder: str, table_schema: pa.Schema | None, planned: list[str] | None = None
    ) -> pa.Table:
        """Every finished unit of `folder`, each checked against its done marker, in one table;
        UserError naming the units that are planned but missing, or fail their checks. Files that
        are no finished (or no planned) unit are ignored with a warning naming them."""
        done = self.table_names(folder)
        names = sorted(done if planned is None else done & set(planned))
        ignored = self.table_strays(folder) + [f"{folder}/{n}.parquet" for n in done - set(names)]
        bad: dict[str, str] = {}
        tables = []
        for n in names:
            try:
                tables.append(self.read_table(folder, n))
            except integrity.ShardUnreadable as err:
                bad[n] = err.why
        missing = sorted(set(planned or []) - done)
        if missing or bad:
            parts = [f"{len(missing)} missing ({few(missing)})"] if missing else []
            if bad:
                shown = "; ".join(f"{k}: {v}" for k, v in list(bad.items())[:3])
                parts.append(f"{len(bad)} failed their checks ({shown})")
            raise UserError(
                f"{self.dir}/{folder}: the stored units do not match the run's plan: "
                f"{', '.join(parts)}. Fix: rerun the launch with run_id={self.run_id} to compute "
                "them again (failed files are moved to quarantine/, not deleted)"
            )
        if ignored:
            print(
                f"hallu: warning: {self.dir}: ignored {len(ignored)} file(s) that are no planned "
                f"unit: {few(sorted(ignored))}",
                file=sys.stderr,
            )
        return schema.concat(tables, table_schema)


@runtime_checkable
class Store(Protocol):
    """One run's storage: run.json, shards (with done markers), tables and derived files."""

    run_id: str
    lease: Lease  # one writer per run (hallu/store/lease.py)

    @property
    def dir(self) -> str | Path:
        """Where the run lives, for messages (a local path or an s3:// URL)."""
        ...

    def check_compatible(self, cfg: Config, identity: dict[str, str] | None = None) -> bool:
        """True if the run exists with this study (resume), False if new; UserError if not."""
        ...

    def create(self, cfg: Config, extra: dict[str, Any]) -> None:
        """Write run.json (before any shard) unless the run exists already."""
        ...

    def read_meta(self) -> dict[str, Any] | None:
        """The run's run.json, or None if there is none."""
        ...

    def done_shards(self) -> set[str]:
        """Ids of the finished shards (the ones a resume skips and the report reads)."""
        ...

    def marker(self, shard_id: str) -> dict[str, Any] | None:
        """A shard's done marker (rows, bytes, sha256; hallu/store/integrity.py), or None."""
        ...

    def write_shard(self, shard_id: str, table: pa.Table) -> str | Path:
        """Store one shard's rows and mark it done; FileExistsError if it is already stored."""
        ...

    def read_shard(self, shard_id: str) -> pa.Table:
        """A done shard's rows in the results schema; integrity.ShardUnreadable if its bytes
        fail the checks against its marker (length, SHA-256, page checksums)."""
        ...

    def read_shards(self) -> Iterator[tuple[str, pa.Table]]:
        """(shard_id, rows in the results schema) for every finished shard, sorted by id."""
        ...

    def stray_files(self) -> list[str]:
        """Names under shards/ and done/ that are not a done shard or its marker (ignored)."""
        ...

    def quarantine(self, shard_id: str, why: str) -> None:
        """Move a shard and its marker aside (kept, never read), so that it is computed again."""
        ...

    def read_results(self) -> pa.Table:
        """Every finished shard's rows as one table in the results schema."""
        ...

    def write_table(self, name: str, table: pa.Table) -> str | Path:
        """`<run>/<name>` as Parquet and then its done marker (a unit's result: behaviour
        answers, mechanism units), complete or absent, never replaced (FileExistsError)."""
        ...

    def table_names(self, folder: str) -> set[str]:
        """The finished units of `<run>/<folder>`: the stems with a done marker
        (`<folder>/_done/<stem>.json`, as shards' done/<id>.json)."""
        ...

    def read_tables(
        self, folder: str, table_schema: pa.Schema | None, planned: list[str] | None = None
    ) -> pa.Table:
        """Every finished unit of `<run>/<folder>` (of `planned`, when given), checked against
        its done marker, in the explicit schema (None: their own); UserError naming the planned
        units missing and those that fail their checks; other files ignored with a warning."""
        ...

    def read_table(self, folder: str, stem: str) -> pa.Table:
        """One finished unit's table, checked against its marker (integrity.ShardUnreadable)."""
        ...

    def table_strays(self, folder: str) -> list[str]:
        """Names in `<run>/<folder>` (and its markers) that are no finished unit (ignored)."""
        ...

    def quarantine_table(self, folder: str, stem: str, why: str) -> None:
        """Move a unit's table and its marker aside (kept, never read), so it is run again."""
        ...

    def write_file(self, name: str, data: bytes) -> str | Path:
        """A derived file (summary, figure, noise floor), replaced on every write."""
        ...

    def read_file(self, name: str) -> bytes | None:
        """The bytes of `<run>/<name>`, or None if it does not exist."""
        ...


def few(names: list[str], n: int = 5) -> str:
    shown = ", ".join(names[:n])
    return shown + (f", and {len(names) - n} more" if len(names) > n else "")
