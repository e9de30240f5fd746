"""The noise floor's other dtypes are made from the run's replica in memory (hallu/run/noise.py):
the same numbers as loading the checkpoint in each dtype, with no load, and the replica bit for
bit what it was afterwards, also when a dtype's measurement fails."""

from __future__ import annotations

import shutil

import numpy as np
import pytest
import torch

from hallu.config import compose
from hallu.engine import models
from hallu.engine.models import load_model
from hallu.run import noise
from hallu.run.prepare import prepare

PAIRS = 3


@pytest.fixture(autouse=True)
def _one_thread():
    """A toy's forward is too small to share: a second thread only waits on a busy machine."""
    threads = torch.get_num_threads()
    torch.set_num_threads(1)
    yield
    torch.set_num_threads(threads)


@pytest.fixture(scope="module")
def prep():
    """The toy's prompts and tokenizer, shared by every model below (same tokenizer files)."""
    return prepare(compose(["model=toy", "metric=yes_vs_maybe", f"sweep.pairs={PAIRS}"]))


def _setup(prep, *overrides: str):
    cfg = compose(["model=toy", "metric=yes_vs_maybe", f"sweep.pairs={PAIRS}", *overrides])
    return cfg, load_model(cfg.model, len(prep.tokenizer))[0]


def _snapshot(model) -> list[tuple[str, torch.dtype, torch.Tensor]]:
    return [(n, p.dtype, p.detach().clone()) for n, p in model.named_parameters()]


def _same(model, snapshot) -> bool:
    now = list(model.named_parameters())
    return len(now) == len(snapshot) and all(
        n == m and p.dtype == d and torch.equal(p.detach(), t)
        for (n, p), (m, d, t) in zip(now, snapshot, strict=True)
    )


def _reloaded(cfg, prep) -> dict:
    """The numbers from loading the checkpoint in each dtype (the reference)."""
    pad = prep.tokenizer.pad_token_id
    prompts = [
        ids
        for conds in list(prep.token_ids.values())[:PAIRS]
        for c, ids in conds.items()
        if c in ("certain", "uncertain")
    ]
    out = {}
    for dtype in noise.MEASURED_DTYPES:
        model, _ = load_model(cfg.model.model_copy(update={"dtype": dtype}), len(prep.tokenizer))
        out[dtype] = noise._measure_dtype(model, prep.metric, prompts, pad)
    return out


def _check_equal(result: dict, ref: dict) -> None:
    for dtype, m in ref.items():
        got = result["per_dtype"][dtype]
        for kind in ("batch", "padding"):
            assert got[kind] == noise._stats(m[kind]), (dtype, kind)
        diff = np.abs(m["alone"] - ref["float32"]["alone"])
        assert got["precision_vs_float32"] == noise._stats(diff), dtype
    assert result["per_dtype"]["bfloat16"]["precision_vs_float32"]["max"] > 0  # can fail


def test_float32_run_copies_the_narrower_dtypes_and_equals_reloading(prep):
    cfg, replica = _setup(prep)
    before = _snapshot(replica)
    loads = sum(models.LOADS.values())
    result = noise.measure(cfg, PAIRS, prep=prep, loaded=replica)
    assert sum(models.LOADS.values()) == loads, "the other dtypes came from disk"
    assert result["run_dtype"] == "float32" and _same(replica, before)
    _check_equal(result, _reloaded(cfg, prep))
    # Without a replica at hand (python -m hallu.run.noise RUN): one load, the same numbers.
    loads = sum(models.LOADS.values())
    assert noise.measure(cfg, PAIRS, prep=prep) == result
    assert sum(models.LOADS.values()) == loads + 1


@pytest.mark.parametrize("run, other", [("float16", "bfloat16"), ("bfloat16", "float16")])
def test_a_2_byte_run_casts_to_float32_in_place_and_back(prep, tmp_path, run, other):
    """A checkpoint the run's dtype holds exactly (as float16 holds Llama-2-13b-chat's): float32
    from the replica cast in place equals float32 from disk, the other 2-byte dtype from a copy
    equals it from disk; the replica ends as it began, the same Parameters."""
    from safetensors.torch import load_file, save_file

    from hallu.engine.toy import TOY_DIR

    shutil.copytree(TOY_DIR, tmp_path / "m")
    tensors = load_file(tmp_path / "m" / "model.safetensors")
    exact = {k: v.to(getattr(torch, run)).float() for k, v in tensors.items()}
    save_file(exact, tmp_path / "m" / "model.safetensors", metadata={"format": "pt"})
    cfg, replica = _setup(prep, f"model.name_or_path={tmp_path / 'm'}", f"model.dtype={run}")
    before, objects = _snapshot(replica), list(replica.parameters())
    seen = set()  # (the replica itself?, its parameters' dtypes) per forward (hooks are copied)
    replica.register_forward_hook(
        lambda m, *_: seen.add((m is replica, frozenset(p.dtype for p in m.parameters())))
    )
    result = noise.measure(cfg, PAIRS, prep=prep, loaded=replica)
    assert result["run_dtype"] == run and _same(replica, before)
    assert all(a is b for a, b in zip(replica.parameters(), objects, strict=True))
    # The run's dtype and float32 ran on the replica itself, the other 2-byte one on a copy.
    own = {(True, frozenset({getattr(torch, d)})) for d in (run, "float32")}
    assert seen == own | {(False, frozenset({getattr(torch, other)}))}
    _check_equal(result, _reloaded(cfg, prep))


class _Boom(Exception):
    pass


@pytest.mark.parametrize("error", [RuntimeError, _Boom])
def test_an_error_while_measuring_float32_restores_the_replica(prep, error):
    """A RuntimeError (an OOM, a missing kernel) is that dtype's error and the others go on; any
    other exception ends the measurement; either way the replica is float16 again, unchanged."""
    cfg, replica = _setup(prep, "model.dtype=float16")
    before = _snapshot(replica)

    def fail_in_float32(module, *_):
        if module.lm_head.weight.dtype == torch.float32:
            raise error("no float32 today")

    replica.register_forward_hook(fail_in_float32)
    if error is RuntimeError:
        result = noise.measure(cfg, PAIRS, prep=prep, loaded=replica)
        assert result["per_dtype"]["float32"] == {"error": "no float32 today"}
        assert "precision_vs_float32" not in result["per_dtype"]["bfloat16"]
        assert "batch" in result["per_dtype"]["bfloat16"]
    else:
        with pytest.raises(_Boom):
            noise.measure(cfg, PAIRS, prep=prep, loaded=replica)
    assert _same(replica, before)


def test_a_replica_changed_while_measuring_is_refused_and_its_worker_runs_nothing(tmp_path):
    """The checksum check can fail: a hook that writes into the weights in float32. The worker
    holding that replica then refuses every further unit (another worker reruns them)."""
    from hallu.run.runner import ShardRunner
    from hallu.run.units import NoiseFloor
    from hallu.store.local import LocalStore

    cfg = compose(
        ["model=toy", "metric=yes_vs_maybe", f"sweep.pairs={PAIRS}", "model.dtype=float16"]
    )
    runner = ShardRunner(cfg, LocalStore(tmp_path, "r"))
    assert runner.worker is not None, runner.error

    def write(module, *_):
        if module.lm_head.weight.dtype == torch.float32:
            module.lm_head.weight.data[0, 0] += 1.0

    runner.worker.model.register_forward_hook(write)
    with pytest.raises(noise.ReplicaChanged, match="changed while it was measured"):
        runner.compute(NoiseFloor(max_pairs=PAIRS))
    with pytest.raises(AssertionError, match="changed while it was measured"):
        runner.compute(NoiseFloor(max_pairs=PAIRS))
