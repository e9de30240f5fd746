"""`python -m hallu.run.cpu_calibrate [OVERRIDES]`: measure this machine's CPU time model for
`mode=plan` and record it in the calibration file (hallu/run/gpus.py's, under "cpu").

A small model on the CPU is bound by per-call overhead, not by FLOPs: a forward of the 4-layer
toy costs about the same for 1 token as for 30. So the plan's CPU time is
`calls x n_layers x layer_call_s + FLOP / flops_per_s` (hallu/run/stage_cost.py). This command
measures both on the config's model (default: the toy): `layer_call_s` from one-token forward
calls (batch 1, the KV-cached decode step's shape), `flops_per_s` from a large batch, net of its
call overhead. Run it on an idle machine for the machine's numbers; a loaded one records the
load too (the command prints `uptime`'s load with its result).
"""

from __future__ import annotations

import os
import statistics
import sys
import time

import torch

from hallu.config import compose
from hallu.engine.models import load_model, load_shape
from hallu.run.estimate import n_params
from hallu.run.gpus import write_cpu_calibration


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
    call = _median_s(lambda: model(one), 50)
    rows, n = 64, 32
    big = torch.randint(1, shape.vocab_size, (rows, n))
    t_big = _median_s(lambda: model(big), 5)
    flops = rows * n * 2 * n_params(shape)
    # The big batch's own call overhead is `call`; what is left is the FLOPs' time.
    return {
        "layer_call_s": call / shape.n_layers,
        "flops_per_s": flops / max(t_big - call, 1e-9),
        "model": cfg.model.name_or_path,
        "threads": torch.get_num_threads(),
        "load_average": os.getloadavg()[0],
    }


def main(argv: list[str]) -> int:
    entry = write_cpu_calibration(**measure(argv))
    print(
        f"cpu: {entry['layer_call_s'] * 1e3:.3f} ms per layer call, "
        f"{entry['flops_per_s'] / 1e9:.2f} GFLOP/s ({entry['threads']} threads, load average "
        f"{entry['load_average']:.1f}); recorded in the calibration file"
    )
    return 0


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
