"""mode=plan prices every stage a config runs (hallu/run/stage_cost.py): the mechanism units,
the noise floor, behaviour, patching and each control, each with FLOP, memory and time."""

from __future__ import annotations

import pytest

from hallu.config import DIRECTIONS, compose
from hallu.run.estimate import estimate, mechanism_rows
from hallu.run.multirun import totals
from hallu.run.offline_plan import format_estimate, plan_and_estimate
from hallu.shape import ModelShape

MECH_STAGES = ("mechanism capture", "mechanism steer", "mechanism patchgen", "mechanism heads")


@pytest.fixture(autouse=True)
def _no_calibration(tmp_path, monkeypatch):
    monkeypatch.setenv("HALLU_CALIBRATION", str(tmp_path / "none.json"))
    monkeypatch.setenv("HF_HUB_OFFLINE", "1")


def test_13b_mechanism_plan_prices_every_mechanism_stage():
    cfg = compose(["model=llama2_13b_chat", "+sweep=mechanism", "cluster.gpu=h100"])
    _, est = plan_and_estimate(cfg)
    text = "\n".join(format_estimate(cfg, est))
    by = {s.name: s for s in est["stages"]}
    assert set(MECH_STAGES) <= set(by)
    for name in MECH_STAGES:
        assert by[name].flops > 0 and est["stage_seconds"][name] > 0
        line = next(x for x in text.splitlines() if x.startswith(name))
        assert " FLOP, " in line and (" s" in line or " min" in line or " h" in line)
    # The mechanism's time is the plan's, not the weight load alone.
    assert est["seconds"] > 10 * est["load_s"]
    assert est["hours"] == pytest.approx(est["seconds"] / 3600)
    assert "total: " in text and "$" in text.split("total: ")[1]
    mfu = next(x for x in text.splitlines() if x.startswith("MFU: "))
    assert "decoding by the bytes each step reads" in mfu and "3,350 GB/s x 0.6 (assumed" in mfu


def _worker_count(cfg, shape, rows, params: int) -> dict[str, tuple[float, int, int]]:
    """(FLOP, generated tokens, decode steps) per mechanism stage, counted by walking the
    worker's loops (hallu/mechanism/worker.py): each generate() call prefills its prompts, then
    feeds one token per row for each further step; every token costs 2 FLOP per parameter."""
    m, flops, gen, steps = cfg.sweep.mechanism, {}, {}, {}
    stepped = [0]

    def generate(prompts: list[int]) -> tuple[int, int]:  # (tokens run, tokens generated)
        run = sum(prompts)
        for _step in range(1, m.max_new_tokens):
            run += len(prompts)
            stepped[0] += 1
        return run, len(prompts) * m.max_new_tokens

    lens = {r.prompt_id: n for r, n in rows}
    flops["mechanism capture"], gen["mechanism capture"] = sum(lens.values()) * 2 * params, 0
    neutral = [lens[r.prompt_id] for r, _ in rows if r.condition == "neutral"]
    t = g = 0
    for _layer in m.steer_layers:
        for _direction in range(1 + m.n_random):
            for _alpha in m.alphas:
                run, new = generate([n for n in neutral for _ in range(m.n_samples)])
                t, g = t + run, g + new
    flops["mechanism steer"], gen["mechanism steer"] = t * 2 * params, g
    steps["mechanism steer"], stepped[0] = stepped[0], 0
    pair = {}
    for r, n in rows:
        pair.setdefault(r.pair_id, {})[r.condition] = n
    t = g = 0
    for direction in cfg.sweep.directions:
        src, tgt = DIRECTIONS[direction]
        for setting in ["source", "target", *m.patch_layers]:
            prompts = [p[src if setting == "source" else tgt] for p in pair.values()]
            run, new = generate([n for n in prompts for _ in range(m.n_samples)])
            t, g = t + run, g + new
            if setting not in ("source", "target"):  # the source's resid_pre, one forward each
                t += sum(p[src] for p in pair.values())
    flops["mechanism patchgen"], gen["mechanism patchgen"] = t * 2 * params, g
    steps["mechanism patchgen"], steps["mechanism capture"] = stepped[0], 0
    return {k: (flops[k], gen[k], steps[k]) for k in flops}


def test_mechanism_stage_flops_equal_a_count_of_the_workers_loops():
    torch = pytest.importorskip("torch")
    from hallu.engine.tiny import build_model

    cfg = compose(["model=tiny", "metric=is_vs_might", "+sweep=mechanism",
                   "sweep.mechanism.steer_layers=[1,3]", "sweep.mechanism.n_random=2",
                   "sweep.mechanism.patch_layers=[0,2]", "sweep.mechanism.max_new_tokens=5",
                   "sweep.mechanism.heads=false", "sweep.pairs=6"])  # fmt: skip
    t = cfg.model.tiny
    params = sum(p.numel() for p in build_model(t, vocab_size=50).parameters())  # from torch
    shape = ModelShape(t.n_layers, t.d_model, t.n_heads, t.n_kv_heads, t.d_mlp, 50)
    from hallu.prompt_meta import load_prompt_rows

    pair_ids = list(dict.fromkeys(r.pair_id for r in load_prompt_rows(cfg.prompts)))[:6]
    lengths = {p: {"certain": 11 + i, "uncertain": 13 + i, "neutral": 9 + i}
               for i, p in enumerate(pair_ids)}  # fmt: skip
    est = estimate(cfg, shape, lengths, None)
    by = {s.name: s for s in est["stages"]}
    assert "mechanism heads" not in by
    expected = _worker_count(cfg, shape, mechanism_rows(cfg, lengths), params)
    assert set(expected) == {n for n in by if n.startswith("mechanism")}
    for name, (flops, generated, steps) in expected.items():
        assert by[name].flops == pytest.approx(flops, rel=1e-12), name
        assert by[name].generated == generated, name
        # The decode steps a GPU prices by their reads: every step of every generate() call.
        assert sum(d.batches * d.steps for d in by[name].decode) == steps, name
    assert torch is not None


def test_every_stage_of_a_full_sweep_has_a_line_and_the_multirun_sums_them():
    base = ["model=tiny", "metric=is_vs_might", "sweep.pairs=4"]
    full = compose([*base, "+sweep=full"])
    mech = compose([*base, "+sweep=mechanism"])
    ests = [plan_and_estimate(c)[1] for c in (full, mech)]
    names = [s.name for s in ests[0]["stages"]]
    assert names[0] == "patching" and "noise floor" in names and "behaviour" in names
    assert [n for n in names if n.startswith("control ")] == [
        f"control {c}" for c in full.sweep.controls
    ]
    for cfg, est in zip((full, mech), ests, strict=True):  # the toy's CPU: a time per stage
        assert set(est["stage_seconds"]) == {s.name for s in est["stages"]}
        assert "on this CPU" in "\n".join(format_estimate(cfg, est))
    lines = totals(ests)
    steer = sum(s.flops for e in ests for s in e["stages"] if s.name == "mechanism steer")
    assert f"mechanism steer {steer:.2e}" in lines[0] and "noise floor" in lines[0]
    flops = sum(e["flops_total"] for e in ests)
    assert f"{flops:.2e} FLOP in all stages" in lines[1]
    assert "on this CPU" in lines[1]


def test_cpu_time_follows_the_calibration_files_cpu_entry(tmp_path, monkeypatch):
    """The CPU's constants come from the calibration file when it has them (a GPU entry written
    later keeps them); each stage's time is calls x layers x latency + FLOP / rate + tokens x
    per-token cost."""
    from hallu.run import gpus

    path = tmp_path / "cal.json"
    monkeypatch.setenv("HALLU_CALIBRATION", str(path))
    assert gpus.cpu_rates()[0] == gpus.CPU_DEFAULTS
    gpus.write_cpu_calibration(layer_call_s=0.5, flops_per_s=1e9, token_s=0.25)
    gpus.write_calibration("h100", 400.0)
    rates, where = gpus.cpu_rates()
    assert rates == {"layer_call_s": 0.5, "flops_per_s": 1e9, "token_s": 0.25}
    assert "measured by hallu.run.cpu_calibrate" in where
    cfg = compose(["model=tiny", "metric=is_vs_might", "+sweep=mechanism", "sweep.pairs=4"])
    _, est = plan_and_estimate(cfg)
    n_layers = cfg.model.tiny.n_layers
    for s in est["stages"]:
        expected = s.calls * n_layers * 0.5 + s.flops / 1e9 + s.generated * 0.25
        assert est["stage_seconds"][s.name] == pytest.approx(expected, rel=1e-12)
    assert est["seconds"] == pytest.approx(est["load_s"] + sum(est["stage_seconds"].values()))


@pytest.mark.parametrize("gpu, fits", [("h100", True), ("a100_40gb", False)])
def test_noise_floor_makes_its_other_dtypes_in_memory_and_says_whether_they_fit(gpu, fits):
    """Nothing is read from disk: the stage is its forward passes. Its other dtypes add 2 bytes
    a weight beside the float16 replica (float32 cast in place, bfloat16 a copy): a 13b's 26 GB
    fits an H100 beside the replica (26 + 26 + 1.5 GB CUDA context), not a 40 GB A100, where
    they are that dtype's error and the run still fits."""
    cfg = compose(["model=llama2_13b_chat", "+sweep=controls", f"cluster.gpu={gpu}"])
    _, est = plan_and_estimate(cfg)
    noise = next(s for s in est["stages"] if s.name == "noise floor")
    assert noise.other_dtypes == est["memory"].weights  # 2 bytes a weight, as the replica's
    assert est["other_dtypes_fit"] is fits
    line = next(x for x in format_estimate(cfg, est) if x.startswith("noise floor: "))
    assert "from the replica in memory, no load: +26.03 GB beside its weights" in line, line
    assert line.endswith(", fits)" if fits else "A100 SXM 40GB holds: they are recorded as errors)")
    assert est["stage_seconds"]["noise floor"] < 10, "the time is its forward passes alone"
