"""The benchmark's baselines compute the same numbers as the engine (else the timing is moot)."""

from __future__ import annotations

import statistics

import pytest

from hallu.bench import Case, _group_metric, all_cells, engine_case, flop_counts, run_case
from hallu.bench_baselines import length_groups, naive_batched, transformer_lens_bridge
from hallu.engine.adapters import Adapter
from hallu.engine.fast import BatchOptions

from .families import build, random_pair


def _case() -> Case:
    pairs = [random_pair(s, n_target=7, n_source=7, first_diff=2) for s in (51, 52, 53)]
    return Case("t", [*pairs, random_pair(54, n_target=9, n_source=9, first_diff=3)])


def test_length_groups_never_mix_lengths():
    assert length_groups(_case().pairs) == [[0, 1, 2], [3]]


def test_naive_batched_equals_the_engine():
    model = build("llama", seed=55, n_layers=3, d=32, heads=4, kv=2)
    ad, case = Adapter(model), _case()
    cells = [all_cells(3, len(t)) for _, t in case.pairs]
    got = engine_case(ad, case.pairs, cells, BatchOptions())
    for group in length_groups(case.pairs):
        ref = naive_batched(model, case.pairs, group)
        assert ref.abs().max() > 0.01  # the metric is not trivially zero
        assert (_group_metric(got, group, 3) - ref).abs().max().item() <= 1e-4


def test_run_case_reports_every_baseline():
    model = build("llama", seed=56, n_layers=2, d=32, heads=4, kv=2)
    r = run_case(model, _case(), repeats=1, naive_pairs=2)
    assert r["cells"] == 2 * (7 * 3 + 9) and r["naive_cells"] == 2 * 7 * 2
    for key in ("naive", "batched"):
        assert r[f"x_{key}"] > 0 and r["max_abs_diff"][key] <= 1e-4, (key, r)
    assert r["x_engine_per_pair"] > 0
    assert r["flop_ratio"] > 1
    # Achieved FLOP/s: each method's counted work over its median time, and its share of the
    # machine's measured matmul rate.
    naive_flop, engine_flop, _, _ = flop_counts(model, _case())
    assert r["engine_flops_per_s"] * statistics.median(r["engine_s"]) == pytest.approx(engine_flop)
    assert r["batched_flops_per_s"] * statistics.median(r["batched_s"]) == pytest.approx(naive_flop)
    assert r["matmul_flops_per_s"] > 1e6
    for key in ("naive", "batched", "engine"):
        share = r[f"{key}_flops_per_s"] / r["matmul_flops_per_s"]
        assert r[f"{key}_of_matmul"] == pytest.approx(share) and share > 0


def test_transformer_lens_equals_the_engine():
    pytest.importorskip("transformer_lens")
    from hallu.bench_baselines import transformer_lens
    from hallu.engine.tiny import build_tokenizer

    model = build("llama", seed=57, n_layers=2, d=32, heads=4, kv=2)
    bridge = transformer_lens_bridge(model, build_tokenizer())
    ad, case = Adapter(model), _case()
    cells = [all_cells(2, len(t)) for _, t in case.pairs]
    got = engine_case(ad, case.pairs, cells, BatchOptions())
    for group in length_groups(case.pairs):
        ref = transformer_lens(bridge, case.pairs, group)
        assert (_group_metric(got, group, 2) - ref).abs().max().item() <= 1e-4
