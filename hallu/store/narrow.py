"""The narrow projection of a run's rows: what the report and summary read, in bounded memory.

Verification (verify.py) reads each shard whole, because its SHA-256 and page checksums cover every
byte. Once a shard passes, `Narrower.add` keeps only the columns the analysis and report read
(`COLUMNS`) and drops the rest (run and shard ids, model, source tokens and positions, screen
values):
only one shard is ever held with all its columns. String columns are dictionary-encoded against
one dictionary per column that grows as shards arrive (new values appended, so earlier indices
stay valid), so a row costs a 4-byte index per string column; integers and floats keep their
stored types (int32, float32), so every number is the stored one. A row of the projection costs
about 74 bytes (18 columns x 4 bytes, plus validity bits), against ~275 bytes with every column.

Peak memory of a report is therefore about 74 bytes x rows + one shard + the analysis's grids
and bootstrap replicates of one identity at a time (float64: pairs x layers x positions, n_boot x
layers x positions), independent of how wide the stored schema grows. docs/analysis.md states
the bound; benchmarks/aggregate_memory.py measures it.
"""

from __future__ import annotations

import pyarrow as pa
import pyarrow.compute as pc

from hallu.store import schema

# Every column hallu/analysis/ and hallu/report/ read from the patching rows. A new reader of a
# column adds it here (the report's tests run on this projection, so a missing one fails them).
COLUMNS = (
    "direction",
    "metric",
    "component",
    "control",
    "pair_id",
    "token",
    "layer",
    "layer_window",
    "head",
    "position_from_end",
    "position_from_marker",
    "clean",
    "corrupted",
    "patched",
    "restoration",
    "resolution",
    "anchor",
    "anchor_offset",
)
_TYPES = {f.name: f.type for f in schema.SCHEMA}
STRINGS = tuple(c for c in COLUMNS if _TYPES[c] == pa.string())


def narrow_schema() -> pa.Schema:
    """COLUMNS with strings as dictionary<int32, string>, other types as stored."""
    return pa.schema(
        [
            pa.field(c, pa.dictionary(pa.int32(), pa.string()) if c in STRINGS else _TYPES[c])
            for c in COLUMNS
        ]
    )


class Narrower:
    """Accumulates verified shards as narrow chunks; `table()` joins them."""

    def __init__(self) -> None:
        self.values: dict[str, list[str]] = {c: [] for c in STRINGS}
        self.index: dict[str, dict[str, int]] = {c: {} for c in STRINGS}
        self.chunks: dict[str, dict[str, pa.Array]] = {}  # shard id -> narrow columns
        self.schemas: dict[str, pa.Schema] = {}  # shard id -> its own schema (timing metadata)

    def add(self, shard_id: str, table: pa.Table) -> pa.Schema:
        """Keep `table`'s narrow columns; return its schema (what verify keeps per shard)."""
        chunk = {}
        for c in COLUMNS:
            col = table[c].combine_chunks()
            chunk[c] = self._codes(c, col) if c in STRINGS else col
        self.chunks[shard_id] = chunk
        self.schemas[shard_id] = table.schema
        return table.schema

    def shard_schemas(self) -> list[pa.Schema]:
        """Each added shard's own schema, in shard id order (the order of `table`'s rows)."""
        return [self.schemas[k] for k in sorted(self.schemas)]

    def _codes(self, column: str, col: pa.Array) -> pa.Array:
        """int32 indices of `col`'s values in the column's growing dictionary (null stays null)."""
        seen, values = self.index[column], self.values[column]
        for v in pc.unique(col).to_pylist():
            if v is not None and v not in seen:
                seen[v] = len(values)
                values.append(v)
        return pc.index_in(col, value_set=pa.array(values, pa.string()))

    def table(self) -> pa.Table:
        """Every added shard's narrow rows, shards in id order (as verify.read_verified joins
        them, so row order is the same), with one dictionary per string column."""
        out_schema = narrow_schema()
        dicts = {c: pa.array(self.values[c], pa.string()) for c in STRINGS}
        batches = []
        for shard_id in sorted(self.chunks):
            chunk = self.chunks[shard_id]
            arrays = [
                pa.DictionaryArray.from_arrays(chunk[c], dicts[c]) if c in STRINGS else chunk[c]
                for c in COLUMNS
            ]
            batches.append(pa.RecordBatch.from_arrays(arrays, schema=out_schema))
        return pa.Table.from_batches(batches, schema=out_schema)
