"""`hallu status RUN`: per stage, units done / planned, read from what the store records.

RUN is a run directory (storage.root/RUN_ID) or s3://bucket/prefix/RUN_ID, or a multirun's
folder (each of its studies in turn). Planned units come
from run.json (the patching plan's shards, with their controls, and the behaviour chunks); done
ones from the done markers (shards) and the stored tables (chunks, mechanism units). Mechanism
units are not listed in run.json, so only their done count is known. No torch: this runs
anywhere, beside a run in progress.
"""

from __future__ import annotations

import argparse
import json
import sys
from collections import defaultdict
from typing import Any

from hallu.errors import EXIT_USER_ERROR, UserError

# Where the noise floor is kept (hallu/run/noise.py FILE; run/ sits above this module).
NOISE_FILE = "noise_floor.json"
MULTIRUN_INDEX = "multirun.json"  # hallu/run/multirun.py INDEX


def rows(store: Any) -> list[tuple[str, int, int | None]]:
    """(stage, done, planned or None when the store does not record the plan), in run order."""
    meta = store.read_meta()
    if meta is None:
        raise UserError(
            f"{store.dir}: no run.json there; give a run directory (storage.root/RUN_ID) or "
            "s3://BUCKET/PREFIX/RUN_ID (a run writes run.json before its first result)"
        )
    out: list[tuple[str, int, int | None]] = []
    planned: dict[str, set[str]] = defaultdict(set)
    for shard in meta.get("plan", []):
        stage = f"control {shard['control']}" if shard.get("control") else "patching"
        planned[stage].add(shard["shard_id"])
    if planned:
        done = store.done_shards()
        for stage in sorted(planned, key=lambda s: (s != "patching", s)):
            out.append((f"{stage} shards", len(planned[stage] & done), len(planned[stage])))
    if "behavior_chunks" in meta:
        from hallu.behavior.schema import FOLDER

        chunks = set(meta["behavior_chunks"])
        out.append(("behavior chunks", len(chunks & store.table_names(FOLDER)), len(chunks)))
    sweep = meta.get("config", {}).get("sweep", {})
    if sweep.get("noise_floor") and "patching" in sweep.get("experiments", []):
        out.append(("noise floor", int(store.read_file(NOISE_FILE) is not None), 1))
    if "mechanism" in sweep.get("experiments", []):
        from hallu.mechanism.schema import FOLDER as MECHANISM
        from hallu.mechanism.schema import SCHEMAS

        for kind in SCHEMAS:  # the package that owns the tables names them (no torch)
            done_units = len(store.table_names(f"{MECHANISM}/{kind}"))
            out.append((f"mechanism {kind} units", done_units, None))
    return out


def format_rows(run_id: str, where: Any, table: list[tuple[str, int, int | None]]) -> str:
    lines = [f"run {run_id} ({where})"]
    for stage, done, planned in table:
        if planned is None:
            lines.append(f"  {stage:28s} {done} done (run.json does not list them)")
        else:
            pct = f"{100 * done / planned:.0f}%" if planned else "-"
            lines.append(f"  {stage:28s} {done}/{planned} done ({pct})")
    if not table:
        lines.append("  nothing planned in run.json yet")
    return "\n".join(lines)


def main(argv: list[str]) -> int:
    ap = argparse.ArgumentParser(prog="hallu status", description=__doc__.split("\n")[0])
    ap.add_argument("run", help="a run directory or s3://bucket/prefix/run_id")
    ap.add_argument("--json", action="store_true", help="one JSON object instead of text")
    args = ap.parse_args(argv)
    from hallu.store.factory import store_at

    try:
        store = store_at(args.run)
        index = store.read_file(MULTIRUN_INDEX) if store.read_meta() is None else None
        # A multirun's folder: each study in its own folder below it, listed in the index.
        places = (
            [f"{args.run.rstrip('/')}/{s['dir']}" for s in json.loads(index)["studies"]]
            if index
            else [args.run]
        )
        runs = []
        for place in places:
            one = store_at(place) if index else store
            if index and one.read_meta() is None:
                runs.append((one, None))  # a study of the multirun not started yet
            else:
                runs.append((one, rows(one)))
    except UserError as err:
        print(f"hallu: error: {err}", file=sys.stderr)
        return EXIT_USER_ERROR
    if args.json:
        print(json.dumps({
            one.run_id: None if table is None
            else [{"stage": s, "done": d, "planned": p} for s, d, p in table]
            for one, table in runs
        }))  # fmt: skip
        return 0
    for one, table in runs:
        if table is None:
            print(f"run {one.run_id} ({one.dir})\n  not started (no run.json yet)")
        else:
            print(format_rows(one.run_id, one.dir, table))
    return 0
