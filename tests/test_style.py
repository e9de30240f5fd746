"""The lexicon classifier on hand-labelled answers written for these tests."""

from __future__ import annotations

import csv
import inspect
from pathlib import Path

import pytest

from hallu.behavior.style import classify

LABELLED = Path(__file__).parent / "data" / "style_labelled.csv"


def _rows() -> list[dict[str, str]]:
    with LABELLED.open(encoding="utf-8") as f:
        return list(csv.DictReader(f))


def test_accuracy_on_the_hand_labelled_set():
    rows = _rows()
    assert len(rows) >= 30 and {r["label"] for r in rows} == {"declarative", "tentative", "mixed"}
    wrong = [(r["label"], classify(r["response"]).label, r["response"]) for r in rows]
    wrong = [w for w in wrong if w[0] != w[1]]
    accuracy = 1 - len(wrong) / len(rows)
    print(f"lexicon accuracy {accuracy:.3f} on {len(rows)} hand-labelled answers; misses: {wrong}")
    assert accuracy >= 0.9, wrong
    # Every answer written to test negation or mixing is labelled right.
    hard = [
        w
        for w in wrong
        if any(r["covers"] in ("negation", "mixed") and r["response"] == w[2] for r in rows)
    ]
    assert not hard, hard


@pytest.mark.parametrize(
    "text,label,hedges,boosters",
    [
        ("I'm not sure.", "tentative", ["not sure"], []),
        ("I am sure.", "declarative", [], ["sure"]),
        ("I don't know the answer.", "tentative", ["not know"], []),
        ("There is no doubt about it.", "declarative", [], ["no doubt"]),
        ("I do not doubt it.", "declarative", [], ["not doubt"]),
        ("It is not likely.", "tentative", ["not likely"], []),
        ("No, it is definitely Ottawa.", "declarative", [], ["definitely"]),
        (
            "It is clearly Ottawa, but I'm not certain of the year.",
            "mixed",
            ["not certain"],
            ["clearly"],
        ),
        ("Paris is the capital of France.", "declarative", [], []),
    ],
)
def test_negation_and_cue_counts(text, label, hedges, boosters):
    s = classify(text)
    assert (s.label, s.hedges, s.boosters) == (label, hedges, boosters)
    assert s.n_hedges == len(hedges) and s.n_boosters == len(boosters)
    b, h = len(boosters), len(hedges)
    assert s.stance == pytest.approx((b - h) / (b + h + 1))


def test_the_classifier_takes_only_the_answer_text():
    params = list(inspect.signature(classify).parameters.values())
    assert len(params) == 1 and params[0].kind is inspect.Parameter.POSITIONAL_ONLY
    with pytest.raises(TypeError):
        classify("The answer.", "The capital is definitely Canberra, right?")  # type: ignore[call-arg]
    with pytest.raises(TypeError):
        classify({"prompt": "x", "response": "y"})  # type: ignore[arg-type]
