"""Shard integrity: what a done marker records, and the checks a shard passes before it is read.

A shard is stored as Parquet with page checksums (CRC-32 of every data page, checked on read), and
its done marker (`done/<shard_id>.json`) records the file's byte length and SHA-256. A shard is
read only if its bytes have that length and hash and every page checksum holds; otherwise it is
reported (and a resume moves it to `quarantine/` and computes it again).
"""

from __future__ import annotations

import hashlib
import json
import socket
from typing import Any

import pyarrow as pa
import pyarrow.parquet as pq


class ShardUnreadable(Exception):
    """A shard that fails its integrity checks; `why` says which, in a few words."""

    def __init__(self, shard_id: str, why: str):
        super().__init__(f"shard {shard_id}: {why}")
        self.shard_id = shard_id
        self.why = why


def encode(table: pa.Table) -> bytes:
    """The Parquet bytes of `table`, with a checksum on every page."""
    sink = pa.BufferOutputStream()
    pq.write_table(table, sink, write_page_checksum=True)
    return sink.getvalue().to_pybytes()


def marker(shard_id: str, data: bytes, rows: int, **extra: Any) -> bytes:
    """The done marker of a shard whose stored bytes are `data`."""
    note = {
        "shard_id": shard_id,
        "rows": rows,
        "bytes": len(data),
        "sha256": hashlib.sha256(data).hexdigest(),
        "host": socket.gethostname(),
        **extra,
    }
    return json.dumps(note).encode()


def read_marker(shard_id: str, raw: bytes) -> dict[str, Any]:
    """A done marker's note; ShardUnreadable if it is empty or not the JSON object written."""
    try:
        note = json.loads(raw)
    except (ValueError, UnicodeDecodeError):
        note = None
    if not isinstance(note, dict):
        raise ShardUnreadable(shard_id, f"its done marker is unreadable ({len(raw)} bytes)")
    return note


def decode(shard_id: str, data: bytes, note: dict[str, Any] | None, schema: pa.Schema | None):
    """The shard's rows in `schema` (None: its own), after checking length, hash and pages.

    `note` is its done marker (None: a run written before markers; only pages are checked).
    Raises ShardUnreadable naming the first check that failed.
    """
    if note is not None and "bytes" in note and len(data) != note["bytes"]:
        raise ShardUnreadable(shard_id, f"{len(data)} bytes, its marker says {note['bytes']}")
    if note is not None and "sha256" in note:
        if hashlib.sha256(data).hexdigest() != note["sha256"]:
            raise ShardUnreadable(shard_id, "SHA-256 differs from its marker's (bytes changed)")
    try:
        own = pq.read_schema(pa.BufferReader(data)).metadata
        table = pq.read_table(pa.BufferReader(data), schema=schema, page_checksum_verification=True)
    except (OSError, pa.ArrowException) as err:
        raise ShardUnreadable(shard_id, f"not readable Parquet ({err})") from None
    if note is not None and "rows" in note and table.num_rows != note["rows"]:
        raise ShardUnreadable(shard_id, f"{table.num_rows} rows, its marker says {note['rows']}")
    return table.replace_schema_metadata(own)
