"""Stored results checked against the plan: every planned shard once, every planned cell once.

run.json records the plan (each shard's id, direction, control, pairs, layers and cell count). A
run's results are its planned shards whose done markers exist and whose bytes pass the integrity
checks (integrity.py); each shard's rows must then hold each planned cell exactly once per metric
(the experiment's shards every cell; a control's at most every cell, since a control source can be
shorter than the target) and nothing from another shard, pair, layer or direction. Anything else
under shards/ or done/ (a copy, a leftover) is ignored with a warning naming it.

The end of every run, a resume and the report all go through `check`; a resume moves failed shards
to quarantine/ (`repair`) so that they are computed again.
"""

from __future__ import annotations

import sys
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Any

import pyarrow as pa
import pyarrow.compute as pc

from hallu.errors import UserError
from hallu.store import integrity, narrow, schema, status_file
from hallu.store.base import Store

# What identifies a result row: one per cell, direction, control and metric.
CELL = ("direction", "control", "metric", "pair_id", "layer", "head", "position")

# What `check` keeps of a shard that passed: the table itself (the default), a narrow projection
# of it (narrow.Narrower.add) or nothing (a resume's repair), so that a run is verified one shard
# at a time and only what the caller needs is held.
Keep = Callable[[str, pa.Table], Any]


def _whole(shard_id: str, table: pa.Table) -> pa.Table:
    return table


def _nothing(shard_id: str, table: pa.Table) -> None:
    return None


@dataclass
class Verdict:
    tables: dict[str, Any] = field(default_factory=dict)  # shards that passed: id -> keep(table)
    missing: list[str] = field(default_factory=list)  # planned, with no done marker
    bad: dict[str, str] = field(default_factory=dict)  # shard -> why it failed
    unplanned: list[str] = field(default_factory=list)  # names ignored (not a planned shard)
    n_planned: int = 0

    @property
    def ok(self) -> bool:
        return not self.missing and not self.bad

    def problem(self, where: object, run_id: str) -> str:
        """One line naming the failed shards and the fix."""
        parts = []
        if self.missing:
            parts.append(f"{len(self.missing)} missing ({_few(self.missing)})")
        if self.bad:
            shown = "; ".join(f"{k}: {v}" for k, v in list(self.bad.items())[:3])
            more = f"; and {len(self.bad) - 3} more" if len(self.bad) > 3 else ""
            parts.append(f"{len(self.bad)} failed their checks ({shown}{more})")
        return (
            f"{where}: the stored results do not match the plan: of {self.n_planned} planned "
            f"shard(s), {', '.join(parts)}. Fix: rerun the launch with run_id={run_id} to compute "
            "them again (failed files are moved to quarantine/, not deleted)"
        )


def metrics_of(meta: dict[str, Any]) -> tuple[list[str], list[str]]:
    """(metrics of the experiment's shards, metrics of control shards) from run.json's config."""
    metric = meta.get("config", {}).get("metric", {})
    main = metric.get("name", "logit_diff")
    return [main, *metric.get("extra", [])], [main]


def check(
    store: Store, plan: list[dict[str, Any]], meta: dict[str, Any], keep: Keep = _whole
) -> Verdict:
    """Read every planned, done shard once, and sort the run's shards into passed and failed.
    Shards are read one at a time; `tables` holds `keep(shard_id, table)` of each that passed."""
    specs = {s["shard_id"]: s for s in plan}
    done = store.done_shards()
    verdict = Verdict(n_planned=len(specs))
    verdict.missing = sorted(set(specs) - done)
    verdict.unplanned = sorted(
        store.stray_files() + [f"done/{d}.json" for d in sorted(done - set(specs))]
    )
    experiment, controls = metrics_of(meta)
    for shard_id in sorted(done & set(specs)):
        try:
            table = store.read_shard(shard_id)
        except integrity.ShardUnreadable as err:
            verdict.bad[shard_id] = err.why
            continue
        spec = specs[shard_id]
        why = cells_problem(table, spec, controls if spec.get("control") else experiment)
        if why:
            verdict.bad[shard_id] = why
        else:
            verdict.tables[shard_id] = keep(shard_id, table)
    return verdict


def cells_problem(table: pa.Table, spec: dict[str, Any], metrics: list[str]) -> str | None:
    """Why a shard's rows are not its planned cells, each exactly once; None if they are."""
    expect = {
        "shard_id": [spec["shard_id"]],
        "direction": [spec["direction"]],
        "pair_id": list(spec["pair_ids"]),
        "layer": list(spec["layers"]),
        "metric": metrics,
    }
    for col, allowed in expect.items():
        stray = pc.unique(
            pc.filter(
                table[col], pc.invert(pc.is_in(table[col], pa.array(allowed, table[col].type)))
            )
        )
        if len(stray) or table[col].null_count:
            return f"rows with {col} {stray.to_pylist()[:3] or [None]} outside its plan"
    control = table["control"]
    if spec.get("control") is None and control.null_count != len(control):
        return "control rows in an experiment shard"
    if spec.get("control") is not None and pc.any(pc.not_equal(control, spec["control"])).as_py():
        return f"rows of another control than {spec['control']}"
    counts = table.group_by(list(CELL), use_threads=False).aggregate([([], "count_all")])
    dup = pc.sum(pc.greater(counts["count_all"], 1)).as_py() or 0
    if dup:
        return f"{dup} cell(s) stored more than once"
    per_metric = table.group_by("metric").aggregate([([], "count_all")]).to_pylist()
    got = {r["metric"]: r["count_all"] for r in per_metric}
    for m in metrics:
        n, planned = got.get(m, 0), spec["n_cells"]
        if n > planned or (spec.get("control") is None and n != planned):
            return f"{n} of {planned} planned cells for metric {m}"
    return None


def verified(store: Store, where: object = None, keep: Keep = _whole) -> Verdict:
    """The run's results, checked against run.json's plan: a Verdict whose `tables` are all
    planned shards (`keep` of each), or UserError naming the shards that are missing or failed.
    Ignored names are warned about. A run.json without a plan (written by hand, or by a store's
    own tests) has its done shards read with their integrity checks only."""
    where = where if where is not None else store.dir
    meta = store.read_meta() or {}
    plan = meta.get("plan")
    if not plan:
        verdict = Verdict(unplanned=store.stray_files())
        try:
            verdict.tables = {k: keep(k, t) for k, t in store.read_shards()}
        except integrity.ShardUnreadable as err:
            raise UserError(f"{where}: {err}. Fix: rerun the launch with this run_id") from None
        verdict.n_planned = len(verdict.tables)
    else:
        verdict = check(store, plan, meta, keep)
        if not verdict.ok and status_file.live(status_file.read(store)):
            done = verdict.n_planned - len(verdict.missing)
            raise UserError(
                f"{where}: the run is still going ({done} of {verdict.n_planned} planned shards "
                f"stored so far). Fix: follow it with `hallu status {where} --watch` and report "
                "once it has finished"
            )
        if not verdict.ok:
            raise UserError(verdict.problem(where, store.run_id))
    if verdict.unplanned:
        print(
            f"hallu: warning: {where}: ignored {len(verdict.unplanned)} file(s) that are no "
            f"planned shard: {_few(verdict.unplanned)}",
            file=sys.stderr,
        )
    return verdict


def read_verified(store: Store) -> pa.Table:
    """Every planned shard's rows, every column, as one table (see `verified`). Holds the whole
    run in memory: the report reads `read_narrow` instead."""
    tables = verified(store).tables
    return schema.concat(tables[k] for k in sorted(tables))


def read_narrow(store: Store, where: object = None) -> tuple[pa.Table, list[pa.Schema]]:
    """Every planned shard's rows in the narrow projection (narrow.py), verified one shard at a
    time, in shard id order; and each shard's own schema (its timing metadata), in that order."""
    narrower = narrow.Narrower()
    verified(store, where, keep=narrower.add)
    return narrower.table(), narrower.shard_schemas()


def repair(store: Store, plan: list[dict[str, Any]], meta: dict[str, Any]) -> list[str]:
    """Before a resume: move failed shards (and markers whose shard is gone) to quarantine/, so
    they are computed again. Returns the ids moved; each is named on stderr."""
    verdict = check(store, plan, meta, _nothing)  # nothing held: only the failures matter
    for shard_id, why in verdict.bad.items():
        store.quarantine(shard_id, why)
        print(
            f"hallu: shard {shard_id} failed its checks ({why}); running it again", file=sys.stderr
        )
    if verdict.unplanned:
        print(
            f"hallu: warning: {store.dir}: ignoring {len(verdict.unplanned)} file(s) that are no "
            f"planned shard: {_few(verdict.unplanned)}",
            file=sys.stderr,
        )
    return sorted(verdict.bad)


def _few(names: list[str], n: int = 5) -> str:
    shown = ", ".join(names[:n])
    return shown + (f", and {len(names) - n} more" if len(names) > n else "")
