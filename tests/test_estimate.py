"""mode=plan prices a study offline: FLOPs (naive and the engine's), memory, time and cost."""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

import pytest

from hallu.config import CONF_DIR, compose
from hallu.run import gpus
from hallu.run.estimate import engine_flops, estimate
from hallu.run.plan import make_plan

from .matmuls import WeightMatmuls

PRESETS = sorted(p.stem for p in (CONF_DIR / "model").glob("*.yaml"))


def _plan(*args: str, env: dict[str, str] | None = None) -> subprocess.CompletedProcess:
    env = {**os.environ, "HF_HUB_OFFLINE": "1", **(env or {})}
    cmd = [sys.executable, "-m", "hallu.launch", "mode=plan", *args]
    return subprocess.run(cmd, capture_output=True, text=True, timeout=300, env=env, cwd="/")


@pytest.mark.parametrize("model", PRESETS)
def test_every_preset_plans_offline_with_time_memory_and_cost(model, tmp_path):
    metric = ["metric=is_vs_might"] if model == "tiny" else []
    gpus_needed = "2" if "70b" in model or "72b" in model else "1"
    out = _plan(f"model={model}", *metric, "+sweep=full", "cluster=lambda", "cluster.gpu=h100",
                f"cluster.resources.num_gpus={gpus_needed}",
                env={"HALLU_CALIBRATION": str(tmp_path / "none.json")})  # fmt: skip
    assert out.returncode == 0, out.stderr[-2000:]
    text = out.stdout
    for line in ("patching FLOP: naive", "with the engine", "memory per replica: weights",
                 "time: ", "cost: $", "MFU: 0.30 (assumed", "# behaviour plan"):  # fmt: skip
        assert line in text, f"{line!r} missing from the plan of {model}"
    local = model in ("tiny", "toy", "planted")
    assert ("from the tokenizer" in text) == local and ("estimated from word" in text) != local


def test_70b_on_one_80gb_gpu_is_refused_with_the_fix():
    out = _plan("model=llama2_70b_chat", "cluster=lambda", "cluster.gpu=a100_80gb")
    assert out.returncode == 2 and out.stdout == ""
    err = out.stderr
    assert (
        "needs 14" in err
        and "cluster.resources.num_gpus=2" in err
        and "cluster.gpu=h200" not in err
    )
    ok = _plan("model=llama2_70b_chat", "cluster=lambda", "cluster.gpu=a100_80gb",
               "cluster.resources.num_gpus=2")  # fmt: skip
    assert ok.returncode == 0 and "fits: 2 x A100 SXM 80GB per replica" in ok.stdout


def test_done_when_command_prints_cells_flops_memory_time_and_cost():
    out = _plan("model=llama2_13b_chat", "+sweep=full", "cluster=lambda", "cluster.gpu=a100_80gb")
    assert out.returncode == 0, out.stderr
    # 48 pairs, 40 layers, both directions, and the 3 controls (x4 in all).
    assert "control)" in out.stdout and "8 replica(s)" in out.stdout
    assert "$1.79/GPU-hour, default list price" in out.stdout


def test_measured_mfu_and_price_override_replace_the_defaults(tmp_path):
    path = tmp_path / "cal.json"
    gpus.write_calibration("h100", 400.0, path=path, device_name="NVIDIA H100 80GB HBM3")
    data = json.loads(path.read_text())
    assert data["version"] == 1 and abs(data["gpus"]["h100"]["mfu"] - 400 / 989) < 1e-9
    assert gpus.kind_for_device("NVIDIA H100 80GB HBM3") == "h100"
    assert gpus.kind_for_device("NVIDIA A100-SXM4-40GB") == "a100_40gb"
    out = _plan("model=llama2_7b_chat", "cluster=lambda", "cluster.gpu=h100",
                "cluster.price_per_gpu_hour=2.5", env={"HALLU_CALIBRATION": str(path)})  # fmt: skip
    assert out.returncode == 0, out.stderr
    assert "MFU: 0.40 (measured by hallu.bench --gpu on h100" in out.stdout
    assert "$2.50/GPU-hour, cluster.price_per_gpu_hour" in out.stdout


def test_engine_flops_match_the_benchmarks_count():
    """The plan's engine FLOP model is hallu.bench's flop_counts, on the same tiny model: the
    shared prefix and the layer-0 cells that write the target's own token (here positions 6..)
    are known in both, found from the tokens here and from the activations there."""
    torch = pytest.importorskip("torch")
    from hallu.bench import Case, flop_counts
    from hallu.engine.tiny import build_model
    from hallu.shape import ModelShape

    cfg = compose(["model=tiny", "metric=is_vs_might", "sweep.experiments=[patching]",
                   "sweep.directions=[restore_confidence]"])  # fmt: skip
    t = cfg.model.tiny
    model = build_model(t, vocab_size=50)
    g = torch.Generator().manual_seed(0)
    pairs, lengths, tokens = [], {}, {}
    for i, n in enumerate((9, 12)):
        tgt = torch.randint(3, 50, (n,), generator=g).tolist()
        src = tgt[:4] + [(x + 1) % 50 for x in tgt[4:6]] + tgt[6:]
        pairs.append((src, tgt))
        lengths[f"p{i}"] = {"certain": n, "uncertain": n}
        # restore_confidence: the certain prompt is the source, the uncertain one the target
        tokens[f"p{i}"] = {"certain": src, "uncertain": tgt}
    shape = ModelShape(t.n_layers, t.d_model, t.n_heads, t.n_kv_heads, t.d_mlp, 50)
    plan = make_plan(cfg.sweep, shape, lengths, "tiny")
    naive, engine, _, n_known = flop_counts(model, Case("t", pairs))
    # Shared prefix (4 tokens) at every layer, plus layer 0 at positions 6.. of each pair.
    assert n_known == sum(4 * t.n_layers + n - 6 for n in (9, 12))
    assert engine_flops(cfg, shape, lengths, plan, tokens) == pytest.approx(engine, rel=1e-9)
    assert plan.flops_naive == pytest.approx(naive, rel=1e-9)
    # Without the tokens (no tokenizer) nothing is known: an upper bound.
    assert engine_flops(cfg, shape, lengths, plan) > engine
    assert estimate(cfg, shape, lengths, plan, tokens)["cells"] == plan.n_cells
    # The hook engine runs one forward per cell: its FLOP is the naive count.
    hooks = compose(["model=tiny", "metric=is_vs_might", "sweep.experiments=[patching]",
                     "sweep.directions=[restore_confidence]", "sweep.engine=hooks"])  # fmt: skip
    assert engine_flops(hooks, shape, lengths, plan, tokens) == pytest.approx(naive, rel=1e-9)


@pytest.mark.slow
def test_plan_flops_equal_the_engines_counted_flops_on_the_toy_full_sweep(tmp_path):
    """The toy's +sweep=full study (patching and every control) run by the worker, its weight
    matmuls counted as they execute, against the plan's engine FLOP per stage: within 1%."""
    from hallu.run.offline_plan import plan_and_estimate
    from hallu.run.worker import Worker

    cfg = compose(["model=toy", "+sweep=full", "metric=yes_vs_maybe",
                   "sweep.experiments=[patching]", "sweep.noise_floor=false",
                   f"storage.root={tmp_path}"])  # fmt: skip
    plan, est = plan_and_estimate(cfg)
    planned = {s.name: s.flops for s in est["stages"]}
    worker = Worker(cfg, "r")
    counted: dict[str, float] = {}
    for shard in plan.shards:
        name = "patching" if shard.control is None else f"control {shard.control}"
        with WeightMatmuls() as mode:
            worker.run_shard(shard)
        counted[name] = counted.get(name, 0) + mode.flops
    stages = {"patching"} | {f"control {c}" for c in cfg.sweep.controls}
    assert set(counted) == set(planned) == stages
    for name, flops in counted.items():
        assert planned[name] == pytest.approx(flops, rel=0.01), name
    assert est["flops_engine"] == pytest.approx(sum(counted.values()), rel=0.01)
    # Controls through the engine: far below a forward per cell (the plan's naive count).
    control_naive = sum(s.flops_naive for s in plan.shards if s.control)
    assert sum(v for k, v in counted.items() if k != "patching") < control_naive / 2


def test_calibration_file_missing_or_broken_means_assumed(tmp_path, monkeypatch):
    monkeypatch.setenv("HALLU_CALIBRATION", str(tmp_path / "x.json"))
    assert gpus.mfu_for("h100") == (gpus.ASSUMED_MFU, gpus.mfu_for("h100")[1])
    (tmp_path / "x.json").write_text("{not json")
    assert gpus.read_calibration() == {} and gpus.mfu_for("h100")[0] == gpus.ASSUMED_MFU
    assert Path(gpus.calibration_path()) == tmp_path / "x.json"
