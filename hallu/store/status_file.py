"""status.json: a run's live progress, written by its driver, read by `hallu status` and the report.

The driver (hallu/run/progress.py) replaces this one small object every few seconds while it
runs, and once more when it ends: per stage units done / failed / total, throughput, ETA, the
billed hours and cost beside the plan's estimate, each worker's last heartbeat and the last
error. A local store replaces the file atomically and an S3 PUT replaces the object whole, so a
reader never sees half of it; the writer bounds its size (`MAX_WORKERS`, `MAX_ERROR`). Reading
it needs the store only, never the Ray cluster.
"""

from __future__ import annotations

import json
import time
from typing import Any

FILE = "status.json"
EVERY_S = 5.0  # the driver's write interval
NEWS_S = 1.0  # the soonest it writes after a unit is stored
MAX_WORKERS = 64  # workers listed; the rest are counted
MAX_ERROR = 400  # characters of the last error kept
# A status not replaced for this long belongs to a driver that is gone (killed, machine lost).
STALE_S = 6 * EVERY_S


def read(store: Any) -> dict[str, Any] | None:
    """The run's status object, or None (a run from before status.json, or not started)."""
    raw = store.read_file(FILE)
    if raw is None:
        return None
    try:
        data = json.loads(raw)
    except ValueError:
        return None
    return data if isinstance(data, dict) else None


def live(status: dict[str, Any] | None, now: float | None = None) -> bool:
    """True while a driver is running the study: state "running" and replaced recently."""
    if not status or status.get("state") != "running":
        return False
    age = (now if now is not None else time.time()) - float(status.get("updated_at", 0))
    return age < STALE_S
