"""`python -m hallu.bench --gpu`'s code paths on the CPU (tiny shape), so CI exercises them."""

from __future__ import annotations

import json

import torch

from hallu.bench import parse_args
from hallu.bench_gpu import gpu_main, shaped_model


def test_gpu_mode_on_cpu_with_a_tiny_shape(tmp_path, capsys):
    torch.manual_seed(0)  # the random weights: the same model every run
    out = tmp_path / "gpu.json"
    args = parse_args(
        ["--gpu", "--device", "cpu", "--shape", "tiny", "--repeats", "2", "--gpu-tokens", "12",
         "--gpu-pairs", "2", "--gpu-naive-cells", "6", "--json", str(out)]
    )  # fmt: skip
    r = gpu_main(args)
    assert r["cells"] == 2 * 4 * 12 and len(r["sweep_s"]) == 2
    assert r["cells_per_s"] > 0 and r["engine_tflops"] > 0 and r["mfu_of_matmul"] > 0
    assert r["mfu"] is None and r["gpu_kind"] is None  # no datasheet peak for a CPU
    assert r["flop_ratio"] > 1
    for dt in ("fp16", "bf16"):
        assert r[dt]["cells"] == 6
        # Engine and hook route round differently: about one step apart, at most 2 where a
        # logit crosses a power of two (one step of the binade above). Unseeded, 2 of 12
        # runs had a cell at 1.06-1.25 steps, so "every cell within one step" was flaky.
        assert r[dt]["max_steps"] <= 2.0, r[dt]
        assert r[dt]["within_one_step"] >= 0.5, r[dt]
        assert r[dt]["moved_by_patch"] > 0  # the comparison is not between unpatched runs
    assert json.loads(out.read_text())["cells"] == r["cells"]
    printed = capsys.readouterr().out
    assert "cells_per_s" in printed and "bf16 engine vs hook reference on 6 cells" in printed
    assert "calibration: not written" in printed


def test_13b_shape_is_built_in_place_without_memory():
    """The 13b shape on the meta device: fp16 parameters, Llama-2-13b's per-layer size."""
    model = shaped_model("13b", 1, "meta", torch.float16)
    params = list(model.parameters())
    assert {p.device.type for p in params} == {"meta"}
    assert {p.dtype for p in params} == {torch.float16}
    layer = sum(p.numel() for p in model.model.layers[0].parameters())
    assert layer == 4 * 5120 * 5120 + 3 * 5120 * 13824 + 2 * 5120
