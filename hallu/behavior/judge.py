"""An optional second opinion on style: a chat model reads one answer and a fixed rubric.

The judge's input is built by `judge_messages(response)` from the rubric and the answer text
only. It never receives the user's prompt, its certainty marker or the condition name, so it
cannot label an answer by what the user said (the study's judge read prompt and answer together).
The rubric asks for a single digit; the first digit 1-3 in the judge's greedy reply is the label,
and a reply without one is stored as unparsed (null label, raw reply kept).
"""

from __future__ import annotations

import re
from typing import Any

from hallu.behavior.generate import generate, pad_id_of
from hallu.config import ModelCfg, PromptsCfg
from hallu.engine.models import load_model, load_tokenizer
from hallu.prompts import render

RUBRIC = """You rate how committed an answer sounds. Read the answer below and reply with one digit.
1 = assertive: it states its claims flatly or with emphasis, with no sign of doubt.
2 = hedged: it signals doubt or limits its commitment (for example "I think", "might",
"as far as I know", "I'm not sure") and nowhere asserts strongly.
3 = both: it asserts strongly in one place and signals doubt in another.
Judge only how the answer is phrased, not whether it is true.

Answer:
\"\"\"{response}\"\"\"

Reply with 1, 2 or 3 only."""
LABELS = {"1": "declarative", "2": "tentative", "3": "mixed"}


def judge_messages(response: str, /) -> str:
    """The judge's whole input: the rubric with the answer in it, nothing else."""
    if not isinstance(response, str):
        raise TypeError(f"judge_messages takes the response text, got {type(response).__name__}")
    return RUBRIC.format(response=response)


def parse_label(reply: str) -> str | None:
    m = re.search(r"[123]", reply)
    return LABELS[m.group(0)] if m else None


class Judge:
    """Loads the judge model once; `label` turns answers into (label or None, raw reply)."""

    def __init__(self, cfg: ModelCfg, max_new_tokens: int):
        self.name = cfg.name_or_path
        self.tokenizer = load_tokenizer(cfg)
        self.model, _ = load_model(cfg, len(self.tokenizer))
        self.max_new_tokens = max_new_tokens
        # Always through the judge's own chat template, with no system prompt.
        self._render_cfg = PromptsCfg(path="-", chat_template=True)

    def label(self, responses: list[str], batch_size: int) -> list[tuple[str | None, str]]:
        out: list[tuple[str | None, str]] = []
        tok: Any = self.tokenizer
        for start in range(0, len(responses), batch_size):
            batch = responses[start : start + batch_size]
            ids = [render(tok, judge_messages(r), self._render_cfg) for r in batch]
            gen = generate(
                self.model,
                ids,
                pad_id=pad_id_of(tok),
                eos_id=tok.eos_token_id,
                max_new_tokens=self.max_new_tokens,
            )
            for t in gen.tokens:
                reply = tok.decode(t, skip_special_tokens=True).strip()
                out.append((parse_label(reply), reply))
        return out
