"""The result schema: one row per (pair, cell, direction, metric). The one place it is defined.

Add columns at the end; never retype or rename one (old runs must stay readable).
"""

from __future__ import annotations

import math
from collections.abc import Iterable
from typing import Any

import pyarrow as pa

COLUMNS: list[tuple[str, pa.DataType, str]] = [
    ("run_id", pa.string(), "the run directory's name"),
    ("shard_id", pa.string(), "hash of the shard's spec (plan.py); its Parquet file's name"),
    ("model", pa.string(), "model.name_or_path"),
    ("model_revision", pa.string(), "hub commit of the weights; null for tiny/local models"),
    ("dtype", pa.string(), "dtype the model ran in (metric arithmetic is always float32)"),
    ("experiment", pa.string(), "'patching'"),
    ("direction", pa.string(), "restore_confidence (2A) | induce_tentativeness (2B)"),
    ("component", pa.string(), "'resid_pre': the residual stream entering `layer`"),
    ("layer", pa.int32(), "decoder layer index, 0-based"),
    ("layer_window", pa.int32(), "number of consecutive layers patched together (1 here)"),
    ("head", pa.int32(), "attention head; null when the component is not per-head"),
    ("position", pa.int32(), "patched position in the target prompt, 0-based absolute"),
    ("position_from_end", pa.int32(), "the same position counted from the end (-1 = last token)"),
    ("source_position", pa.int32(), "position in the source prompt the activation came from"),
    ("token", pa.string(), "target prompt's token at `position`"),
    ("source_token", pa.string(), "source prompt's token at `source_position`"),
    ("n_tokens", pa.int32(), "target prompt's length in tokens"),
    ("pair_id", pa.string(), "prompt pair id"),
    ("metric", pa.string(), "metric name, e.g. 'logit_diff'"),
    ("clean", pa.float32(), "metric of the unpatched source run (the activations' origin)"),
    ("corrupted", pa.float32(), "metric of the unpatched target run (the run being patched)"),
    ("patched", pa.float32(), "metric of the target run with this cell patched"),
    ("restoration", pa.float32(), "(patched - corrupted) / (clean - corrupted); NaN if equal"),
    ("seed", pa.int64(), "the run's seed"),
    ("control", pa.string(), "null for the experiment; else the control (hallu/run/controls.py)"),
    (
        "known",
        pa.bool_(),
        "true: `patched` is the corrupted baseline, taken without a forward pass (the patch writes "
        "what the target run holds: the prompts agree on every token up to `position`, or "
        "each written value equals the target's own bit for bit)",
    ),
    (
        "resolution",
        pa.float32(),
        "one rounding step of the model's (or the metric's, if coarser) dtype at the largest "
        "|logit| the metric subtracts; smaller differences are noise (other metrics: at the "
        "value)",
    ),
    (
        "approx",
        pa.float32(),
        "attribution patching's estimate of patched - corrupted (sweep.screen_top_k); null "
        "without a screen; rows outside the top K have patched = NaN",
    ),
    (
        "screen_spearman",
        pa.float32(),
        "rank correlation of `approx` and the exact patched - corrupted over the pair's top K "
        "cells; null without a screen",
    ),
    (
        "marker_position",
        pa.int32(),
        "first position where the pair's certain and uncertain prompts differ (the marker)",
    ),
    ("position_from_marker", pa.int32(), "position - marker_position (0 = the marker)"),
    ("user_start", pa.int32(), "target prompt's first token of the user's text"),
    ("user_end", pa.int32(), "target prompt's last token of the user's text"),
    (
        "anchor",
        pa.string(),
        "the template anchor nearest `position`: start (BOS), user (first user token), marker, "
        "user_end (end of the user's text), last (last prompt token); ties go to the later one",
    ),
    ("anchor_offset", pa.int32(), "position - the anchor's position"),
]

# Anchors in prompt order; `anchor_of` labels a position by the nearest one.
ANCHORS = ("start", "user", "marker", "user_end", "last")

SCHEMA = pa.schema([pa.field(name, typ) for name, typ, _ in COLUMNS])


def to_table(rows: dict[str, list[Any]]) -> pa.Table:
    """Columns (name -> values) to a table with exactly SCHEMA, or a KeyError naming the column."""
    missing = [f.name for f in SCHEMA if f.name not in rows]
    extra = [k for k in rows if k not in SCHEMA.names]
    if missing or extra:
        raise KeyError(f"result rows: missing columns {missing}, unknown columns {extra}")
    return pa.table({f.name: pa.array(rows[f.name], type=f.type) for f in SCHEMA}, schema=SCHEMA)


def cell_fields(
    pair_id: str,
    position: int,
    source_position: int,
    tokens: list[str],
    source_tokens: list[str],
    clean: float,
    corrupted: float,
    patched: float,
    anchors: dict[str, int | None] | None = None,
) -> dict[str, Any]:
    """The columns every patched cell fills the same way: where, which tokens, the metric.

    `anchors`: the target prompt's template anchors (prompts.prompt_anchors); None leaves the
    marker-aligned columns null."""
    gap = clean - corrupted
    a = anchors or {}
    marker = a.get("marker")
    name, offset = anchor_of(position, a) if anchors else (None, None)
    return {
        "marker_position": marker,
        "position_from_marker": None if marker is None else position - marker,
        "user_start": a.get("user"),
        "user_end": a.get("user_end"),
        "anchor": name,
        "anchor_offset": offset,
        "position": position,
        "position_from_end": position - len(tokens),
        "source_position": source_position,
        "token": tokens[position],
        "source_token": source_tokens[source_position],
        "n_tokens": len(tokens),
        "pair_id": pair_id,
        "clean": clean,
        "corrupted": corrupted,
        "patched": patched,
        "restoration": (patched - corrupted) / gap if gap != 0 else math.nan,
    }


def anchor_of(position: int, anchors: dict[str, int | None]) -> tuple[str, int]:
    """(nearest anchor, position - its position); ties go to the later anchor."""
    found = {"start": 0, **{k: v for k, v in anchors.items() if v is not None}}
    best = min((abs(position - found[k]), -ANCHORS.index(k), k) for k in ANCHORS if k in found)
    return best[2], position - found[best[2]]


def concat(tables: Iterable[pa.Table], table_schema: pa.Schema | None = SCHEMA) -> pa.Table:
    """Stored tables (integrity.decode) as one table with exactly `table_schema` (None: the
    first table's, others promoted to it; no tables and no schema: an empty table)."""
    parts = list(tables)
    if table_schema is None:
        if not parts:
            return pa.table({})
        return pa.concat_tables(
            [t.replace_schema_metadata(None) for t in parts], promote_options="default"
        )
    parts = [t.replace_schema_metadata(table_schema.metadata) for t in parts]
    return pa.concat_tables(parts) if parts else table_schema.empty_table()


def describe() -> str:
    """The schema as a markdown table (the README embeds the same)."""
    lines = ["| column | type | meaning |", "|---|---|---|"]
    lines += [f"| `{n}` | {t} | {d} |" for n, t, d in COLUMNS]
    return "\n".join(lines)
