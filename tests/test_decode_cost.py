"""A GPU decode step is priced by the bytes it reads (every weight + the batch's keys and values)
at the datasheet bandwidth x the assumed share, or by its FLOP when that is longer
(hallu/run/stage_cost.py). Expected values are computed here by hand from the model's sizes."""

from __future__ import annotations

import pytest

from hallu.config import compose
from hallu.run.estimate import estimate, rates
from hallu.run.gpus import ASSUMED_DECODE_BANDWIDTH, ASSUMED_MFU, GPU_LAYER_CALL_S, GPUS
from hallu.run.stage_cost import generation, seconds
from hallu.shape import ModelShape

# Llama-2-13b: 40 layers, d_model 5120, 40 heads (no GQA), d_mlp 13824, vocab 32000.
L, D, H, F, V = 40, 5120, 40, 13824, 32000
SHAPE = ModelShape(L, D, H, H, F, V)
PARAMS = L * (4 * D * D + 3 * D * F + 2 * D) + 2 * V * D + D  # 13.0e9
WEIGHTS = (PARAMS - V * D) * 2  # fp16, read once per step: all but the input embedding table
KV_TOKEN = 2 * L * H * (D // H) * 2  # keys + values of one token, every layer, fp16: 0.82 MB
H100_READ = 3350e9 * ASSUMED_DECODE_BANDWIDTH
H100_FLOPS = 989e12 * ASSUMED_MFU


@pytest.fixture(autouse=True)
def _no_calibration(tmp_path, monkeypatch):
    monkeypatch.setenv("HALLU_CALIBRATION", str(tmp_path / "none.json"))


def _h100(*overrides: str):
    cfg = compose(["model=llama2_13b_chat", "cluster.gpu=h100", *overrides])
    return rates(cfg, GPUS["h100"], 1)[0]


def _decode_s(rows: int, prompt: int, new: int) -> float:
    """One generate() call's decode steps on an H100, from the stage model."""
    stage = generation("g", SHAPE, PARAMS, [prompt] * rows, new, 2)
    (steps,) = stage.decode
    return steps.seconds(_h100().bytes_per_s, _h100().flops_per_s)


def test_small_batch_decode_costs_the_weights_once_per_step_whatever_the_rows():
    weights_only = WEIGHTS / H100_READ * 63  # 63 steps after the prefill: 0.82 s
    one, sixteen = _decode_s(1, 50, 64), _decode_s(16, 50, 64)
    # Short prompts: the cache adds little (16 rows x 113 tokens x 0.82 MB = 1.5 GB at most).
    assert one == pytest.approx(weights_only, rel=0.01)
    assert sixteen == pytest.approx(weights_only, rel=0.06)
    assert sixteen < 1.06 * one  # 16x the rows, about the same time
    # Exactly: step i reads the weights + 16 rows x (51 + i) tokens of keys and values.
    by_hand = sum((WEIGHTS + 16 * KV_TOKEN * (51 + i)) / H100_READ for i in range(63))
    assert sixteen == pytest.approx(by_hand, rel=1e-12)


def test_long_contexts_read_the_cache_too():
    short, long = _decode_s(16, 50, 64), _decode_s(16, 4000, 64)
    # 16 rows x 4,001-4,063 tokens of cache (52-53 GB) beside 26 GB of weights: about 3x.
    by_hand = sum((WEIGHTS + 16 * KV_TOKEN * (4001 + i)) / H100_READ for i in range(63))
    assert long == pytest.approx(by_hand, rel=1e-12)
    assert 2.8 < long / short < 3.2


def test_a_huge_batch_is_priced_by_its_flop():
    rows = 4096  # 4096 x 2 x 13e9 FLOP per step: 0.36 s at 0.3 x 989 TFLOP/s
    got = _decode_s(rows, 20, 8)
    reads = sum((WEIGHTS + rows * KV_TOKEN * (21 + i)) / H100_READ for i in range(7))
    assert got == pytest.approx(7 * rows * 2 * PARAMS / H100_FLOPS, rel=1e-12)
    assert got > 5 * reads  # compute-bound: the reads alone would be far shorter


def _behaviour(*overrides: str, pairs: int = 16, prompt: int = 50) -> dict:
    cfg = compose(["model=llama2_13b_chat", "sweep.experiments=[behavior]", *overrides])
    lengths = {f"p{i}": {c: prompt for c in ("certain", "uncertain", "neutral")}
               for i in range(pairs)}  # fmt: skip
    return estimate(cfg, SHAPE, lengths, None)


def test_behaviour_stage_time_by_hand_and_across_cards_and_gpus_per_replica():
    # 16 pairs x 3 conditions x (1 greedy + 4 sampled) = 240 answers: 15 batches of 16, each a
    # 50-token prefill call and 63 decode steps.
    est = _behaviour("cluster.gpu=h100")
    calls = 15 * 64 * L * GPU_LAYER_CALL_S
    prefill = 240 * 50 * 2 * PARAMS / H100_FLOPS
    decode = 15 * sum((WEIGHTS + 16 * KV_TOKEN * (51 + i)) / H100_READ for i in range(63))
    assert est["stage_seconds"]["behaviour"] == pytest.approx(calls + prefill + decode, rel=1e-9)
    assert decode > 0.8 * est["stage_seconds"]["behaviour"]  # the reads dominate
    # An A100 80GB reads at 2039 GB/s: the decode part scales with the bandwidth, not the FLOP.
    a100 = _behaviour("cluster.gpu=a100_80gb")["stage_seconds"]["behaviour"]
    a100_prefill = 240 * 50 * 2 * PARAMS / (312e12 * ASSUMED_MFU)
    assert a100 - calls - a100_prefill == pytest.approx(decode * 3350 / 2039, rel=1e-9)
    # Layers split over 2 GPUs run one after the other, each reading its half: same time,
    # twice the GPU-hours.
    two = _behaviour("cluster.gpu=h100", "cluster.resources.num_gpus=2")
    assert two["stage_seconds"]["behaviour"] == pytest.approx(est["stage_seconds"]["behaviour"])
    assert two["cost"] == pytest.approx(2 * est["cost"])


def test_behaviour_time_follows_batches_not_rows():
    """Batches of 1 make 16x the decode steps: about 16x the decode time, unlike FLOP pricing
    (the same FLOP either way)."""
    big = _behaviour("cluster.gpu=h100")
    small = _behaviour("cluster.gpu=h100", "behavior.batch_size=1")
    by_stage = {s.name: s for s in small["stages"]}, {s.name: s for s in big["stages"]}
    assert by_stage[0]["behaviour"].flops == pytest.approx(by_stage[1]["behaviour"].flops)
    ratio = small["stage_seconds"]["behaviour"] / big["stage_seconds"]["behaviour"]
    assert 14 < ratio < 17


def test_a_short_last_batch_and_the_cpu_model():
    # 17 pairs: 255 answers = 15 batches of 16 + one of 15, FLOP of every answer counted once.
    est = _behaviour("cluster.gpu=h100", pairs=17)
    (stage,) = est["stages"]
    assert [(d.batches, d.rows) for d in stage.decode] == [(15, 16), (1, 15)]
    assert stage.calls == 16 * 64 and stage.generated == 255 * 64
    assert stage.flops == pytest.approx(255 * (50 + 63) * 2 * PARAMS, rel=1e-12)
    assert est["flops_behavior"] == pytest.approx(stage.flops, rel=1e-12)
    # The CPU prices decoding by FLOP, as its calibration measures: no bandwidth term.
    cfg = compose(["model=tiny", "metric=is_vs_might", "sweep.experiments=[behavior]"])
    cpu = rates(cfg, None, 1)[0]
    assert cpu.bytes_per_s is None
    expected = stage.calls * L * cpu.layer_call_s + stage.generated * cpu.token_s
    expected += stage.flops / cpu.flops_per_s
    assert seconds(stage, cpu, L) == pytest.approx(expected, rel=1e-12)
