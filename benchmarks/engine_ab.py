"""The fast engine at another commit against this tree's, in one process, alternating order.

    PYTHONPATH=$PWD python benchmarks/engine_ab.py --old 1f63431 [--case a|b|c] [--repeats 9]
        [--threads 2]

On a shared 2-vCPU VM one run of `hallu.bench` varies by about +-8% for every method, so a change
of a few percent can only be seen by timing both engines in one process on the same weights and
rows, alternating which goes first, and taking the median of the per-repeat ratios. The old
engine is the `hallu` package of `--old`, extracted with `git archive` into a temporary directory
and imported as `hallu_old` (its absolute imports rewritten). Both run `hallu.bench`'s
`engine_case` (traces and a full resid_pre sweep of every pair, one schedule) on the case's tiny
model, with the host-memory setting `hallu.bench` applies. Prints the seconds of each repeat, the
medians, old/new (> 1: this tree is faster) and the largest logit difference between the two.
"""

from __future__ import annotations

import argparse
import importlib
import re
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import torch

from hallu import bench
from hallu.engine.host_memory import keep_freed_memory


def import_old(rev: str, into: Path):
    """`hallu.bench` of commit `rev`, as the package `hallu_old` under `into`."""
    repo = Path(__file__).resolve().parents[1]
    archive = subprocess.run(
        ["git", "archive", rev, "hallu"], cwd=repo, capture_output=True, check=True
    ).stdout
    subprocess.run(["tar", "-x", "-C", str(into)], input=archive, check=True)
    (into / "hallu").rename(into / "hallu_old")
    for path in (into / "hallu_old").rglob("*.py"):
        text = path.read_text()
        text = re.sub(r"\bhallu\.", "hallu_old.", text)
        path.write_text(text.replace("from hallu import", "from hallu_old import"))
    sys.path.insert(0, str(into))
    return importlib.import_module("hallu_old.bench")


def case_for(name: str, vocab: int) -> bench.Case:
    if name == "c":
        return bench.builtin_case()
    return bench.random_case(name, 32 if name == "a" else 64, vocab)


def main(argv: list[str] | None = None) -> dict[str, float]:
    p = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    p.add_argument("--old", required=True, help="git revision of the engine to compare against")
    p.add_argument("--case", choices=("a", "b", "c"), default="a")
    p.add_argument("--repeats", type=int, default=9)
    p.add_argument("--threads", type=int, default=2)
    args = p.parse_args(argv)
    torch.set_num_threads(args.threads)
    keep_freed_memory()
    with tempfile.TemporaryDirectory() as tmp:
        old = import_old(args.old, Path(tmp))
        model, vocab = bench.cpu_model()
        case = case_for(args.case, vocab)
        engines = {
            "old": (old, old.Adapter(model), old.BatchOptions()),
            "new": (bench, bench.Adapter(model), bench.BatchOptions()),
        }
        cells = [bench.all_cells(model.config.num_hidden_layers, len(t)) for _, t in case.pairs]

        def run(name: str) -> list[torch.Tensor]:
            mod, ad, opts = engines[name]
            return mod.engine_case(ad, case.pairs, cells, opts)

        got = {name: run(name) for name in engines}  # warm-up, and the numbers compared
        diff = max((a - b).abs().max().item() for a, b in zip(got["old"], got["new"], strict=True))
        secs: dict[str, list[float]] = {name: [] for name in engines}
        for i in range(args.repeats):
            for name in list(engines) if i % 2 == 0 else list(engines)[::-1]:
                started = time.perf_counter()
                run(name)
                secs[name].append(time.perf_counter() - started)
    ratio = statistics.median(o / n for o, n in zip(secs["old"], secs["new"], strict=True))
    for name, values in secs.items():
        shown = " ".join(f"{v:.3f}" for v in values)
        print(f"{name} ({args.old if name == 'old' else 'this tree'}): median "
              f"{statistics.median(values):.3f} s  [{shown}]")  # fmt: skip
    print(f"case {args.case}: old/new median {ratio:.3f}; max |logit diff| {diff:.1e}")
    return {"ratio": ratio, "max_abs_diff": diff}


if __name__ == "__main__":
    main()
