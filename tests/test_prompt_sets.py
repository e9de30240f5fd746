"""The derived prompt sets (marker ladder, templates) and the system prompt presets."""

from __future__ import annotations

import csv
from pathlib import Path

import pytest

from hallu.config import compose
from hallu.engine.models import load_tokenizer
from hallu.errors import UserError
from hallu.prompt_meta import load_prompt_rows
from hallu.prompt_sets import LADDER, TEMPLATES, builtin_claims, ladder_rows, template_rows
from hallu.prompts import LLAMA2_DEFAULT_SYSTEM, builtin_path, load_pairs, render


def test_shipped_files_are_what_the_generator_writes():
    claims = builtin_claims()
    for name, rows in (
        ("marker_ladder", ladder_rows(claims)),
        ("templates", template_rows(claims)),
    ):
        with builtin_path(name).open(encoding="utf-8") as f:
            assert list(csv.DictReader(f)) == rows, "regenerate: python -m hallu.prompt_sets write"


def test_ladder_has_every_rung_on_every_claim_in_strength_order():
    rows = load_prompt_rows(compose(["prompts=marker_ladder"]).prompts)
    by_claim: dict[str, list] = {}
    for r in rows:
        by_claim.setdefault(r.claim_id, []).append(r)
    assert len(by_claim) == 48
    for claim_rows in by_claim.values():
        assert [r.rung for r in claim_rows] == [rung for rung, *_ in LADDER]
        strengths = [r.strength for r in claim_rows]
        assert strengths == sorted(strengths, reverse=True) and len(set(strengths)) == 7
        assert len({r.claim_true for r in claim_rows}) == 1
        for r in claim_rows:  # the marker sits where marker_at says
            assert r.text[r.marker_at :].lower().startswith(r.marker.lower())
    assert sum(r.claim_true for r in rows) == 7 * 32  # 32 true claims, 16 false (built-in set)


def test_ladder_pairs_use_the_rungs_prompts_conditions_name():
    cfg = compose(["prompts=marker_ladder", "prompts.conditions.uncertain=doubt"]).prompts
    pair = load_pairs(cfg)[0]
    assert pair.texts["certain"] == "The capital of Australia is definitely Canberra, right?"
    assert pair.texts["uncertain"] == "I doubt the capital of Australia is Canberra, right?"
    with pytest.raises(UserError, match=r"certain > neutral > uncertain"):
        load_pairs(compose(["prompts=marker_ladder", "prompts.conditions.certain=maybe"]).prompts)
    with pytest.raises(UserError, match=r"name no rung.*'certainly'"):
        load_pairs(compose(["prompts=marker_ladder", "prompts.conditions.certain=sure"]).prompts)


def test_templates_give_each_claim_at_least_three_phrasings():
    cfg = compose(["prompts=templates"]).prompts
    pairs = load_pairs(cfg)
    assert len(pairs) == 48 * len(TEMPLATES) and len(TEMPLATES) >= 3
    texts = {p.texts["certain"] for p in pairs if p.pair_id.startswith("capital-japan.")}
    assert len(texts) == len(TEMPLATES)
    assert all("definitely" in t for t in texts)


def test_toy_tokenizer_knows_every_word_of_both_sets():
    tok = load_tokenizer(compose(["model=toy"]).model)
    for name in ("marker_ladder", "templates"):
        for r in load_prompt_rows(compose([f"prompts={name}"]).prompts):
            ids = tok(r.text, add_special_tokens=False)["input_ids"]
            assert tok.unk_token_id not in ids, (name, r.text)


def _write(tmp_path: Path, edit) -> Path:
    rows = ladder_rows(builtin_claims()[:2])
    edit(rows)
    path = tmp_path / "ladder.csv"
    with path.open("w", encoding="utf-8", newline="") as f:
        w = csv.DictWriter(f, fieldnames=list(rows[0]))
        w.writeheader()
        w.writerows(rows)
    return path


@pytest.mark.parametrize(
    ("edit", "message"),
    [
        (lambda rows: rows.pop(3), r"pair 'capital-australia' lacks rung\(s\) \['probably'\]"),
        (lambda rows: rows[8].update(strength="5"), r"line 10: rung 'definitely' has strength 5"),
        (lambda rows: rows[1].update(strength="x"), r"line 3: strength 'x' is not an integer"),
        (
            lambda rows: [r.update(strength="2") for r in rows if r["condition"] == "definitely"],
            r"rungs 'certainly' and 'definitely' share strength 2",
        ),
    ],
)
def test_a_malformed_ladder_is_one_line_naming_the_file_and_the_fix(tmp_path, edit, message):
    path = _write(tmp_path, edit)
    cfg = compose(["prompts=marker_ladder", f"prompts.path={path}"]).prompts
    for load in (load_pairs, load_prompt_rows):
        with pytest.raises(UserError, match=message) as err:
            load(cfg)
        assert str(path) in str(err.value) and "\n" not in str(err.value)


@pytest.mark.parametrize("preset", [None, "llama2_default", "Answer in one word."])
def test_system_prompt_presets(preset):
    over = [] if preset is None else [f"prompts.system_prompt='{preset}'"]
    cfg = compose(["model=toy", *over])
    tok = load_tokenizer(cfg.model)
    text = tok.decode(render(tok, "Is the sky blue?", cfg.prompts))
    assert ("<<SYS>>" in text) == (preset is not None)
    if preset == "llama2_default":  # the toy knows some of its words: "helpful" is not one
        assert "respectful" not in text and "honest" not in text and "you are" in text
        assert LLAMA2_DEFAULT_SYSTEM.startswith("You are a helpful")
