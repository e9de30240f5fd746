"""hallu's derived prompt sets: a ladder of certainty markers, and several question templates.

Both are built from the 48 claims of the built-in set (hallu/data/prompts_builtin.csv) and saved
as CSV files beside it (`python -m hallu.prompt_sets write` regenerates them), in the same long
format as every prompt file plus metadata columns that the mechanism analysis splits by:

- `claim_id`, `claim_true`: the claim and whether it is true (sycophancy on false claims vs
  hedging on true ones);
- `marker`, `strength`: the words that carry the user's certainty and their ordinal strength,
  positive for certainty, 0 for no marker, negative for doubt;
- `marker_at`: the character offset in `text` where the marker starts (for the unmarked prompt,
  where a one-word marker would stand), so its token position can be found after rendering;
- `template`: which phrasing of the question.

The ladder (`marker_ladder.csv`) puts every rung on every claim, with `pair_id` = the claim and
`condition` = the rung's id. `prompts.conditions` picks which two rungs form the patching pair
(definitely vs probably by default, the built-in pair); the other rungs are read by the
mechanism experiment only. "I am not sure" is spelled out because the toy tokenizer splits
"I'm" into i / ' / <unk>.

The templates set (`templates.csv`) says each claim in four phrasings, each phrasing one pair
(`pair_id` = claim.template) with the built-in conditions (definitely / probably / none).
"""

from __future__ import annotations

import csv
import sys
from dataclasses import dataclass
from importlib import resources
from pathlib import Path

# (rung id, marker words, ordinal strength, kind): 'adverb' goes where the built-in set puts
# "definitely" (after the verb); 'clause' opens the sentence ("I doubt the capital ...").
LADDER: tuple[tuple[str, str, int, str], ...] = (
    ("certainly", "certainly", 2, "adverb"),
    ("definitely", "definitely", 1, "adverb"),
    ("none", "", 0, "none"),
    ("probably", "probably", -1, "adverb"),
    ("maybe", "maybe", -2, "adverb"),
    ("not_sure", "I am not sure", -3, "clause"),
    ("doubt", "I doubt", -4, "clause"),
)

# Phrasings around the claim; {claim} is the claim with its marker, lower-cased at the start.
TEMPLATES: tuple[tuple[str, str], ...] = (
    ("right", "{Claim}, right?"),
    ("is_it_true", "Is it true that {claim}?"),
    ("i_think", "I think that {claim}. Is that correct?"),
    ("check", "Can you check this: {claim}?"),
)
TEMPLATE_CONDITIONS = {"certain": "definitely", "uncertain": "probably", "neutral": "none"}

_KEEP_CAPITAL = ("Napoleon",)  # proper nouns that open a claim


@dataclass(frozen=True)
class Claim:
    claim_id: str
    head: str  # words before the adverb slot, e.g. "The capital of Australia is"
    tail: str  # words after it, e.g. "Canberra"
    true: bool


def data_dir() -> Path:
    return Path(str(resources.files("hallu") / "data"))


def builtin_claims() -> list[Claim]:
    """The built-in claims, split at the slot where the built-in set puts its marker."""
    with (data_dir() / "prompts_builtin.csv").open(encoding="utf-8", newline="") as f:
        rows = list(csv.DictReader(f))  # newline="": the csv module's own line handling
    texts: dict[str, dict[str, str]] = {}
    truth: dict[str, bool] = {}
    for r in rows:
        texts.setdefault(r["pair_id"], {})[r["condition"]] = r["text"]
        truth[r["pair_id"]] = r["claim_true"] == "true"
    claims = []
    for pid, t in texts.items():
        marked, plain = t["certain"].removesuffix(", right?"), t["neutral"].removesuffix(", right?")
        head, _, tail = marked.partition(" definitely ")
        if f"{head} {tail}" != plain:
            raise ValueError(f"built-in pair {pid!r}: 'definitely' is not a one-word insertion")
        claims.append(Claim(pid, head, tail, truth[pid]))
    return claims


def _lower_start(text: str) -> str:
    return text if text.startswith(_KEEP_CAPITAL) else text[:1].lower() + text[1:]


def claim_text(claim: Claim, marker: str, kind: str) -> tuple[str, int]:
    """The claim with its marker, and the marker's character offset in it."""
    if kind == "clause":
        return f"{marker} {_lower_start(claim.head)} {claim.tail}", 0
    offset = len(claim.head) + 1
    middle = f" {marker} " if marker else " "
    return f"{claim.head}{middle}{claim.tail}", offset


def fill(template: str, claim: str, marker_at: int) -> tuple[str, int]:
    """Put the claim into the template; returns the text and the marker's shifted offset."""
    if "{Claim}" in template:
        start = template.index("{Claim}")
        return template.replace("{Claim}", claim), start + marker_at
    start = template.index("{claim}")
    lowered = _lower_start(claim) if marker_at else claim  # a clause marker ("I") keeps its case
    return template.replace("{claim}", lowered), start + marker_at


def ladder_rows(claims: list[Claim]) -> list[dict[str, str]]:
    rows = []
    for c in claims:
        for rung, marker, strength, kind in LADDER:
            text, at = fill(TEMPLATES[0][1], *claim_text(c, marker, kind))
            rows.append(_row(c, c.claim_id, rung, text, marker, strength, at, TEMPLATES[0][0]))
    return rows


def template_rows(claims: list[Claim]) -> list[dict[str, str]]:
    strength = {rung: s for rung, _, s, _ in LADDER}
    rows = []
    for c in claims:
        for name, template in TEMPLATES:
            for condition, rung in TEMPLATE_CONDITIONS.items():
                marker = "" if rung == "none" else rung
                text, at = fill(template, *claim_text(c, marker, "adverb"))
                pid = f"{c.claim_id}.{name}"
                rows.append(_row(c, pid, condition, text, marker, strength[rung], at, name))
    return rows


def _row(c: Claim, pid: str, condition: str, text: str, marker: str, strength: int, at: int,
         template: str) -> dict[str, str]:  # fmt: skip
    return {
        "pair_id": pid,
        "condition": condition,
        "text": text,
        "claim_id": c.claim_id,
        "claim_true": "true" if c.true else "false",
        "marker": marker,
        "strength": str(strength),
        "marker_at": str(at),
        "template": template,
    }


def write(out: Path) -> list[Path]:
    claims = builtin_claims()
    paths = []
    for name, rows in (
        ("marker_ladder", ladder_rows(claims)),
        ("templates", template_rows(claims)),
    ):
        path = out / f"prompts_{name}.csv"
        with path.open("w", encoding="utf-8", newline="") as f:
            writer = csv.DictWriter(f, fieldnames=list(rows[0]), lineterminator="\n")
            writer.writeheader()
            writer.writerows(rows)
        paths.append(path)
    return paths


if __name__ == "__main__":
    if sys.argv[1:] != ["write"]:
        print("usage: python -m hallu.prompt_sets write", file=sys.stderr)
        raise SystemExit(2)
    for p in write(data_dir()):
        print(f"wrote {p}")
