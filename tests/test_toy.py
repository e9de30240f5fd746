"""The committed toy model holds its planted bias, and patching finds where it travels."""

from __future__ import annotations

import json

import numpy as np
import pytest
from scipy.stats import binomtest

from hallu.config import compose
from hallu.engine.models import load_model, load_tokenizer
from hallu.engine.toy import TOY_DIR, ToySpec, first_word_rates, train
from hallu.run.worker import Worker


def _wilson(k: int, n: int) -> tuple[float, float]:
    ci = binomtest(k, n).proportion_ci(confidence_level=0.95, method="wilson")
    return ci.low, ci.high


@pytest.fixture(scope="module")
def toy():
    cfg = compose(["model=toy", "metric=yes_vs_maybe"]).model
    tokenizer = load_tokenizer(cfg)
    model, _ = load_model(cfg, len(tokenizer))
    return model, tokenizer


def test_learned_first_word_rates_sit_in_the_planted_wilson_intervals(toy):
    spec = ToySpec()
    rates = first_word_rates(*toy)
    for condition in ("certain", "uncertain", "neutral"):
        k = getattr(spec, f"declarative_{condition}")
        low, high = _wilson(k, spec.per_claim)
        assert low <= rates[condition] <= high, (condition, rates[condition], low, high)
    # The planted asymmetry: certainty is mirrored far better than uncertainty.
    assert rates["certain"] - rates["neutral"] > 0.15
    assert rates["neutral"] - rates["uncertain"] > 0.15


def test_patching_locus_is_the_marker_early_and_the_last_position_late():
    cfg = compose(
        [
            "model=toy",
            "metric=yes_vs_maybe",
            "+sweep=full",
            "sweep.pairs=6",
            "sweep.directions=[restore_confidence]",
            "sweep.controls=[]",  # the experiment's rows only (full.yaml adds the controls)
        ]
    )
    worker = Worker(cfg, "toy-test")
    plan = worker.prep.plan()
    rows = [r for s in plan.shards for r in worker.run_shard(s).to_pylist()]
    last_layer = plan.n_layers - 1
    for pid, ids in worker.prep.token_ids.items():
        marker = next(
            i
            for i, (a, b) in enumerate(zip(ids["certain"], ids["uncertain"], strict=True))
            if a != b
        )
        mine = [r for r in rows if r["pair_id"] == pid]
        for layer, expected in ((0, marker), (last_layer, len(ids["uncertain"]) - 1)):
            cells = {r["position"]: r["restoration"] for r in mine if r["layer"] == layer}
            best = max(cells, key=cells.get)
            assert best == expected, (pid, layer, best, expected, cells[best])
        assert max(r["restoration"] for r in mine if r["layer"] == last_layer) > 0.3


@pytest.mark.slow
def test_retraining_with_the_same_seed_reproduces_the_saved_behaviour(tmp_path):
    saved = json.loads((TOY_DIR / "training.json").read_text())
    report = train(ToySpec(**saved["spec"]), tmp_path / "toy", log=lambda _: None)
    again = report["learned_p_yes"]
    for condition, p in saved["learned_p_yes"].items():
        # Same seed, same data: identical on one machine; 0.03 allows other BLAS builds.
        assert abs(again[condition] - p) < 0.03, (condition, again[condition], p)
    assert np.isclose(report["final_loss_mean_last50"], saved["final_loss_mean_last50"], atol=0.02)


def test_behaviour_experiment_recovers_the_planted_rates(tmp_path, capsys):
    """Sampled answers, labelled by the lexicon, land in the planted rates' Wilson intervals."""
    from hallu.run.launch import main

    args = [
        "model=toy",
        "metric=yes_vs_maybe",
        "+sweep=behavior",
        "behavior.decoding=[sampled]",
        "behavior.temperature=1.0",
        "behavior.n_samples=2",
        "behavior.max_new_tokens=16",
        f"storage.root={tmp_path}",
        "run_id=toy",
    ]
    assert main(args) == 0, capsys.readouterr().err
    summary = json.loads((tmp_path / "toy" / "behavior" / "summary.json").read_text())
    rates = summary["decodings"]["sampled"]["rates_all_samples"]
    spec = ToySpec()
    for condition in ("certain", "uncertain", "neutral"):
        low, high = _wilson(getattr(spec, f"declarative_{condition}"), spec.per_claim)
        assert low <= rates[condition]["declarative"] <= high, (condition, rates[condition])
    assert summary["decodings"]["sampled"]["n_answers"] == 48 * 3 * 2
