"""How long each shard took, kept in its Parquet file's schema metadata (no extra columns).

The report sums these into worker-seconds per device type (GPU-seconds when the device is
`cuda`) and the wall time from the first shard's start to the last one's end.
"""

from __future__ import annotations

import time
from typing import Any

import pyarrow as pa

KEY = b"hallu.timing"


def stamp(table: pa.Table, started: float, device: str) -> pa.Table:
    """`table` with {started, ended, seconds, device} of the work that made it in its metadata."""
    import json

    ended = time.time()
    info = {"started": started, "ended": ended, "seconds": ended - started, "device": device}
    meta = dict(table.schema.metadata or {})
    meta[KEY] = json.dumps(info).encode()
    return table.replace_schema_metadata(meta)


def read(schemas: list[pa.Schema]) -> list[dict[str, Any]]:
    """The timing records of the shards whose schemas carry one (older shards have none)."""
    import json

    return [json.loads(s.metadata[KEY]) for s in schemas if s.metadata and KEY in s.metadata]
