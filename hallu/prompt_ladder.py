"""The check of a ladder prompt file (one with a `strength` column), for hallu.prompts and
hallu.prompt_meta alike.

A ladder file must hold every rung on every claim, one strength per rung, distinct strengths,
and the pair's rungs in order: certain > neutral > uncertain. Its own module so that prompts.py
(which reads pairs) and prompt_meta.py (which reads every row through prompts.read_rows) both
use it without importing each other.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

from hallu.config import PromptsCfg
from hallu.errors import UserError


def check_ladder(
    path: Path, rows: list[dict[str, Any]], cols: dict[str, str], cfg: PromptsCfg
) -> None:
    """Every rung on every pair, one integer strength per rung, strengths distinct and ordered."""
    fix = "regenerate hallu's sets with `python -m hallu.prompt_sets write`, or fix the file"
    strength_of: dict[str, int] = {}
    rungs_of: dict[str, set[str]] = {}
    for i, row in numbered(rows):
        label = str(row.get(cols["condition"]) or "").strip()
        raw = str(row.get("strength") or "").strip()
        try:
            value = int(raw)
        except ValueError:
            raise UserError(
                f"prompts.path={path}, line {i}: strength {raw!r} is not an integer; {fix}"
            ) from None
        if strength_of.setdefault(label, value) != value:
            raise UserError(
                f"prompts.path={path}, line {i}: rung {label!r} has strength {value} here and "
                f"{strength_of[label]} above; give each rung one strength ({fix})"
            )
        rungs_of.setdefault(str(row.get(cols["pair_id"]) or "").strip(), set()).add(label)
    by_value: dict[int, str] = {}
    for label, value in strength_of.items():
        if value in by_value:
            raise UserError(
                f"prompts.path={path}: rungs {by_value[value]!r} and {label!r} share strength "
                f"{value}; strengths must be distinct to order the ladder ({fix})"
            )
        by_value[value] = label
    every = set(strength_of)
    for pid, rungs in rungs_of.items():
        if rungs != every:
            raise UserError(
                f"prompts.path={path}: pair {pid!r} lacks rung(s) {sorted(every - rungs)}; "
                f"every claim needs all {len(every)} rungs ({fix})"
            )
    _check_order(path, strength_of, cfg)


def _check_order(path: Path, strength_of: dict[str, int], cfg: PromptsCfg) -> None:
    conds = cfg.conditions.model_dump()
    unknown = [f"{c}={lab!r}" for c, lab in conds.items() if lab not in strength_of]
    if unknown:
        raise UserError(
            f"prompts.path={path}: prompts.conditions {', '.join(unknown)} name no rung of the "
            f"file; choose from {sorted(strength_of, key=strength_of.get, reverse=True)}"
        )
    s = {c: strength_of[lab] for c, lab in conds.items()}
    if not s["certain"] > s["neutral"] > s["uncertain"]:
        raise UserError(
            f"prompts.path={path}: strengths must order certain > neutral > uncertain, but "
            f"prompts.conditions gives {s}; swap the conditions or fix the strengths"
        )


def numbered(rows: list[dict[str, Any]]) -> list[tuple[int, dict[str, Any]]]:
    """(physical line, row) pairs; rows built in code (no `lines`) count from line 2 as a CSV."""
    lines = getattr(rows, "lines", None) or range(2, len(rows) + 2)
    return list(zip(lines, rows, strict=True))
