"""Experiment 1 on the tiny model: generation, storage, resume, and what the labellers see."""

from __future__ import annotations

import json

import pyarrow.parquet as pq
import pytest
import torch

from hallu.behavior import experiment as behavior
from hallu.behavior.generate import generate, left_pad
from hallu.behavior.judge import judge_messages
from hallu.behavior.schema import FOLDER, plan_chunks
from hallu.behavior.style import classify
from hallu.engine.hooks import capture_resid_pre
from hallu.engine.models import decoder_layers, load_model
from hallu.errors import UserError
from hallu.prompts import load_pairs
from hallu.report.behavior import report
from hallu.run.local import run_behavior
from hallu.run.prepare import prepare
from hallu.store.local import LocalStore

from .conftest import tiny_config

SMALL = [
    "sweep.experiments=[behavior]",
    "sweep.pairs=3",
    "behavior.n_samples=2",
    "behavior.max_new_tokens=6",
    "behavior.batch_size=4",
    "behavior.prompts_per_chunk=4",
]


@pytest.fixture(scope="module")
def tiny():
    cfg = tiny_config(*SMALL)
    prep = prepare(cfg)
    model, _ = load_model(cfg.model, len(prep.tokenizer))
    prompts = [ids for conds in prep.token_ids.values() for ids in conds.values()]
    prompts[0] = prompts[0][:5]  # a short one, so the batch needs padding
    return prep, model, prompts


def _gen(model, prompts, prep, **kw):
    tok = prep.tokenizer
    return generate(model, prompts, pad_id=tok.pad_token_id, eos_id=tok.eos_token_id, **kw)


def test_batched_greedy_matches_transformers_generate_and_single_prompts(tiny):
    prep, model, prompts = tiny
    tok = prep.tokenizer
    ours = _gen(model, prompts, prep, max_new_tokens=8)
    ids, mask = left_pad(prompts, tok.pad_token_id)
    ref = model.generate(
        input_ids=ids,
        attention_mask=mask,
        max_new_tokens=8,
        do_sample=False,
        pad_token_id=tok.pad_token_id,
        eos_token_id=tok.eos_token_id,
    )
    for i, row in enumerate(ref[:, ids.shape[1] :].tolist()):  # new tokens: after the padded prompt
        want = row[: row.index(tok.eos_token_id)] if tok.eos_token_id in row else row
        assert ours.tokens[i] == want
    for i, p in enumerate(prompts):
        assert _gen(model, [p], prep, max_new_tokens=8).tokens[0] == ours.tokens[i]


def test_sampling_depends_on_the_seed_not_on_the_batch(tiny):
    prep, model, prompts = tiny
    seeds = list(range(100, 100 + len(prompts)))
    batched = _gen(model, prompts, prep, max_new_tokens=8, temperature=1.0, seeds=seeds)
    alone = [
        _gen(model, [p], prep, max_new_tokens=8, temperature=1.0, seeds=[s]).tokens[0]
        for p, s in zip(prompts, seeds, strict=True)
    ]
    assert batched.tokens == alone
    other = _gen(model, prompts, prep, max_new_tokens=8, temperature=1.0, seeds=[7] * len(prompts))
    assert other.tokens != batched.tokens
    greedy = _gen(model, prompts, prep, max_new_tokens=8)
    assert greedy.tokens != batched.tokens


def test_stored_metric_is_the_patching_metric_of_the_unpadded_prompt(tiny):
    prep, model, prompts = tiny
    gen = _gen(model, prompts, prep, max_new_tokens=1)

    for i, p in enumerate(prompts):
        _, logits = capture_resid_pre(model, decoder_layers(model), p)
        assert torch.allclose(prep.metric(gen.first_logits[i]), prep.metric(logits), atol=1e-4)


def test_run_stores_one_row_per_answer_labels_from_the_answer_only_and_resumes(
    tmp_path, monkeypatch
):
    cfg = tiny_config(*SMALL, root=tmp_path)
    prep = prepare(cfg)
    chunks = plan_chunks(cfg, {p: set(c) for p, c in prep.token_ids.items()})
    seen: list[str] = []

    def spy(text, /):  # records what reaches the real classifier
        seen.append(text)
        return classify(text)

    monkeypatch.setattr(behavior, "classify", spy)
    store = LocalStore(tmp_path, "r")
    assert run_behavior(prep, chunks, store, {}) == len(chunks) == 2 * 3  # 2 decodings x 9 prompts
    t = pq.read_table(store.dir / FOLDER)
    assert t.num_rows == 3 * 3 * (1 + 2)
    rows = t.to_pylist()
    prompts_text = {
        f"{p.pair_id}/{c}": text for p in load_pairs(cfg.prompts) for c, text in p.texts.items()
    }
    assert sorted(seen) == sorted(r["response"] for r in rows)
    for r in rows:
        assert r["n_new_tokens"] <= 6 and "[INST]" not in r["response"]
        assert prompts_text[r["prompt_id"]].lower() not in r["response"]
        s = classify(r["response"])
        assert (r["style_label"], r["n_hedges"], r["n_boosters"]) == (
            s.label,
            s.n_hedges,
            s.n_boosters,
        )
        assert (r["seed"] is None) == (r["decoding"] == "greedy")
    # Seeds are logged per answer and shared by a claim's conditions (paired comparison).
    sampled = [r for r in rows if r["decoding"] == "sampled"]
    by = {(r["pair_id"], r["sample_index"]): set() for r in sampled}
    for r in sampled:
        by[(r["pair_id"], r["sample_index"])].add(r["seed"])
    assert all(len(v) == 1 for v in by.values()) and len({r["seed"] for r in sampled}) == 6

    summary = report(store)
    g = summary["decodings"]["greedy"]
    assert sum(r["k"] for r in g["rates"]["certain"].values()) == 3
    assert g["certain_vs_uncertain"]["paired"]["n_claims"] == 3
    text = (store.dir / "behavior" / "summary.json").read_text()
    assert json.loads(text, parse_constant=pytest.fail)["n_answers"] == 27  # strict JSON: no NaN
    assert (store.dir / "behavior" / "figure1.png").stat().st_size > 0
    assert (store.dir / "behavior" / "metric_check.png").stat().st_size > 0

    # A rerun finds every chunk done and rewrites no answer.
    before = {p.name: p.stat().st_mtime_ns for p in (store.dir / FOLDER).iterdir()}
    assert run_behavior(prep, chunks, store, {}) == 0
    assert {p.name: p.stat().st_mtime_ns for p in (store.dir / FOLDER).iterdir()} == before
    with pytest.raises(FileExistsError):
        store.write_table(f"{FOLDER}/{chunks[0].chunk_id}.parquet", t)


def test_judge_sees_the_rubric_and_the_answer_only(tmp_path):
    judge = (
        "behavior.judge={name_or_path:tiny,device:cpu,"
        "tiny:{n_layers:1,d_model:16,n_heads:2,n_kv_heads:1,d_mlp:32}}"
    )
    cfg = tiny_config(*SMALL, "behavior.decoding=[greedy]", judge, root=tmp_path)
    prep = prepare(cfg)
    chunks = plan_chunks(cfg, {p: set(c) for p, c in prep.token_ids.items()})
    store = LocalStore(tmp_path, "j")
    run_behavior(prep, chunks, store, {})
    rows = pq.read_table(store.dir / FOLDER).to_pylist()
    assert len(rows) == 9 and all(r["judge_model"] == "tiny" for r in rows)
    assert all(isinstance(r["judge_reply"], str) for r in rows)
    assert all(r["judge_label"] in (None, "declarative", "tentative", "mixed") for r in rows)
    text = judge_messages("Canberra.").lower()
    for word in ("certain", "neutral", "definitely", "probably", "user", "right?"):
        assert word not in text
    assert "canberra." in text


def test_missing_neutral_rows_name_the_key(tmp_path):
    path = tmp_path / "p.csv"
    path.write_text(
        "pair_id,condition,text\na,certain,It is definitely so?\na,uncertain,It is probably so?\n"
    )
    cfg = tiny_config(f"prompts.path={path}", "sweep.pairs=all", "sweep.experiments=[behavior]")
    prep = prepare(cfg)
    with pytest.raises(UserError, match=r"behavior\.conditions.*no neutral row"):
        plan_chunks(cfg, {p: set(c) for p, c in prep.token_ids.items()})
    ok = tiny_config(
        f"prompts.path={path}", "sweep.pairs=all", "behavior.conditions=[certain,uncertain]"
    )
    assert len(plan_chunks(ok, {p: set(c) for p, c in prepare(ok).token_ids.items()})) == 2


def test_behaviour_only_sweep_does_not_plan_patching(capsys, tmp_path):
    from hallu.run.launch import main

    # These positions are invalid for patching; a behaviour-only sweep must not care.
    args = ["mode=plan", "+sweep=behavior", "sweep.positions=[999]", f"storage.root={tmp_path}"]
    assert main(args) == 0
    out = capsys.readouterr().out
    assert "# behaviour plan" in out and "# work plan" not in out and "720 answers" in out
    assert main(["mode=plan", "sweep.positions=[999]"]) == 2  # patching does validate them
    capsys.readouterr()
    assert main(["mode=plan", "+sweep=full"]) == 0
    out = capsys.readouterr().out
    assert "# work plan" in out and "# behaviour plan" in out
