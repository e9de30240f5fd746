"""Units of work that run on the workers, whatever the experiment: one vocabulary for the driver.

A run's work is a list of units, each computed by a worker holding the model and stored by it:

| unit (type)                      | stage        | stored as                                   |
|----------------------------------|--------------|---------------------------------------------|
| `Shard` (hallu/run/plan.py)      | patching     | shards/<id>.parquet + done/<id>.json        |
| `Shard` with `control` set       | controls     | the same                                    |
| `Chunk` (hallu/behavior/schema)  | behavior     | behavior/responses/<id>.parquet + _done/<id>|
| `NoiseFloor` (below)             | noise floor  | noise_floor.json                            |
| `Unit` (hallu/mechanism/schema)  | mechanism    | mechanism/<kind>/<id>.parquet + _done/<id>  |

Every unit is named by a stable id, so a rerun skips what the store holds (`unfinished`) and a
unit stored twice (its first worker died after storing it) is kept once (`store_result` says so).
Every table unit has a done marker (bytes, SHA-256, rows: hallu/store/integrity.py); `repair`
moves the stored ones that fail their checks aside before a run, so they are computed again.
No torch here: the driver plans and tracks units without loading a model.
"""

from __future__ import annotations

import json
import sys
from dataclasses import dataclass
from typing import Any

from hallu.behavior.schema import FOLDER as BEHAVIOR_FOLDER
from hallu.behavior.schema import Chunk
from hallu.mechanism.schema import FOLDER as MECHANISM_FOLDER
from hallu.mechanism.schema import Unit as MechanismUnit
from hallu.run.plan import Shard
from hallu.store.base import Store
from hallu.store.integrity import ShardUnreadable

NOISE_FILE = "noise_floor.json"  # hallu/run/noise.py's FILE (that module imports torch)


@dataclass(frozen=True)
class NoiseFloor:
    """The metric's noise floor (hallu/run/noise.py), measured once per run on a worker."""

    max_pairs: int = 16
    unit_id: str = "noise_floor"


WorkUnit = Shard | Chunk | NoiseFloor | MechanismUnit


def unit_id(u: WorkUnit) -> str:
    if isinstance(u, Shard):
        return u.shard_id
    if isinstance(u, Chunk):
        return u.chunk_id
    return u.unit_id


def stage(u: WorkUnit) -> str:
    """The stage a unit belongs to, as progress and logs name it."""
    if isinstance(u, Shard):
        return "patching" if u.control is None else "controls"
    if isinstance(u, Chunk):
        return "behavior"
    if isinstance(u, NoiseFloor):
        return "noise floor"
    return f"mechanism {u.kind}"


def describe(u: WorkUnit) -> str:
    """The unit in an error message: its stage, id and what it covers."""
    if isinstance(u, Shard):
        return f"shard {u.shard_id} ({u.direction}, pairs {', '.join(u.pair_ids)})"
    if isinstance(u, Chunk):
        return f"behaviour chunk {u.chunk_id} ({u.decoding}, {u.n_rows} prompts)"
    if isinstance(u, NoiseFloor):
        return "the noise floor"
    return f"mechanism {u.kind} unit {u.unit_id} ({len(u.claims)} claims)"


def unfinished(store: Store, units: list[WorkUnit]) -> list[WorkUnit]:
    """The units `store` does not hold yet, in the order given (one listing per folder)."""
    listed: dict[str, set[str]] = {}

    def names(folder: str) -> set[str]:
        if folder not in listed:
            listed[folder] = store.table_names(folder)
        return listed[folder]

    shards = store.done_shards() if any(isinstance(u, Shard) for u in units) else set()
    todo = []
    for u in units:
        if isinstance(u, Shard):
            done = u.shard_id in shards
        elif isinstance(u, Chunk):
            done = u.chunk_id in names(BEHAVIOR_FOLDER)
        elif isinstance(u, NoiseFloor):
            done = store.read_file(NOISE_FILE) is not None
        else:
            done = u.unit_id in names(f"{MECHANISM_FOLDER}/{u.kind}")
        if not done:
            todo.append(u)
    return todo


def table_folder(u: WorkUnit) -> str | None:
    """Where a table unit is stored (its markers in `<folder>/_done/`); None for the others
    (shards are checked against their plan by hallu/run/resume.py; the noise floor is a file)."""
    if isinstance(u, Chunk):
        return BEHAVIOR_FOLDER
    if isinstance(u, MechanismUnit):
        return f"{MECHANISM_FOLDER}/{u.kind}"
    return None


def repair(store: Store, units: list[WorkUnit]) -> list[str]:
    """Move the stored table units among `units` that fail their checks (a truncated or changed
    file, an empty or unreadable marker, a marker without its file) to quarantine/, naming each
    on stderr, so this run computes them again. Returns their ids."""
    folders: dict[str, set[str]] = {}
    for u in units:
        folder = table_folder(u)
        if folder is not None:
            folders.setdefault(folder, set()).add(unit_id(u))
    moved = []
    for folder, ids in folders.items():
        for name in sorted(store.table_names(folder) & ids):
            try:
                store.read_table(folder, name)
            except ShardUnreadable as err:
                store.quarantine_table(folder, name, err.why)
                print(f"hallu: {folder}/{name} failed its checks ({err.why}); running it again",
                      file=sys.stderr)  # fmt: skip
                moved.append(name)
    return moved


def store_result(store: Store, u: WorkUnit, result: Any) -> bool:
    """Store a unit's result (a table, or the noise floor's dict); True if it was stored already
    (a previous attempt stored it before its worker died): the stored one is kept."""
    try:
        if isinstance(u, Shard):
            store.write_shard(u.shard_id, result)
        elif isinstance(u, Chunk):
            store.write_table(f"{BEHAVIOR_FOLDER}/{u.chunk_id}.parquet", result)
        elif isinstance(u, NoiseFloor):
            if store.read_file(NOISE_FILE) is not None:  # measured once per run, then kept
                return True
            store.write_file(NOISE_FILE, json.dumps(result, indent=2).encode())
        else:
            store.write_table(f"{MECHANISM_FOLDER}/{u.kind}/{u.unit_id}.parquet", result)
    except FileExistsError:
        return True
    return False


def created_meta(run_meta: dict[str, Any], ready: dict[str, Any]) -> dict[str, Any]:
    """run.json's extras once a runner has loaded the model (`ready`: its revision and dtype)."""
    return {**run_meta, "model_revision": ready["revision"], "dtype": ready["dtype"]}


def rows_of(result: Any) -> int:
    return int(getattr(result, "num_rows", 1))
