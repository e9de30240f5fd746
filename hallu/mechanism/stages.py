"""+sweep=mechanism's order of work: capture, the directions, then everything that uses them.

`run_mechanism` plans each stage's units and hands them to `run`, the caller's executor
(hallu/run/executor.py: in this process for cluster=local, on the Ray workers otherwise; both
skip stored units and hold one model for the two stages). Between the stages it reads the
stored capture rows and finds, per steered layer, the certain direction (and `n_random` random
directions of its norm). It writes no summary: the launcher does (hallu/report/mechanism.py).
"""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

import numpy as np
import pandas as pd

from hallu.analysis.mechanism import claim_diffs, rung_labels
from hallu.mechanism.schema import Unit, read_store
from hallu.mechanism.units import capture_units, mech_layers, prepare_mechanism, stage2_units


def run_mechanism(prep: Any, store: Any, run: Callable[[list[Unit]], Any]) -> None:
    """Stage 1 through `run`, the directions from what it stored, stage 2 through `run`.
    `prep`: hallu.run.prepare.Prepared; `store`: the run's store (read here, written by `run`)."""
    cfg, n_layers = prep.cfg, prep.shape.n_layers
    mech = prepare_mechanism(prep)
    run(capture_units(cfg, mech, n_layers))
    found = directions(cfg, read_store(store)["capture"], n_layers)
    run(stage2_units(cfg, mech, n_layers, found))


def directions(cfg: Any, cap: pd.DataFrame, n_layers: int) -> dict[int, dict[str, list[float]]]:
    """Per steered layer: "found" = mean over claims of certain - neutral at the steer site, and
    "random_K", random directions of the same norm (the control; seeded by the run's seed)."""
    labels, m = rung_labels(cap), cfg.sweep.mechanism
    rng = np.random.default_rng(cfg.seed)
    found: dict[int, dict[str, list[float]]] = {}
    for layer in mech_layers(m.steer_layers, n_layers, "sweep.mechanism.steer_layers"):
        g = cap[(cap.layer == layer) & (cap.site == m.steer_site)]
        d = claim_diffs(g, labels["certain"], labels["neutral"])[1].mean(0)
        found[layer] = {"found": d.tolist()}
        for k in range(m.n_random):
            r = rng.standard_normal(d.shape)
            found[layer][f"random_{k}"] = (r / np.linalg.norm(r) * np.linalg.norm(d)).tolist()
    return found
