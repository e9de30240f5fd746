"""`python -m hallu.run.cpu_calibrate [OVERRIDES]`: measure this machine's CPU time model for
`mode=plan` and record it in the calibration file (hallu/run/gpus.py's, under "cpu").

A small model on the CPU is bound by per-call overhead, not by FLOPs: a forward of the 4-layer
toy costs about the same for 1 token as for 30. So the plan's CPU time is
`calls x n_layers x layer_call_s + FLOP / flops_per_s + generated tokens x token_s`
(hallu/run/stage_cost.py). This command measures all three on the config's model (default: the
toy): `layer_call_s` from one-token forward calls (batch 1), `flops_per_s` from a forward of a
large batch (64 x 32 tokens) net of its call, and `token_s` from what dominates the mechanism
and behaviour stages, one sampled generate() of 192 rows (48 prompts x 4 samples) of 30 tokens
and 8 new tokens: its time less its calls and its FLOP (as stage_cost.generation counts them),
per generated token (the per-row sampling, cache and Python work a FLOP count leaves out).
Run it on an idle machine for the machine's numbers; a loaded one records the load too (the
result carries the load average).
"""

from __future__ import annotations

import os
import statistics
import sys
import time

import torch

from hallu.behavior.generate import generate
from hallu.config import compose
from hallu.engine.models import load_model, load_shape
from hallu.run.estimate import n_params
from hallu.run.gpus import write_cpu_calibration
from hallu.run.stage_cost import generation


def _median_s(fn, repeats: int) -> float:
    times = []
    for _ in range(repeats):
        t0 = time.perf_counter()
        fn()
        times.append(time.perf_counter() - t0)
    return statistics.median(times)


@torch.no_grad()
def measure(overrides: list[str]) -> dict[str, float]:
    """{layer_call_s, flops_per_s} of the config's model on this machine's CPU."""
    cfg = compose(["model=toy", *overrides, "model.device=cpu"])
    shape = load_shape(cfg.model)
    model, _ = load_model(cfg.model, shape.vocab_size)
    one = torch.tensor([[1]])
    _median_s(lambda: model(one), 5)  # warm-up
    call = _median_s(lambda: model(one), 200)  # many: one call is ms and the load jitters
    rows, n, new = 192, 30, 8
    prompts = torch.randint(1, shape.vocab_size, (rows, n)).tolist()
    run = generation("", shape, n_params(shape), [n] * rows, new, 4)

    def answer() -> None:
        generate(model, prompts, pad_id=0, eos_id=-1, max_new_tokens=new, temperature=1.0,
                 seeds=list(range(rows)))  # fmt: skip

    big = torch.randint(1, shape.vocab_size, (64, 32))
    t_big = _median_s(lambda: model(big), 5)
    rate = 64 * 32 * 2 * n_params(shape) / max(t_big - call, 1e-9)
    t_gen = _median_s(answer, 3)
    rest = t_gen - run.calls * call - run.flops / rate  # what calls and FLOP do not explain
    return {
        "layer_call_s": call / shape.n_layers,
        "flops_per_s": rate,
        "token_s": max(rest, 0.0) / run.generated,
        "model": cfg.model.name_or_path,
        "threads": torch.get_num_threads(),
        "load_average": os.getloadavg()[0],
    }


def main(argv: list[str]) -> int:
    entry = write_cpu_calibration(**measure(argv))
    print(
        f"cpu: {entry['layer_call_s'] * 1e3:.3f} ms per layer call, "
        f"{entry['flops_per_s'] / 1e9:.2f} GFLOP/s, {entry['token_s'] * 1e3:.3f} ms per "
        f"generated token ({entry['threads']} threads, load average "
        f"{entry['load_average']:.1f}); recorded in the calibration file"
    )
    return 0


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
