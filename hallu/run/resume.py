"""Opening a run to write it: its lease, its study, and its stored shards checked first.

`open_for_writing` takes the run's lease (one writer per run, hallu/store/lease.py) and checks that
an existing run is the same study, content included (hallu/store/study.py). `repair` checks the
shards a resume would skip against the plan and their done markers, and moves the ones that fail
to quarantine/ so that this launch computes them again. `verify_finished` is the end-of-run check.
"""

from __future__ import annotations

from hallu.config import Config
from hallu.errors import UserError
from hallu.run.plan import Plan
from hallu.store import verify
from hallu.store.base import Store
from hallu.store.factory import store_for


def open_for_writing(cfg: Config, run_id: str, identity: dict[str, str]) -> tuple[Store, bool]:
    """(store holding the run's lease, True if resuming); UserError if held or another study."""
    store = store_for(cfg.storage, run_id)  # an S3 bucket is checked reachable and writable
    store.lease.acquire(run_id)
    try:
        resumed = store.check_compatible(cfg, identity)
    except BaseException:
        store.lease.release()
        raise
    return store, resumed


def repair(store: Store, plan: Plan) -> list[str]:
    """Quarantine the stored shards that fail their checks; returns their ids."""
    meta = store.read_meta()
    if meta is None or not store.done_shards():
        return []
    return verify.repair(store, plan.to_json(), meta)


def verify_finished(store: Store, cfg: Config, plan: Plan) -> None:
    """Every planned shard stored once and whole, every planned cell once; else UserError.

    Checked against this launch's plan, not run.json's, so a store that lost run.json as well
    (a wiped bucket) fails here instead of passing with nothing to compare."""
    verdict = verify.check(store, plan.to_json(), {"config": cfg.model_dump()})
    if not verdict.ok:
        raise UserError(verdict.problem(store.dir, store.run_id))
