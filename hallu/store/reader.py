"""Read a finished run for analysis: a local run directory, an `s3://bucket/prefix`, or a store.

All three go through pyarrow: a filesystem (local or S3) and a base path holding the run
directory's layout (`run.json`, `shards/*.parquet`, optional `noise_floor.json` and behaviour
results). Shards are read as one dataset with the explicit SCHEMA, so shards written before a
column was added read as null in it. A store object (anything with `read_results()`, e.g.
`LocalStore`) can be passed instead; its `dir`, if any, supplies the other files.

For S3, credentials and region come from the standard AWS environment; an S3-compatible endpoint
from `AWS_ENDPOINT_URL` (or `AWS_ENDPOINT_URL_S3`).
"""

from __future__ import annotations

import json
import os
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import pyarrow as pa
import pyarrow.dataset as ds
import pyarrow.fs as pafs
import pyarrow.parquet as pq

from hallu.errors import UserError
from hallu.store import schema
from hallu.store import timing as shard_timing

# Behaviour rows (hallu/behavior/): <run>/behavior/responses/*.parquet; Figure 1 beside them.
BEHAVIOR_DIRS = ("behavior/responses", "behavior")
FIGURE1_NAMES = ("behavior/figure1.png", "figure1.png")


@dataclass
class Run:
    run_id: str
    meta: dict[str, Any]
    table: pa.Table
    timings: list[dict[str, Any]] = field(default_factory=list)
    n_shards: int = 0
    noise: dict[str, Any] | None = None
    behavior: pa.Table | None = None
    figure1_png: bytes | None = None
    location: str = ""


def _filesystem(source: str) -> tuple[pafs.FileSystem, str]:
    if source.startswith("s3://"):
        endpoint = os.environ.get("AWS_ENDPOINT_URL_S3") or os.environ.get("AWS_ENDPOINT_URL")
        kwargs: dict[str, Any] = {}
        if endpoint:
            scheme, _, host = endpoint.partition("://")
            kwargs = {"endpoint_override": host or scheme, "scheme": scheme if host else "https"}
        region = os.environ.get("AWS_REGION") or os.environ.get("AWS_DEFAULT_REGION")
        if region:
            kwargs["region"] = region
        return pafs.S3FileSystem(**kwargs), source.removeprefix("s3://").rstrip("/")
    path = Path(source).expanduser().resolve()
    return pafs.LocalFileSystem(), str(path)


def _read_bytes(fs: pafs.FileSystem, path: str) -> bytes | None:
    try:
        if fs.get_file_info(path).type != pafs.FileType.File:
            return None
        with fs.open_input_stream(path) as f:
            return f.read()
    except OSError:
        return None


def _list(fs: pafs.FileSystem, path: str, suffix: str) -> list[str]:
    try:
        infos = fs.get_file_info(pafs.FileSelector(path, allow_not_found=True))
    except OSError as err:
        raise UserError(f"{path}: cannot list it ({err})") from None
    return sorted(i.path for i in infos if i.type == pafs.FileType.File and i.path.endswith(suffix))


def open_run(source: str | Path | Any) -> Run:
    """Read everything the report needs, or raise UserError naming what is missing."""
    if hasattr(source, "read_results"):
        table = source.read_results()
        base = getattr(source, "dir", None)
        run = open_run(base) if base is not None and Path(base, "run.json").exists() else None
        if run is None:
            return Run(getattr(source, "run_id", "run"), {}, table)
        run.table = table
        return run
    fs, base = _filesystem(str(source))
    raw_meta = _read_bytes(fs, f"{base}/run.json")
    if raw_meta is None:
        raise UserError(
            f"{source}: no run.json there; give a run directory (or s3:// prefix) written by "
            "`python -m hallu.launch`"
        )
    meta = json.loads(raw_meta)
    files = _list(fs, f"{base}/shards", ".parquet")
    if not files:
        raise UserError(f"{source}: the run has no shards yet (shards/*.parquet); run it first")
    try:
        table = ds.dataset(files, schema=schema.SCHEMA, format="parquet", filesystem=fs).to_table()
        schemas = [pq.read_schema(f, filesystem=fs) for f in files]
    except (OSError, pa.ArrowInvalid) as err:
        raise UserError(f"{source}: cannot read its shards ({err})") from None
    noise_raw = _read_bytes(fs, f"{base}/noise_floor.json")
    run = Run(
        meta.get("run_id", Path(base).name),
        meta,
        table,
        shard_timing.read(schemas),
        len(files),
        json.loads(noise_raw) if noise_raw else None,
        location=str(source),
    )
    for d in BEHAVIOR_DIRS:
        parts = _list(fs, f"{base}/{d}", ".parquet")
        if parts:
            run.behavior = ds.dataset(parts, format="parquet", filesystem=fs).to_table()
            break
    for name in FIGURE1_NAMES:
        run.figure1_png = _read_bytes(fs, f"{base}/{name}")
        if run.figure1_png:
            break
    return run


def n_layers_of(run: Run) -> int:
    """The model's layer count: run.json's, the tiny spec's, the model config's, or the data's."""
    if "n_layers" in run.meta:
        return int(run.meta["n_layers"])
    model = run.meta.get("config", {}).get("model", {})
    for spec in ("tiny", "planted"):
        if model.get(spec):
            return int(model[spec]["n_layers"])
    if run.meta.get("config", {}).get("sweep", {}).get("layers") != "all":
        try:
            from hallu.config import ModelCfg
            from hallu.engine.models import load_shape

            return load_shape(ModelCfg.model_validate(model)).n_layers
        except Exception:  # noqa: BLE001 - offline or gated: fall back on the data
            pass
    return int(max(run.table["layer"].to_pylist())) + 1
