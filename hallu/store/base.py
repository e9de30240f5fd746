"""The store contract: what every run store (a local directory, an S3 prefix) offers its callers.

Launch, executors, the behaviour experiment, the summary and the report type against `Store`,
never against one implementation. `LocalStore` (hallu/store/local.py) and `S3Store`
(hallu/store/s3.py) implement it; hallu/store/factory.py picks one (`store_for`, `store_at`), in
its own module because both stores import this one.

Results (shards, behaviour tables) are written once and never replaced; `done_shards` is the one
answer to "which shards are finished", used by resume and by the report alike.
"""

from __future__ import annotations

from collections.abc import Iterator
from pathlib import Path
from typing import TYPE_CHECKING, Any, Protocol, runtime_checkable

import pyarrow as pa

from hallu.store import schema
from hallu.store.lease import Lease

if TYPE_CHECKING:
    from hallu.config import Config


class ReadsShards:
    """`read_shards` and `read_results`, written once for every store from its `done_shards`
    and `read_shard`."""

    def done_shards(self) -> set[str]:
        raise NotImplementedError

    def read_shard(self, shard_id: str) -> pa.Table:
        raise NotImplementedError

    def read_shards(self) -> Iterator[tuple[str, pa.Table]]:
        for shard_id in sorted(self.done_shards()):
            yield shard_id, self.read_shard(shard_id)

    def read_results(self) -> pa.Table:
        return schema.concat(t for _, t in self.read_shards())


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
        """`<run>/<name>` as Parquet, complete or absent, never replaced (FileExistsError)."""
        ...

    def table_names(self, folder: str) -> set[str]:
        """Stems of the Parquet files in `<run>/<folder>`: the finished units of that work."""
        ...

    def read_tables(self, folder: str, table_schema: pa.Schema | None) -> pa.Table:
        """Every Parquet file in `<run>/<folder>`, in the explicit schema (None: their own)."""
        ...

    def write_file(self, name: str, data: bytes) -> str | Path:
        """A derived file (summary, figure, noise floor), replaced on every write."""
        ...

    def read_file(self, name: str) -> bytes | None:
        """The bytes of `<run>/<name>`, or None if it does not exist."""
        ...
