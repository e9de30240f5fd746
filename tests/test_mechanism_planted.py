"""The mechanism analyses on `model=planted` (hallu/engine/planted.py), whose answers follow from
its construction: the marker writes its sign; head `layer.head` copies it to the last position
(dim X); head `late_layer.late_head` copies the pathway gain (dim Y); the late layer's MLP writes
X * Y into OUT, which the unembedding reads as the metric. Skipped until the planted model is in
the tree (it is built on another branch)."""

from __future__ import annotations

import numpy as np
import pytest

from hallu.config import CONF_DIR, compose

pytestmark = pytest.mark.skipif(
    not (CONF_DIR / "model" / "planted.yaml").exists(), reason="model=planted not in this tree"
)


def _setup(*overrides: str):
    from hallu.mechanism.units import capture_units, prepare_mechanism
    from hallu.mechanism.worker import MechanismWorker
    from hallu.run.prepare import prepare

    cfg = compose(
        ["model=planted", "+sweep=mechanism", "prompts=marker_ladder", "sweep.pairs=6",
         "sweep.mechanism.alphas=[-1,0,0.5,2]", "sweep.mechanism.n_samples=1", *overrides]
    )  # fmt: skip
    prep = prepare(cfg)
    worker = MechanismWorker(prep, "planted")
    mech = prepare_mechanism(prep)
    cap = worker.run(capture_units(cfg, mech, prep.shape.n_layers)[0]).to_pandas()
    return cfg, prep, worker, cap


def _unit(v: np.ndarray) -> np.ndarray:
    return v / np.linalg.norm(v)


def test_the_found_direction_is_the_planted_one():
    from hallu.analysis.mechanism import claim_diffs, directions
    from hallu.engine import planted

    cfg, _, _, cap = _setup()
    after_copy = cfg.model.planted.layer + 1  # resid_pre after the copying head's layer
    g = cap[(cap.layer == after_copy) & (cap.site == "last")]
    found = claim_diffs(g, "definitely", "none")[1].mean(0)
    planted_dir = np.eye(len(found))[planted.X]
    assert _unit(found) @ planted_dir >= 0.99
    row = next(r for r in directions(cap) if r["layer"] == after_copy and r["site"] == "last")
    assert row["cosine"][0] <= -0.99  # uncertain is the opposite sign on the same axis
    assert abs(row["lens_certain"]) < 1e-3  # X is not read by the unembedding...
    last = next(r for r in directions(cap) if r["layer"] == cfg.model.planted.n_layers - 1)
    assert abs(last["lens_certain"] - cfg.model.planted.certain_gain) < 1e-3  # ...OUT is
    before = next(r for r in directions(cap) if r["layer"] == cfg.model.planted.layer)
    assert before["norm_certain"][0] < 1e-3  # nothing reaches the last position before the copy


@pytest.mark.parametrize(("certain_gain", "uncertain_gain"), [(1.0, 1.0), (2.0, 0.5)])
def test_steering_moves_the_metric_by_gain_times_alpha(certain_gain, uncertain_gain):
    from hallu.analysis.mechanism import claim_diffs
    from hallu.mechanism.schema import Unit

    cfg, _, worker, cap = _setup(
        f"model.planted.certain_gain={certain_gain}",
        f"model.planted.uncertain_gain={uncertain_gain}",
    )
    last = cfg.model.planted.n_layers - 1  # after the late MLP wrote OUT = X * Y
    g = cap[(cap.layer == last) & (cap.site == "last")]
    found = claim_diffs(g, "definitely", "none")[1].mean(0)
    unit = Unit("steer", "p", tuple(sorted(set(g.claim_id))), (last,), "found", tuple(found))
    steer = worker.run(unit).to_pandas()
    base = steer[steer.alpha == 0].metric_value.to_numpy()
    for alpha in (-1.0, 0.5, 2.0):
        moved = steer[steer.alpha == alpha].metric_value.to_numpy() - base
        np.testing.assert_allclose(moved, certain_gain * alpha, atol=1e-3)


@pytest.mark.parametrize(("certain_gain", "uncertain_gain"), [(1.0, 1.0), (1.0, 2.0)])
def test_head_and_path_patching_rank_the_planted_head_first_and_no_head_writes_the_readout(
    certain_gain, uncertain_gain
):
    """With these gains 2 x uncertain_gain (the planted head) exceeds |uncertain - certain|
    (the late head), so the construction ranks the planted head first."""
    from hallu.engine.adapters import Adapter
    from hallu.engine.paths import head_effects

    cfg, prep, worker, _ = _setup(
        f"model.planted.certain_gain={certain_gain}",
        f"model.planted.uncertain_gain={uncertain_gain}",
    )
    spec = cfg.model.planted
    pair = worker.mech.pairs[0]
    ids = {c: worker.mech.ids[worker.mech.pair_prompt[pair][c]] for c in ("certain", "uncertain")}
    eff = head_effects(Adapter(worker.model), ids["certain"], ids["uncertain"], prep.metric)
    total = (eff["total"] - eff["corrupted"]).abs()
    assert divmod(int(total.argmax()), total.shape[1]) == (spec.layer, spec.head)
    assert abs(float(total[spec.layer, spec.head]) - 2 * spec.uncertain_gain) < 1e-3
    # The heads write X and Y, which the unembedding does not read: the MLP writes OUT.
    assert float((eff["direct"] - eff["corrupted"]).abs().max()) < 1e-3
    # Path patching (later heads frozen, the late MLP recomputed): the planted head sends
    # X = +1 where the target had -1, and the MLP multiplies it by the target's Y (the
    # uncertain gain, since the late head is frozen): 2 x uncertain_gain, ranked first.
    path = (eff["path"] - eff["corrupted"]).abs()
    assert divmod(int(path.argmax()), path.shape[1]) == (spec.layer, spec.head)
    assert abs(float(path[spec.layer, spec.head]) - 2 * spec.uncertain_gain) < 1e-3
    # the late head alone swaps the gain: OUT goes from -uncertain_gain to -certain_gain
    late = float(eff["path"][spec.late_layer, spec.late_head] - eff["corrupted"])
    assert abs(late - (spec.uncertain_gain - spec.certain_gain)) < 1e-3
    others = path.clone()
    others[spec.layer, spec.head] = others[spec.late_layer, spec.late_head] = 0
    assert float(others.max()) < 1e-3  # no other head carries anything


def test_patch_and_generate_after_the_copy_flips_the_first_word():
    from hallu.behavior.generate import generate
    from hallu.engine.hooks import capture_resid_pre
    from hallu.engine.steering import Edit, held

    cfg, prep, worker, _ = _setup()
    tok, layer = prep.tokenizer, cfg.model.planted.layer + 1
    confident = {tok.convert_tokens_to_ids(t) for t in ("yes", "is")}
    tentative = {tok.convert_tokens_to_ids(t) for t in ("maybe", "might")}
    for pair in worker.mech.pairs:
        src, tgt = (
            worker.mech.ids[worker.mech.pair_prompt[pair][c]] for c in ("certain", "uncertain")
        )
        resid, _ = capture_resid_pre(worker.model, worker.layers, src)

        def first(edits, tgt=tgt):
            with held(worker.layers, edits):
                g = generate(worker.model, [tgt], pad_id=0, eos_id=3, max_new_tokens=1)
            return g.tokens[0][0]

        assert first([]) in tentative
        patch = Edit(layer, [-1], resid[layer, -1][None], mode="set")
        assert first([patch]) in confident
        early = Edit(
            cfg.model.planted.layer, [-1], resid[cfg.model.planted.layer, -1][None], mode="set"
        )
        assert first([early]) in tentative  # before the copy, the last position holds nothing
