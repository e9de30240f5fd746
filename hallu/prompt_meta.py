"""Every prompt of a set with its metadata (marker, strength, claim truth, template), checked.

The patching experiments read pairs (prompts.load_pairs); the mechanism experiment reads every
row, including the ladder's rungs that no pair uses, and splits its analyses by marker strength,
template and claim truth. Files without the metadata columns still work: the condition stands in
for the marker (strength +1 certain, 0 neutral, -1 uncertain), the pair for the claim, and truth
and template are unknown.

A ladder file (one with a `strength` column) must hold every rung on every claim, one strength
per rung, distinct strengths, and the pair's rungs in order: certain > neutral > uncertain.
"""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path
from typing import Any

from hallu.config import PromptsCfg
from hallu.errors import UserError
from hallu.prompts import numbered, read_rows, row_text

CONDITION_STRENGTH = {"certain": 1, "neutral": 0, "uncertain": -1}


@dataclass(frozen=True)
class PromptRow:
    prompt_id: str  # '<pair_id>/<rung or condition label>'
    pair_id: str
    claim_id: str
    rung: str  # the file's condition label (a ladder rung, or certain/uncertain/neutral)
    condition: str | None  # certain / uncertain / neutral when prompts.conditions maps the rung
    text: str
    marker: str
    strength: int
    marker_at: int | None  # character offset of the marker in text; None: unknown
    claim_true: bool | None
    template: str


def load_prompt_rows(cfg: PromptsCfg) -> list[PromptRow]:
    """Every row of the prompt file, with its metadata; one UserError for any defect."""
    path, _, rows = read_rows(cfg)
    cols = cfg.columns.model_dump()
    if rows and "strength" in rows[0]:
        check_ladder(path, rows, cols, cfg)
    to_cond = {label: cond for cond, label in cfg.conditions.model_dump().items()}
    out = []
    for row in rows:
        pid, label = (str(row.get(cols[k]) or "").strip() for k in ("pair_id", "condition"))
        text = row_text(row, cols)
        cond = to_cond.get(label)
        strength = row.get("strength")
        at = str(row.get("marker_at") or "").strip()
        truth = str(row.get("claim_true") or "").strip().lower()
        out.append(
            PromptRow(
                prompt_id=f"{pid}/{label}",
                pair_id=pid,
                claim_id=str(row.get("claim_id") or pid),
                rung=label,
                condition=cond,
                text=text,
                marker=str(row.get("marker") or (label if cond != "neutral" else "")),
                strength=int(strength)
                if strength not in (None, "")
                else CONDITION_STRENGTH.get(cond or "", 0),
                marker_at=int(at) if at else None,
                claim_true={"true": True, "false": False}.get(truth),
                template=str(row.get("template") or "default"),
            )
        )
    return out


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
