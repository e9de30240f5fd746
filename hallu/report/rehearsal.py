"""A rehearsal: a run on random weights (`model.weights=random`) with the real architecture.

It measures what the pipeline costs (time, memory, throughput), not what the model does, so its
report, summary and scorecard say so at the top and give no verdicts.
"""

from __future__ import annotations

import json
from typing import Any

NOTE = (
    "REHEARSAL: random weights (model.weights=random). This run measures the pipeline's time "
    "and memory on the architecture; its numbers say nothing about the model, so no verdict is "
    "given."
)


def is_rehearsal(meta: dict[str, Any] | None) -> bool:
    """True when run.json's resolved config has model.weights=random."""
    return ((meta or {}).get("config", {}).get("model", {}) or {}).get("weights") == "random"


def scorecard_json() -> str:
    """A rehearsal's scorecard.json: the note, and no verdicts."""
    return json.dumps({"rehearsal": True, "note": NOTE, "verdicts": []}, indent=2) + "\n"
