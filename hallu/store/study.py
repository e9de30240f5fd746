"""What a run is: its study (config and content identity), and the run.json that records it.

A run resumes only if it is the same study: the same config (less where it runs and where results
go) and, when recorded, the same content identity: the prompt rows used, every prompt's token ids,
the metric's token ids and the weights (hallu/run/identity.py computes it). Anything else is
refused, naming what changed, and the stored results are kept.
"""

from __future__ import annotations

import platform
import subprocess
import sys
from datetime import datetime, timezone
from importlib import metadata
from pathlib import Path
from typing import Any

from hallu.config import Config
from hallu.errors import UserError

PACKAGES = (
    "hallu",
    "torch",
    "transformers",
    "tokenizers",
    "pyarrow",
    "pydantic",
    "hydra-core",
    "ray",
    "boto3",
)


def new_run_id(cfg: Config) -> str:
    stamp = datetime.now(timezone.utc).strftime("%Y%m%d-%H%M%S")
    return f"{stamp}-{cfg.study_hash()[:6]}"


def versions() -> dict[str, str | None]:
    out: dict[str, str | None] = {"python": platform.python_version()}
    for name in PACKAGES:
        try:
            out[name] = metadata.version(name)
        except metadata.PackageNotFoundError:
            out[name] = None
    return out


def git_sha() -> str | None:
    here = Path(__file__).resolve().parent
    try:
        sha = subprocess.run(
            ["git", "rev-parse", "HEAD"], cwd=here, capture_output=True, text=True, timeout=5
        ).stdout.strip()
        dirty = subprocess.run(
            ["git", "status", "--porcelain", "--untracked-files=no"],
            cwd=here,
            capture_output=True,
            text=True,
            timeout=5,
        ).stdout.strip()
    except (OSError, subprocess.SubprocessError):
        return None
    return (sha + ("-dirty" if dirty else "")) or None


def run_metadata(cfg: Config, run_id: str, extra: dict[str, Any]) -> dict[str, Any]:
    """What run.json holds, whatever the store: config, versions, git sha (no credentials)."""
    return {
        "run_id": run_id,
        "study_hash": cfg.study_hash(),
        "created": datetime.now(timezone.utc).isoformat(timespec="seconds"),
        "config": cfg.model_dump(),
        "versions": versions(),
        "git_sha": git_sha(),
        "host": platform.node(),
        **extra,
    }


def _config_changes(
    old: dict[str, Any], new: dict[str, Any], prefix: str = ""
) -> list[tuple[str, Any, Any]]:
    """(dotted key, old value, new value) for every value that differs between two config dumps."""
    out = []
    for key in sorted(set(old) | set(new)):
        a, b = old.get(key), new.get(key)
        if isinstance(a, dict) and isinstance(b, dict):
            out += _config_changes(a, b, f"{prefix}{key}.")
        elif a != b:
            out.append((f"{prefix}{key}", a, b))
    return out


IGNORED = ("mode", "run_id", "storage")  # where the run is, not what it computes
# Keys a resume may change: how the work runs (batch sizes a user lowers after running out of
# memory, the cluster, logging) or how the report reads it, never the rows it computes.
RESUMABLE = (
    "sweep.batch_size",
    "sweep.memory_gb",
    "cluster",
    "verbose",
    "analysis",
    "model.shape",
)


def _added_with_default(old: dict[str, Any], cfg: Config, key: str) -> bool:
    """True if `key` is absent from an older run.json and holds its default now: a key a newer
    hallu added changes nothing the older run computed."""
    node: Any = cfg
    for part in key.split("."):
        if not isinstance(old, dict) or part not in old:
            field = type(node).model_fields.get(part) if hasattr(node, "model_fields") else None
            if field is None or field.is_required():
                return False
            default = field.get_default(call_default_factory=True)
            value = getattr(node, part)
            return (default.model_dump() if hasattr(default, "model_dump") else default) == (
                value.model_dump() if hasattr(value, "model_dump") else value
            )
        old, node = old[part], getattr(node, part, None)
    return False


def _resumable(key: str) -> bool:
    return any(key == k or key.startswith(f"{k}.") for k in RESUMABLE)


def _shown(changes: list[tuple[str, Any, Any]]) -> str:
    more = f", and {len(changes) - 3} more" if len(changes) > 3 else ""
    return ", ".join(f"{k} ({a!r} -> {b!r})" for k, a, b in changes[:3]) + more


def same_study(
    old_meta: dict[str, Any],
    cfg: Config,
    run_id: str,
    where: object,
    identity: dict[str, str] | None = None,
) -> bool:
    """True if an existing run.json is of this study (so the run resumes); UserError if not.
    Changes to the RESUMABLE keys alone resume, and are named on stderr."""
    fix = "its results are kept. Fix: choose a new run_id, or drop run_id= for a fresh one"
    if old_meta.get("study_hash") != cfg.study_hash():
        new = cfg.model_dump(exclude=set(IGNORED))
        old = {k: v for k, v in old_meta.get("config", {}).items() if k not in IGNORED}
        changes = _config_changes(old, new)
        added = [c for c in changes if _added_with_default(old, cfg, c[0])]
        changes = [c for c in changes if c not in added]
        refused = [c for c in changes if not _resumable(c[0])]
        if refused or not (changes or added):
            raise UserError(
                f"run_id={run_id}: {where} holds a run with a different config (study hash "
                f"{old_meta.get('study_hash')} vs {cfg.study_hash()}; changed: "
                f"{_shown(refused) or '(config hash)'}; a resume may change only "
                f"{', '.join(k + '.*' * (k in ('cluster', 'analysis')) for k in RESUMABLE[:4])}); "
                + fix
            )
        if changes:
            print(
                f"hallu: run_id={run_id}: resuming with {_shown(changes)}: how it runs changes, "
                "not what it computes",
                file=sys.stderr,
            )
        if added:
            print(
                f"hallu: run_id={run_id}: written by an older hallu; keys added since, at their "
                f"defaults: {', '.join(k for k, _, _ in added[:5])}",
                file=sys.stderr,
            )
    old_id = old_meta.get("identity")
    if identity is None:
        return True
    if old_id is None:
        print(
            f"hallu: warning: run_id={run_id} predates content identity: its prompts' contents, "
            "token ids and weights cannot be compared with this launch's",
            file=sys.stderr,
        )
        return True
    changed = [k for k in sorted(set(old_id) | set(identity)) if old_id.get(k) != identity.get(k)]
    if changed:
        what = ", ".join(f"{k} ({old_id.get(k)} -> {identity.get(k)})" for k in changed)
        raise UserError(
            f"run_id={run_id}: {where} holds the same config but different content: {what}; " + fix
        )
    return True
