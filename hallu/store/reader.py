"""Read a finished run for analysis: a local run directory, an `s3://bucket/prefix/run_id`, or
a store, always through the store (hallu/store/base.py): the shards read are exactly the ones its
done markers name, the same ones a resume would skip. Shards are read with the explicit SCHEMA, so
shards written before a column was added read as null in it.

For S3, credentials, region and an S3-compatible endpoint come from boto3's standard chain (e.g.
`AWS_ENDPOINT_URL`), as for every other boto3 client.
"""

from __future__ import annotations

import json
import sys
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import pyarrow as pa
import pyarrow.compute as pc

from hallu.errors import UserError
from hallu.store import timing as shard_timing
from hallu.store import verify
from hallu.store.base import Store
from hallu.store.factory import store_at

# Behaviour rows (hallu/behavior/): <run>/behavior/responses/*.parquet; Figure 1 beside them.
BEHAVIOR_DIRS = ("behavior/responses", "behavior")
FIGURE1_NAMES = ("behavior/figure1.png", "figure1.png")


@dataclass
class Run:
    run_id: str
    meta: dict[str, Any]
    table: pa.Table  # the narrow projection of every row (hallu/store/narrow.py)
    timings: list[dict[str, Any]] = field(default_factory=list)
    n_shards: int = 0
    noise: dict[str, Any] | None = None
    behavior: pa.Table | None = None
    figure1_png: bytes | None = None
    location: str = ""


def open_run(source: str | Path | Store) -> Run:
    """Read everything the report needs, or raise UserError naming what is missing."""
    store = source if isinstance(source, Store) else store_at(source)
    where = str(source) if not isinstance(source, Store) else str(store.dir)
    meta = store.read_meta()
    if meta is None:
        raise UserError(
            f"{where}: no run.json there; give a run directory (or s3:// prefix) written by "
            "`python -m hallu.launch`"
        )
    try:
        return _read(store, meta, where)
    except UserError as err:
        live = store.lease.holder()  # a run being written is incomplete, not damaged
        if live is None:
            raise
        found = str(err).split(". Fix:")[0].split(": ", 1)[-1]  # what, less where and its fix
        raise UserError(
            f"{where}: a launch is still writing this run ({live}), so its results are not all "
            f"there yet ({found}). Fix: follow it with `hallu status {where} --watch` and report "
            "once it has finished"
        ) from None


def _read(store: Store, meta: dict[str, Any], where: str) -> Run:
    if not store.done_shards():
        raise UserError(f"{where}: the run has no finished shards yet; run it first")
    # Every planned shard, checked one at a time, or UserError; only the narrow columns kept.
    table, schemas = verify.read_narrow(store, where)
    noise_raw = store.read_file("noise_floor.json")
    run = Run(
        meta.get("run_id", store.run_id),
        meta,
        table,
        shard_timing.read(schemas),
        len(schemas),
        json.loads(noise_raw) if noise_raw else None,
        location=where,
    )
    for d in BEHAVIOR_DIRS:
        if store.table_names(d):
            # Their own schema (no behaviour import), every planned chunk, each checked.
            run.behavior = store.read_tables(d, None, meta.get("behavior_chunks"))
            break
    for name in FIGURE1_NAMES:
        run.figure1_png = store.read_file(name)
        if run.figure1_png:
            break
    return run


def n_layers_of(run: Run) -> int:
    """The model's layer count, from run.json alone (never the model: the store loads no torch).

    run.json's `n_layers` (written by every launch since it was added), else the model config's
    recorded shape or in-code spec; a run.json older than all of these falls back on the rows
    (deepest layer + 1) and says so, since a sweep of fewer layers undercounts."""
    if "n_layers" in run.meta:
        return int(run.meta["n_layers"])
    model = run.meta.get("config", {}).get("model", {})
    for spec in ("shape", "tiny", "planted"):
        if isinstance(model.get(spec), dict) and model[spec].get("n_layers"):
            return int(model[spec]["n_layers"])
    n = int(pc.max(run.table["layer"]).as_py()) + 1
    if run.meta.get("config", {}).get("sweep", {}).get("layers") != "all":
        print(
            f"hallu: {run.location or run.run_id}: run.json records no n_layers (a run from "
            f"before it did); taking {n} from the deepest layer in the rows",
            file=sys.stderr,
        )
    return n
