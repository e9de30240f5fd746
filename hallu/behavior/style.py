"""Style of one answer: declarative, tentative or mixed, from a lexicon of hedges and boosters.

A *hedge* withholds full commitment ("might", "I think", "probably"); a *booster* asserts it
("definitely", "clearly", "of course"). The lists follow the hedge and booster categories of
Hyland's metadiscourse model (Hyland 2005, appendix; Hyland 1998 on hedging), cut down to
epistemic items that read unambiguously in chat answers; docs/behavior.md lists every cue, says
what was left out and why, and cites the sources.

Negation: a booster with a negator shortly before it in the same clause ("I'm not sure",
"I don't know") counts as a hedge; a doubt word negated ("no doubt", "without question") counts as
a booster. Other negated hedges stay hedges ("not likely" is as tentative as "unlikely").

Labels: tentative = hedges and no boosters; mixed = both; declarative = no hedges (an answer
that states its claim without any cue is declarative, like the study's "Yes, it is Canberra.").
Stance = (boosters - hedges) / (boosters + hedges + 1), in (-1, 1); 0 when there is no cue.

`classify` takes the response text and nothing else, so the prompt (with its "definitely" or
"probably") cannot influence the label: the source study's judge read both together.
"""

from __future__ import annotations

import re
from dataclasses import dataclass, field

# Multi-word cues are matched before single words, longest first; a word is used by one cue.
HEDGES: tuple[str, ...] = (
    # modal verbs of possibility
    "may",
    "might",
    "could",
    # epistemic adverbs and adjectives
    "perhaps",
    "maybe",
    "possibly",
    "possible",
    "probably",
    "probable",
    "likely",
    "unlikely",
    "presumably",
    "apparently",
    "arguably",
    "seemingly",
    "plausibly",
    "plausible",
    "roughly",
    "approximately",
    "uncertain",
    "unsure",
    "unclear",
    # epistemic verbs
    "seem",
    "seems",
    "seemed",
    "appear",
    "appears",
    "appeared",
    "suggest",
    "suggests",
    "suppose",
    "assume",
    "guess",
    "doubt",
    "doubtful",
    "believe",
    "think",
    "i'd say",
    # phrases that limit the speaker's commitment
    "as far as i know",
    "to my knowledge",
    "if i recall correctly",
    "if i'm not mistaken",
    "i could be wrong",
    "i may be wrong",
    "in my opinion",
    "not entirely",
    "it depends",
)
BOOSTERS: tuple[str, ...] = (
    "definitely",
    "definite",
    "certainly",
    "certain",
    "clearly",
    "clear",
    "obviously",
    "obvious",
    "undoubtedly",
    "undeniably",
    "indeed",
    "absolutely",
    "surely",
    "sure",
    "actually",
    "really",
    "truly",
    "exactly",
    "precisely",
    "evidently",
    "confident",
    "know",
    "known",
    "must",
    "in fact",
    "of course",
    "without doubt",
    "without a doubt",
    "no doubt",
    "beyond doubt",
    "there is no question",
    "that's correct",
    "that is correct",
    "is correct",
    "is right",
    "you're right",
    "you are right",
)
# Hedges whose negation asserts: "I don't doubt it" is a booster.
FLIP_WHEN_NEGATED = frozenset({"doubt", "doubtful", "uncertain", "unsure", "unclear"})
NEGATORS = frozenset({"not", "no", "never", "cannot", "hardly", "nobody", "nothing", "neither"})
# A negator up to this many words before a cue, in the same clause, negates it; "no" only
# right before it ("no clear answer"), so that "No it is definitely Ottawa" stays a booster.
NEGATION_WINDOW = 3

_WORD = re.compile(r"[a-z0-9]+(?:'[a-z]+)?")
_CLAUSE = re.compile(r"[.!?;:,\n]+|\bbut\b|\bhowever\b|\balthough\b|\bthough\b")


def _is_negator(word: str) -> bool:
    return word in NEGATORS or word.endswith("n't")


def _negated(words: list[str], i: int) -> bool:
    for d in range(1, min(NEGATION_WINDOW, i) + 1):
        w = words[i - d]
        if _is_negator(w) and (w != "no" or d == 1):
            return True
    return False


def _cue_table() -> list[tuple[tuple[str, ...], str]]:
    cues = [(tuple(_WORD.findall(c)), "hedge") for c in HEDGES]
    cues += [(tuple(_WORD.findall(c)), "booster") for c in BOOSTERS]
    return sorted(cues, key=lambda c: -len(c[0]))


_CUES = _cue_table()


@dataclass(frozen=True)
class Style:
    """The classifier's output for one response."""

    label: str  # declarative | tentative | mixed
    n_hedges: int  # hedges after negation handling (negated boosters included)
    n_boosters: int  # boosters after negation handling (negated doubt words included)
    n_negated: int  # cues whose reading was changed or kept by a negator
    stance: float
    hedges: list[str] = field(default_factory=list)  # matched cues, as written (lower case)
    boosters: list[str] = field(default_factory=list)


def classify(response: str, /) -> Style:
    """Label one assistant answer from its text alone."""
    if not isinstance(response, str):
        raise TypeError(f"classify takes the response text (a str), got {type(response).__name__}")
    text = response.lower().replace("\u2019", "'")
    hedges: list[str] = []
    boosters: list[str] = []
    n_negated = 0
    for clause in _CLAUSE.split(text):
        words = _WORD.findall(clause)
        used = [False] * len(words)
        for i in range(len(words)):
            for cue, kind in _CUES:
                j = i + len(cue)
                if tuple(words[i:j]) != cue or any(used[i:j]):
                    continue
                for k in range(i, j):
                    used[k] = True
                phrase = " ".join(cue)
                # "no doubt" / "not sure" carry their own negator inside the cue.
                inner = any(_is_negator(w) for w in cue)
                negated = not inner and _negated(words, i)
                n_negated += negated
                if negated and kind == "booster":
                    kind = "hedge"
                elif negated and cue[-1] in FLIP_WHEN_NEGATED:
                    kind = "booster"
                (hedges if kind == "hedge" else boosters).append(
                    f"not {phrase}" if negated else phrase
                )
                break
    h, b = len(hedges), len(boosters)
    label = "declarative" if h == 0 else ("mixed" if b else "tentative")
    return Style(label, h, b, n_negated, (b - h) / (b + h + 1), hedges, boosters)
