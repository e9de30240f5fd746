"""The replication across model families: pooling, the combined reading, and the multirun of
tiny random-weight versions of four families end to end, with its comparative report."""

from __future__ import annotations

import json
import math
from dataclasses import dataclass

import numpy as np
import pytest

from hallu.analysis import verdicts
from hallu.analysis.pipeline import analyse
from hallu.analysis.pooling import random_effects, se_from_interval
from hallu.analysis.results import Options
from hallu.analysis.scorecard import BEHAVIOUR_ASYMMETRY, CRITERIA
from hallu.analysis.verdicts import Verdict
from hallu.report import replication

from .conftest import run_module
from .test_verdicts import N_LAYERS, _direction, _table


def test_random_effects_by_hand():
    """Two estimates 0.1 and 0.3, standard errors 0.1: fixed mean 0.2, Q = 2, c = 200 - 20000 /
    200 = 100, tau^2 = (2 - 1) / 100 = 0.01, random weights 50 each, half-width 1.96 / 10,
    I^2 = (2 - 1) / 2."""
    p = random_effects([0.1, 0.3], [0.1, 0.1])
    assert p.estimate == pytest.approx(0.2)
    assert p.tau2 == pytest.approx(0.01)
    assert p.hi - p.estimate == pytest.approx(1.959964 / 10, rel=1e-5)
    assert p.i2 == pytest.approx(0.5)
    same = random_effects([0.4, 0.4, 0.4], [0.1, 0.2, 0.3])
    assert (same.estimate, same.tau2, same.i2) == (pytest.approx(0.4), 0.0, 0.0)
    assert math.isnan(random_effects([1.0], [0.5]).i2)
    assert se_from_interval(-1.959964, 1.959964, 0.95) == pytest.approx(1.0, rel=1e-5)
    with pytest.raises(ValueError):
        random_effects([1.0], [0.0])


@dataclass
class _Study:
    card: list | None
    weights: str = "pretrained"


def test_combined_reading_counts_and_pools():
    a = _Study([Verdict(BEHAVIOUR_ASYMMETRY, "supports", 0.1, (-0.096, 0.296)),
                Verdict(verdicts.LOCUS, "contradicts", 3.0, (1.0, 5.0))])  # fmt: skip
    b = _Study([Verdict(BEHAVIOUR_ASYMMETRY, "inconclusive", 0.3, (0.104, 0.496)),
                Verdict(verdicts.LOCUS, "supports", 0.0, (-1.0, 1.0))],
               weights="random")  # fmt: skip
    head, rows = replication.combined([a, b, _Study(None)], 0.95)
    by = {r[0]: dict(zip(head, r, strict=True)) for r in rows}
    assert [r[0] for r in rows] == list(CRITERIA)
    beh = by[BEHAVIOUR_ASYMMETRY]
    assert (beh["supports"], beh["inconclusive"], beh["contradicts"]) == ("1", "1", "0")
    assert beh["random-effects summary"].startswith("0.200 [") and "over 2 models" in beh[
        "random-effects summary"]  # fmt: skip
    locus = by[verdicts.LOCUS]
    assert (
        locus["random-effects summary"] == "n/a" and "differ in depth" in locus["why (not) pooled"]
    )
    assert by[verdicts.ASYMMETRY]["not run"] == "2"  # neither card has it
    named = [("m=a", a), ("m=b", b)]
    assert "(m=b)" in replication.rehearsal_text(named)
    assert "(all 1 studies)" in replication.rehearsal_text(named[1:])
    assert "holds for all 2 models whose patching ran" in replication.premise(named)


def test_premise_failures_are_read_per_direction_from_the_scorecards_flags():
    """The pipeline's scorecard marks a failed premise as the flag "premise fails: ..." on its
    patching entries; the replication report names the model and the direction."""
    n, swapped = 12, np.full(12, 2.5)
    swapped[:5] *= -1  # 5 of 12 pairs with certain and uncertain swapped: 42% excluded
    rows = _direction("restore_confidence", np.full(n, 1.2), swapped)
    rows += _direction("induce_tentativeness", np.full(n, 0.8), np.full(n, 2.5))
    broken = analyse(_table(rows), N_LAYERS, opts=Options(n_boot=100)).card
    rows = _direction("restore_confidence", np.full(n, 1.2), np.full(n, 2.5))
    rows += _direction("induce_tentativeness", np.full(n, 0.8), np.full(n, 2.5))
    fine = analyse(_table(rows), N_LAYERS, opts=Options(n_boot=100)).card
    fails = replication.premise_failures(broken)
    assert list(fails) == ["2A"] and any("2A excludes 5 of 12 pairs" in f for f in fails["2A"])
    assert replication.premise_failures(fine) == {}
    behaviour_only = [Verdict(BEHAVIOUR_ASYMMETRY, "supports", 0.1, (0.0, 0.2))]
    assert replication.premise_failures(behaviour_only) is None
    named = [("m=a", _Study(broken)), ("m=b", _Study(fine)), ("m=c", _Study(behaviour_only))]
    text = replication.premise(named)
    assert "fails for 1 of 2 models: m=a (2A);" in text and "m=b" not in text
    assert "none was checked" in replication.premise(named[2:])


FAMILIES = (
    "model=llama2_13b_chat,llama3_8b_instruct,mistral_7b_instruct,qwen25_7b_instruct,gemma2_9b_it"
)


@pytest.mark.slow
def test_replication_multirun_of_four_families_on_random_weights(run_cli, tmp_path, monkeypatch):
    """Each family's architecture, narrowed to 2 layers of width 32 with random weights, through
    its own chat template; the comparative report has every model, the combined reading and says
    random weights."""
    monkeypatch.setenv("HF_HUB_OFFLINE", "1")
    out = run_cli("-m", FAMILIES, "model.weights=random", "model.n_layers=2", "model.d_model=32",
                  "+sweep=full", "sweep.pairs=3", "sweep.positions=last:4", "sweep.controls=[]",
                  "sweep.noise_floor=false", "behavior.max_new_tokens=4",
                  "behavior.decoding=[greedy]", "run_id=rep", tiny=False)  # fmt: skip
    assert out.returncode == 0, out.stderr[-3000:]
    root = tmp_path / "runs" / "rep"
    index = json.loads((root / "multirun.json").read_text())
    assert [s["status"] for s in index["studies"]] == ["done"] * 5
    rep = run_module("hallu.report", str(root), "--n-boot", "100", "--n-perm", "100")
    assert rep.returncode == 0, rep.stderr[-3000:]
    md = (root / "multirun_report.md").read_text()
    assert md.count("REHEARSAL: random weights") == 1
    assert "Combined reading" in md and "random-effects summary" in md
    for model in ("Llama-3.1-8B-Instruct", "Mistral-7B-Instruct-v0.3", "gemma-2-9b-it"):
        assert model in md
