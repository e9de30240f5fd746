"""`hallu status RUN [--watch] [--json]`: a run's progress, from its store alone (no Ray).

Per stage, units done / planned as the store records them (below), then what the run's driver
last wrote to status.json (hallu/store/status_file.py): per stage done / failed / total and
seconds per unit, throughput and ETA, GPU-hours and cost so far beside the plan's, each
worker's last heartbeat, the last error. `--watch` redraws until the driver stops writing.

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
import time
from collections import defaultdict
from typing import Any

from hallu.errors import EXIT_USER_ERROR, UserError
from hallu.store import status_file

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


def format_live(st: dict[str, Any] | None, now: float) -> list[str]:
    """The driver's status.json (hallu/store/status_file.py) as text lines."""
    if st is None:
        return ["  no status.json (a run from before it, or its driver wrote none yet)"]
    age = now - float(st.get("updated_at", now))
    state = st.get("state", "?")
    if state == "running" and not status_file.live(st, now):
        state = f"running, but not updated for {_dur(age)}: its driver is gone; rerun the launch"
    lines = [f"  driver: {state} (status.json written {_dur(age)} ago)"]
    if st.get("stop_reason"):
        lines.append(f"  stopped: {st['stop_reason']}")
    for name, s in st.get("stages", {}).items():
        done = int(s["before"] + s["done"])
        line = f"  {name:28s} {done} done, {int(s['failed'])} failed / {int(s['total'])}"
        if s.get("seconds_per_unit"):
            line += f", {s['seconds_per_unit']:.2f} s per unit on a worker"
        if s.get("cells") and s["seconds"]:
            line += f", {s['cells'] / s['seconds']:.1f} cells/s"
        lines.append(line)
    rate = st.get("units_per_s")
    eta = st.get("eta_s")
    lines.append(
        f"  throughput: {rate * 60:.2f} units/min; ETA {_dur(eta)}" if rate and eta is not None
        else "  throughput: no unit stored yet this session; ETA unknown"
    )  # fmt: skip
    plan = st.get("plan") or {}
    spent = _usd(st.get("spent_usd"))
    unit = "GPU-hours" if st.get("gpus_per_worker") else "worker-hours (no GPU)"
    cost = f"{unit} {st['billed_hours']:.4g}, cost {spent}"
    if st.get("projected_usd") is not None:
        cost += f", projected {_usd(st['projected_usd'])}"
    if plan:
        cost += f"; plan: {_dur(plan['seconds'])} wall"
        cost += f", {plan['gpu_hours']:.4g} GPU-hours" if plan.get("gpu_hours") else ""
        cost += f", {_usd(plan['cost_usd'])}" if plan.get("cost_usd") is not None else ""
    lines.append(f"  {cost}")
    limits = [f"{k}={st[k]:g}" for k in ("budget_usd", "max_hours") if st.get(k) is not None]
    if limits:
        lines.append(f"  limits: {', '.join(limits)}")
    for w in st.get("workers", []):
        beat = _dur(now - w["heartbeat"]) + " ago" if w.get("heartbeat") else "never"
        node = f", node {w['node'][:12]}" if w.get("node") else ""
        lines.append(
            f"  {w['name']}: {w.get('state', '?')}, pid {w.get('pid')} on {w.get('host')}{node}, "
            f"{w['units']} unit(s), peak memory {w['peak_bytes'] / 1e9:.2f} GB, heartbeat {beat}"
        )
    if st.get("workers_not_listed"):
        lines.append(f"  ... and {st['workers_not_listed']} more worker(s)")
    lines.append(f"  last error: {st.get('last_error') or 'none'}")
    return lines


def _dur(s: float | None) -> str:
    if s is None:
        return "?"
    if s >= 3600:
        return f"{s / 3600:.2f} h"
    return f"{s / 60:.1f} min" if s >= 60 else f"{s:.0f} s"


def _usd(x: float | None) -> str:
    if x is None:
        return "n/a (no price: set cluster.gpu or cluster.price_per_gpu_hour)"
    return f"${x:,.4g}"


def snapshot(target: str) -> list[tuple[Any, list | None, dict | None]]:
    """(store, rows or None when not started, status.json or None) of the run or each study of a
    multirun's folder; UserError when `target` holds neither."""
    from hallu.store.factory import store_at

    store = store_at(target)
    index = store.read_file(MULTIRUN_INDEX) if store.read_meta() is None else None
    # A multirun's folder: each study in its own folder below it, listed in the index.
    places = (
        [f"{target.rstrip('/')}/{s['dir']}" for s in json.loads(index)["studies"]]
        if index
        else [target]
    )
    runs = []
    for place in places:
        one = store_at(place) if index else store
        if index and one.read_meta() is None:
            runs.append((one, None, None))  # a study of the multirun not started yet
        else:
            runs.append((one, rows(one), status_file.read(one)))
    return runs


def render(runs: list[tuple[Any, list | None, dict | None]], now: float) -> str:
    out = []
    for one, table, st in runs:
        if table is None:
            out.append(f"run {one.run_id} ({one.dir})\n  not started (no run.json yet)")
        else:
            out.append("\n".join([format_rows(one.run_id, one.dir, table), *format_live(st, now)]))
    return "\n".join(out)


def main(argv: list[str]) -> int:
    ap = argparse.ArgumentParser(prog="hallu status", description=__doc__.split("\n")[0])
    ap.add_argument("run", help="a run directory or s3://bucket/prefix/run_id")
    ap.add_argument("--json", action="store_true", help="one JSON object instead of text")
    ap.add_argument("--watch", action="store_true", help="refresh in place until the run ends")
    ap.add_argument("--every", type=float, default=status_file.EVERY_S, help="--watch's seconds")
    args = ap.parse_args(argv)
    try:
        while True:
            runs = snapshot(args.run)
            if args.json:
                print(json.dumps({
                    one.run_id: None if table is None else {
                        "stages": [{"stage": s, "done": d, "planned": p} for s, d, p in table],
                        "status": st,
                    } for one, table, st in runs
                }))  # fmt: skip
            else:
                text = render(runs, time.time())
                # --watch: the cursor home and the screen below it cleared, then the new text.
                print(f"\x1b[H\x1b[J{text}" if args.watch else text, flush=True)
            if not args.watch or not any(status_file.live(st) for _, _, st in runs):
                return 0
            time.sleep(args.every)
    except UserError as err:
        print(f"hallu: error: {err}", file=sys.stderr)
        return EXIT_USER_ERROR
    except KeyboardInterrupt:
        return 0
