"""+sweep=mechanism: the edit hooks against the tested patching engine, the analysis on data with
a known answer, and steering the toy model along its found direction vs random directions."""

from __future__ import annotations

import numpy as np
import pandas as pd
import torch

from hallu.analysis import mechanism as am
from hallu.behavior.generate import generate
from hallu.config import compose
from hallu.engine.hooks import capture_resid_pre, patched_logits
from hallu.engine.models import decoder_layers, load_model
from hallu.engine.steering import Edit, broadcast, held
from hallu.mechanism.units import prepare_mechanism
from hallu.mechanism.worker import MechanismWorker
from hallu.run.prepare import prepare
from tests.conftest import tiny_config


def test_a_held_patch_equals_the_engine_and_lasts_through_generation():
    cfg = tiny_config()
    prep = prepare(cfg)
    model, _ = load_model(cfg.model, len(prep.tokenizer))
    layers = decoder_layers(model)
    pid = next(iter(prep.token_ids))
    src, tgt = prep.token_ids[pid]["certain"], prep.token_ids[pid]["uncertain"]
    resid, _ = capture_resid_pre(model, layers, src)
    ref = patched_logits(model, layers, tgt, resid, [((1, len(tgt) - 1, len(src) - 1),)], 4)[0]
    edit = Edit(1, [-1], resid[1, len(src) - 1][None], mode="set")
    with held(layers, [edit]):
        gen = generate(model, [tgt], pad_id=0, eos_id=3, max_new_tokens=3)
    torch.testing.assert_close(gen.first_logits[0], ref.float(), atol=1e-5, rtol=0)
    plain = generate(model, [tgt], pad_id=0, eos_id=3, max_new_tokens=3)
    assert not torch.allclose(plain.first_logits[0], ref.float())  # the patch did something
    zero = Edit(2, [-1], broadcast(torch.zeros(resid.shape[-1]), 1))
    with held(layers, [zero]):
        same = generate(model, [tgt], pad_id=0, eos_id=3, max_new_tokens=3)
    assert same.tokens == plain.tokens
    torch.testing.assert_close(same.first_logits, plain.first_logits)


def test_left_padding_puts_the_edit_on_the_same_token():
    cfg = tiny_config()
    prep = prepare(cfg)
    model, _ = load_model(cfg.model, len(prep.tokenizer))
    layers = decoder_layers(model)
    short, long = sorted((ids["certain"] for ids in prep.token_ids.values()), key=len)[::11][:2]
    vec = torch.randn(cfg.model.tiny.d_model, generator=torch.Generator().manual_seed(0))
    alone = []
    for ids in (short, long):
        with held(layers, [Edit(0, [-3], broadcast(vec, 1))]):
            alone.append(generate(model, [ids], pad_id=0, eos_id=3, max_new_tokens=1).first_logits)
    with held(layers, [Edit(0, [-3, -3], broadcast(vec, 2))]):
        both = generate(model, [short, long], pad_id=0, eos_id=3, max_new_tokens=1).first_logits
    assert len(short) != len(long)
    torch.testing.assert_close(both, torch.cat(alone), atol=1e-4, rtol=1e-4)


def _synthetic(sign: float, n_claims: int = 12, d: int = 8) -> pd.DataFrame:
    """Activations with a planted direction: certain = base + e, uncertain = base + sign * e."""
    rng = np.random.default_rng(0)
    e = np.eye(d)[0] * 3
    rows = []
    for c in range(n_claims):
        base = rng.standard_normal(d)
        for rung, cond, s, v in [("def", "certain", 1, base + e), ("none", "neutral", 0, base),
                                 ("prob", "uncertain", -1, base + sign * e)]:  # fmt: skip
            noise = 0.1 * rng.standard_normal(d)
            meta = dict(pair_id=f"c{c}", claim_id=f"c{c}", layer=0, site="last", lens=0.0)
            rows.append(dict(meta, rung=rung, condition=cond, strength=s, vector=v + noise))
    return pd.DataFrame(rows)


def test_directions_find_the_planted_opposite_or_shared_axis():
    opposite = am.directions(_synthetic(-1.0))[0]
    assert opposite["cosine"][0] < -0.99 and opposite["cosine"][2] < -0.98
    same = am.directions(_synthetic(+1.0))[0]
    assert same["cosine"][1] > 0.98
    assert am.held_out_auroc(_synthetic(-1.0), 0, "last")[0] == 1.0
    assert am.held_out_auroc(_synthetic(+1.0), 0, "last")[0] < 0.8  # same axis: inseparable


def test_toy_steering_moves_the_declarative_rate_and_random_directions_do_not():
    """8 claims x 8 samples per alpha, common random numbers across alphas (so a curve's steps
    are the edit's doing). Tolerance: one answer of the 64 per alpha (1/64) per step for the
    found direction's monotonicity; a random direction of the same norm must move the rate by
    less than half as much as the found one over the same alpha range."""
    cfg = compose(
        ["model=toy", "+sweep=mechanism", "prompts=marker_ladder", "sweep.pairs=8",
         "sweep.mechanism.alphas=[-2,-1,0,1,2]", "sweep.mechanism.n_samples=8"]
    )  # fmt: skip
    prep = prepare(cfg)
    worker = MechanismWorker(prep, "test")
    mech = prepare_mechanism(prep)
    from hallu.mechanism.schema import Unit
    from hallu.mechanism.units import capture_units

    cap = worker.run(capture_units(cfg, mech, 4)[0]).to_pandas()
    g = cap[(cap.layer == 3) & (cap.site == "last")]
    found = am.claim_diffs(g, "definitely", "none")[1].mean(0)
    rand = np.random.default_rng(0).standard_normal(found.shape)
    rand *= np.linalg.norm(found) / np.linalg.norm(rand)
    spans = {}
    for name, vec in (("found", found), ("random_0", rand)):
        unit = Unit("steer", name, tuple(sorted(set(g.claim_id))), (3,), name, tuple(vec.tolist()))
        steer = worker.run(unit).to_pandas()
        curve = [c["declarative"][0] for c in am.steering_curves(steer)]
        spans[name] = curve[-1] - curve[0]
        if name == "found":
            assert am.monotone(curve, tol=1 / 64), curve
    assert spans["found"] > 0.5, spans
    assert abs(spans["random_0"]) < spans["found"] / 2, spans


def test_marker_site_is_the_marker_token_with_or_without_marker_at():
    """marker_at (the ladder) and the first token that differs (the built-in set) agree."""
    sites = {}
    for name in ("builtin", "marker_ladder"):
        prep = prepare(compose(["model=toy", f"prompts={name}", "sweep.pairs=4"]))
        mech = prepare_mechanism(prep)
        for r in mech.rows:
            if r.condition is not None:
                ids = mech.ids[r.prompt_id]
                tok = prep.tokenizer.convert_ids_to_tokens(
                    [ids[mech.offsets[r.prompt_id]["marker"]]]
                )
                sites.setdefault(name, []).append((r.pair_id, r.condition, tok[0]))
    assert sorted(sites["builtin"]) == sorted(sites["marker_ladder"])
    assert {t for _, c, t in sites["builtin"] if c != "neutral"} == {"definitely", "probably"}
    ladder = prepare_mechanism(prepare(compose(["model=toy", "prompts=marker_ladder"])))
    doubt = next(r for r in ladder.rows if r.rung == "not_sure")
    ids = ladder.ids[doubt.prompt_id]
    assert ids[ladder.offsets[doubt.prompt_id]["marker"]] == ids[5]  # <s> [INST] i am not *sure*


def test_rates_count_prompts_not_samples_and_read_the_judge():
    df = pd.DataFrame(
        {"claim_id": ["a"] * 4 + ["b"], "prompt_id": ["a"] * 4 + ["b"], "alpha": 0.0,
         "style_label": ["declarative"] * 4 + ["tentative"], "metric_value": 1.0,
         "judge_label": ["declarative", None, None, None, "tentative"]}
    )  # fmt: skip
    (row,) = am.rates(df.assign(sample_key=df.prompt_id), ["alpha"])
    assert row["declarative"][0] == 0.5  # claim a 1.0, claim b 0.0: not 4/5
    assert row["judge"][0] == 0.5 and row["n_claims"] == 2
