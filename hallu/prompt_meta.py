"""Every prompt of a set with its metadata (marker, strength, claim truth, template), checked.

The patching experiments read pairs (prompts.load_pairs); the mechanism experiment reads every
row, including the ladder's rungs that no pair uses, and splits its analyses by marker strength,
template and claim truth. Files without the metadata columns still work: the condition stands in
for the marker (strength +1 certain, 0 neutral, -1 uncertain), the pair for the claim, and truth
and template are unknown.

A ladder file (one with a `strength` column) is checked by hallu.prompt_ladder.
"""

from __future__ import annotations

from dataclasses import dataclass

from hallu.config import PromptsCfg
from hallu.prompt_ladder import check_ladder
from hallu.prompts import read_rows, row_text

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
