"""Peak memory of the report's aggregation on a synthetic run of a given size.

    python benchmarks/aggregate_memory.py [--pairs 400] [--layers 40] [--positions 48]
        [--controls 4] [--root DIR] [--n-boot 2000] [--n-perm 2000] [--json OUT]

The seed's sweep with every control is 40 pairs x 40 layers x 48 positions x 2 directions x
(experiment + 4 controls) = 768,000 rows; `--pairs 400` (the default) is ten times that, 7.68M
rows. The run is written the way a launch writes it: real shards in the stored schema
(hallu/store/schema.py, every column filled), 4 pairs per shard, each with its done marker
(byte length, SHA-256, page checksums), and a run.json whose plan lists every shard, so the
report's verification accepts it. Values are random but shaped like a real run (each pair's
baseline gap points the way its direction assumes; restoration is computed as the engine does).

Each measurement runs in a fresh interpreter and reports its peak resident memory
(`resource.getrusage(RUSAGE_SELF).ru_maxrss`) and the peak of Arrow's memory pool:
  - `report`:  what `python -m hallu.report RUN` does: read and verify the run (open_run), analyse
               it and build every section (report_context), render report.md;
  - `summary`: what a launch does after the sweep: hallu.report.summary.aggregate (terminal
               headline, summary.md, figures);
  - `baseline`: the same imports with no run read (the interpreter's fixed cost).
Results are recorded in docs/benchmarks.md.
"""

from __future__ import annotations

import argparse
import hashlib
import json
import os
import resource
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import numpy as np
import pyarrow as pa

from hallu.store import schema
from hallu.store.files import create_new
from hallu.store.local import LocalStore

DIRECTIONS = ("restore_confidence", "induce_tentativeness")
CONTROLS = ("same_class", "random_source", "norm_matched", "neutral_source")
PAIRS_PER_SHARD = 4


def _strings(values: list[str], index: np.ndarray) -> pa.Array:
    """values[index] as a plain string column (the stored type), built without Python rows."""
    return pa.DictionaryArray.from_arrays(pa.array(index, pa.int32()), values).cast(pa.string())


def _int(values: np.ndarray | int, n: int) -> pa.Array:
    return pa.array(np.broadcast_to(np.asarray(values, dtype=np.int32), (n,)), pa.int32())


def _f32(values: np.ndarray | float, n: int) -> pa.Array:
    return pa.array(np.broadcast_to(np.asarray(values, dtype=np.float32), (n,)), pa.float32())


def _values(rng: np.random.Generator, sign: float, pi, li, pos, n_layers: int) -> dict:
    """Baselines per pair, a band of layers that restores, noise elsewhere; float32 as stored."""
    npairs = pi.max() + 1
    corrupted = rng.normal(0.0, 1.0, npairs).astype(np.float32)
    clean = (corrupted + sign * rng.uniform(0.5, 3.0, npairs)).astype(np.float32)
    effect = np.where(li >= n_layers // 2, 0.6, 0.1) * (pos == pos.max())
    gap = clean[pi].astype(np.float64) - corrupted[pi]
    patched = (corrupted[pi] + gap * (effect + rng.normal(0, 0.05, len(pi)))).astype(np.float32)
    restoration = ((patched.astype(np.float64) - corrupted[pi]) / gap).astype(np.float32)
    return {"clean": clean[pi], "corrupted": corrupted[pi], "patched": patched, "r": restoration}


def shard_table(run_id, shard_id, direction, control, pair_ids, n_layers, n_pos, rng) -> pa.Table:
    """One shard's rows, every column of the stored schema filled, vectorised."""
    pi, li, pos = (a.ravel() for a in np.indices((len(pair_ids), n_layers, n_pos)))
    n = len(pi)
    v = _values(rng, 1.0 if direction == DIRECTIONS[0] else -1.0, pi, li, pos, n_layers)
    marker = n_pos // 3
    tokens = [f"tok{p}" for p in range(n_pos)]
    one = np.zeros(n, dtype=np.int32)
    cols = {
        "run_id": _strings([run_id], one),
        "shard_id": _strings([shard_id], one),
        "model": _strings(["synthetic/10x-seed"], one),
        "model_revision": pa.nulls(n, pa.string()),
        "dtype": _strings(["float16"], one),
        "experiment": _strings(["patching"], one),
        "direction": _strings([direction], one),
        "component": _strings(["resid_pre"], one),
        "layer": _int(li, n),
        "layer_window": _int(1, n),
        "head": pa.nulls(n, pa.int32()),
        "position": _int(pos, n),
        "position_from_end": _int(pos - n_pos, n),
        "source_position": _int(pos, n),
        "token": _strings(tokens, pos),
        "source_token": _strings(tokens, pos),
        "n_tokens": _int(n_pos, n),
        "pair_id": _strings(list(pair_ids), pi),
        "metric": _strings(["logit_diff"], one),
        "clean": _f32(v["clean"], n),
        "corrupted": _f32(v["corrupted"], n),
        "patched": _f32(v["patched"], n),
        "restoration": _f32(v["r"], n),
        "seed": pa.array(np.zeros(n, dtype=np.int64)),
        "control": pa.nulls(n, pa.string()) if control is None else _strings([control], one),
        "known": pa.array(np.zeros(n, dtype=bool)),
        "resolution": _f32(0.0078125, n),
        "approx": pa.nulls(n, pa.float32()),
        "screen_spearman": pa.nulls(n, pa.float32()),
        "marker_position": _int(marker, n),
        "position_from_marker": _int(pos - marker, n),
        "user_start": _int(4, n),
        "user_end": _int(n_pos - 6, n),
        "anchor": _strings(["user", "marker", "last"], np.digitize(pos, [marker, n_pos - 3])),
        "anchor_offset": _int(pos - marker, n),
    }
    return pa.table(cols, schema=schema.SCHEMA)


def synthesize(root: Path, run_id: str, pairs: int, layers: int, positions: int, controls: int):
    """Write the run (shards, markers, run.json with its plan); returns (store, rows)."""
    store = LocalStore(root, run_id)
    store.shard_dir.mkdir(parents=True)
    store.done_dir.mkdir()
    rng = np.random.default_rng(0)
    pair_ids = [f"pair{i:04d}" for i in range(pairs)]
    plan, rows = [], 0
    for control in (None, *CONTROLS[:controls]):
        for direction in DIRECTIONS:
            for start in range(0, pairs, PAIRS_PER_SHARD):
                group = pair_ids[start : start + PAIRS_PER_SHARD]
                spec = json.dumps([direction, control, group]).encode()
                shard_id = hashlib.sha256(spec).hexdigest()[:16]
                table = shard_table(
                    run_id, shard_id, direction, control, group, layers, positions, rng
                )
                store.write_shard(shard_id, table)
                rows += table.num_rows
                plan.append(
                    {
                        "shard_id": shard_id,
                        "direction": direction,
                        "pair_ids": group,
                        "layers": list(range(layers)),
                        "n_cells": len(group) * layers * positions,
                        "control": control,
                    }
                )
    meta = {
        "run_id": run_id,
        "n_layers": layers,
        "dtype": "float16",
        "config": {
            "model": {"name_or_path": "synthetic/10x-seed", "dtype": "float16"},
            "metric": {"name": "logit_diff", "extra": []},
            "sweep": {"layers": "all", "positions": "all", "controls": list(CONTROLS[:controls])},
            "analysis": {"equivalence_margin": 0.05},
        },
        "plan": plan,
    }
    create_new(store.dir / "run.json", json.dumps(meta).encode())
    return store, rows


def measure(phase: str, run_dir: str, n_boot: int, n_perm: int) -> dict:
    """In this (fresh) process: run one phase and return its peak memory and time."""
    import matplotlib

    matplotlib.use("Agg")
    from hallu.analysis.results import Options
    from hallu.report.sections import report_context
    from hallu.report.summary import aggregate
    from hallu.store.reader import open_run

    started = time.perf_counter()
    out: dict = {"phase": phase}
    if phase == "report":
        run = open_run(run_dir)
        out["rows"] = run.table.num_rows
        out["columns_held"] = run.table.num_columns
        out["table_bytes"] = run.table.nbytes
        ctx = report_context(run, Options(n_boot=n_boot, n_perm=n_perm))
        out["headline"] = ctx.headline
        out["report_md_chars"] = len(ctx.doc.markdown())
    elif phase == "summary":
        path = Path(run_dir)
        n_layers = json.loads((path / "run.json").read_text())["n_layers"]
        summary = aggregate(LocalStore(path.parent, path.name), n_layers)
        out["headline"] = summary["headline_lines"]
    out["seconds"] = round(time.perf_counter() - started, 1)
    out["peak_rss_mb"] = round(resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024, 1)
    out["arrow_peak_mb"] = round(pa.default_memory_pool().max_memory() / 2**20, 1)
    out["arrow_peak_bytes"] = pa.default_memory_pool().max_memory()
    return out


def run_phase(phase: str, run_dir: Path, args: argparse.Namespace) -> dict:
    """`measure` in a fresh interpreter (so each peak is that phase's alone)."""
    cmd = [sys.executable, __file__, "--measure", phase, "--root", str(run_dir)]  # the run's dir
    cmd += ["--n-boot", str(args.n_boot), "--n-perm", str(args.n_perm)]
    proc = subprocess.run(cmd, capture_output=True, text=True, env=os.environ.copy())
    if proc.returncode != 0:
        raise SystemExit(f"{phase} failed:\n{proc.stderr[-3000:]}")
    return json.loads(proc.stdout.strip().splitlines()[-1])


def _bench(root: Path, args: argparse.Namespace) -> dict:
    """Write the run under `root` (unless it is there already), then measure each phase."""
    run_id = f"synthetic-{args.pairs}x{args.layers}x{args.positions}x{args.controls}"
    started = time.perf_counter()
    store = LocalStore(root, run_id)
    if store.read_meta() is None:
        sizes = (args.pairs, args.layers, args.positions, args.controls)
        store, _ = synthesize(root, run_id, *sizes)
    rows = sum(m["n_cells"] for m in store.read_meta()["plan"])
    wrote = time.perf_counter() - started
    size = sum(f.stat().st_size for f in store.shard_dir.iterdir())
    result = {"rows": rows, "shards_mb": round(size / 2**20, 1), "write_s": round(wrote, 1)}
    result["phases"] = [run_phase(ph, store.dir, args) for ph in args.phases.split(",")]
    return result


def main(argv: list[str]) -> int:
    p = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    p.add_argument("--pairs", type=int, default=400)
    p.add_argument("--layers", type=int, default=40)
    p.add_argument("--positions", type=int, default=48)
    p.add_argument("--controls", type=int, default=4)
    p.add_argument("--root", default=None, help="keep the run here (default: a temp dir)")
    p.add_argument("--n-boot", type=int, default=2000)
    p.add_argument("--n-perm", type=int, default=2000)
    p.add_argument("--phases", default="baseline,report,summary")
    p.add_argument("--json", default=None, help="also write the results here")
    p.add_argument("--measure", default=None, help=argparse.SUPPRESS)  # child mode
    args = p.parse_args(argv)
    if args.measure:
        print(json.dumps(measure(args.measure, args.root, args.n_boot, args.n_perm)))
        return 0
    if args.root:  # kept, and reused by a later call with the same sizes (e.g. another branch)
        result = _bench(Path(args.root), args)
    else:
        with tempfile.TemporaryDirectory(prefix="hallu-aggmem-") as tmp:
            result = _bench(Path(tmp), args)
    print(json.dumps(result, indent=2))
    if args.json:
        Path(args.json).write_text(json.dumps(result, indent=2))
    return 0


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
