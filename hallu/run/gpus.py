"""GPU kinds a plan can price, and the local calibration file `hallu.bench --gpu` writes. No torch.

Peak rates are the vendors' datasheet dense FP16/BF16 tensor-core TFLOP/s (no 2:4 sparsity):
A100 SXM 312, H100 SXM 989, H200 989, L40S 362. Memory bandwidths are the datasheets' HBM (L40S:
GDDR6) GB/s: A100 SXM 40GB 1555 and 80GB 2039 (NVIDIA A100 datasheet), H100 SXM 3350 (H100
datasheet), H200 4800 (H200 datasheet), L40S 864 (L40S datasheet). Prices are rough on-demand
list prices per GPU-hour (Lambda/RunPod, 2025) and only a default: set
`cluster.price_per_gpu_hour=...`.

The calibration file (default ~/.cache/hallu/calibration.json, or $HALLU_CALIBRATION) holds one
entry per GPU kind, measured by `python -m hallu.bench --gpu` on that card:

    {"version": 1,
     "gpus": {"h100": {"mfu": 0.38,             # engine FLOP/s / this table's peak_tflops
                       "engine_tflops": 376.0,  # FLOP/s the fast engine reached (analytic FLOP)
                       "matmul_tflops": 720.0,  # a large fp16 matmul on the same card
                       "device_name": "NVIDIA H100 80GB HBM3",
                       "measured_at": "2026-11-27T13:00:00Z"}}}

A plan uses the measured `mfu` for its GPU kind when there is one, else `ASSUMED_MFU`, and says
which. The same file holds the CPU's time model under "cpu", written by
`python -m hallu.run.cpu_calibrate` (hallu/run/stage_cost.py uses it):

    "cpu": {"layer_call_s": 0.0095,    # one decoder layer's share of one forward call
            "flops_per_s": 1.6e9,      # weight-matmul FLOP/s of a large batch
            "token_s": 0.0012,         # per generated token and row, besides its FLOP
            "measured_at": "..."}

Without it, a plan uses `CPU_DEFAULTS` (measured on the 2 vCPU dev VM, see there). Every
finished run adds what it measured under "runs", keyed by card (cluster.gpu, else model.device)
and model (hallu/run/progress.py); `mode=plan` for that card and model uses it (estimate.py):

    "runs": {"h100|meta-llama/Llama-2-13b-chat-hf": {
               "load_s": 41.0, "cells_per_s": 950.0, "peak_bytes_per_worker": 3.1e10,
               "seconds_per_unit": {"patching": 12.5, "noise floor": 80.0},
               "stage_seconds": {"patching": 1200.0, "noise floor": 80.0},
               "measured_at": "..."}}
"""

from __future__ import annotations

import json
import os
import time
from dataclasses import dataclass
from pathlib import Path
from typing import Any

# Fraction of the datasheet peak the fast engine's patching is assumed to reach before a
# measurement: its batches are many short, suffix-only rows, far from one big matmul.
ASSUMED_MFU = 0.3
# A decode step reads every weight and the batch's keys and values once, for one token per row:
# memory-bound until the batch is large. Serving engines (vLLM, TensorRT-LLM) are reported to
# reach 60-80% of the datasheet bandwidth when decoding; this loop is plain PyTorch eager (one
# kernel per op, its launch latency priced apart by GPU_LAYER_CALL_S), so assume the low end.
ASSUMED_DECODE_BANDWIDTH = 0.6
# Per forward call and decoder layer on a GPU: ~10 kernels at ~5 us launch each (assumed; it
# matters only for tiny models or one-token decode steps, where it adds up over many calls).
GPU_LAYER_CALL_S = 50e-6
# The CPU's time model without a calibration entry: `python -m hallu.run.cpu_calibrate` on the
# 2 vCPU dev VM (torch 2.13, 2 threads, the toy model) at load average 3.0 from other work,
# 2026-12-05 20:38 UTC. Consecutive measurements a minute apart on that shared VM ranged over
# 2.7-8 ms per layer call and 0.7-8.8 GFLOP/s (docs/benchmarks.md): calibrate where and when
# the run will go. Per-call overhead dominates the toy: a one-token forward costs about as much
# as 30 tokens.
CPU_DEFAULTS = {"layer_call_s": 8.0e-3, "flops_per_s": 0.74e9, "token_s": 1.04e-3}


@dataclass(frozen=True)
class Gpu:
    kind: str
    label: str
    peak_tflops: float  # dense fp16/bf16 tensor-core, datasheet
    memory_gb: float  # what the card has (GB = 1e9 bytes, as vendors count)
    bandwidth_gbs: float  # memory bandwidth, datasheet, GB/s
    price_per_hour: float  # USD per GPU-hour, a default to override


GPUS: dict[str, Gpu] = {
    g.kind: g
    for g in (
        Gpu("a100_40gb", "A100 SXM 40GB", 312.0, 40.0, 1555.0, 1.29),
        Gpu("a100_80gb", "A100 SXM 80GB", 312.0, 80.0, 2039.0, 1.79),
        Gpu("h100", "H100 SXM 80GB", 989.0, 80.0, 3350.0, 2.99),
        Gpu("h200", "H200 SXM 141GB", 989.0, 141.0, 4800.0, 3.79),
        Gpu("l40s", "L40S 48GB", 362.0, 48.0, 864.0, 0.99),
    )
}


def calibration_path() -> Path:
    env = os.environ.get("HALLU_CALIBRATION")
    if env:
        return Path(env).expanduser()
    cache = os.environ.get("XDG_CACHE_HOME") or str(Path.home() / ".cache")
    return Path(cache) / "hallu" / "calibration.json"


def read_calibration(path: Path | None = None) -> dict[str, dict[str, Any]]:
    """GPU kind -> its measured entry; {} when there is no file (or an unreadable one)."""
    path = path or calibration_path()
    try:
        data = json.loads(path.read_text())
    except (OSError, ValueError):
        return {}
    gpus = data.get("gpus") if isinstance(data, dict) else None
    return gpus if isinstance(gpus, dict) else {}


def write_calibration(
    kind: str, engine_tflops: float, path: Path | None = None, **info: Any
) -> dict:
    """Record a measurement for GPU `kind` (mfu against the datasheet peak); returns the entry."""
    if kind not in GPUS:
        raise ValueError(f"unknown GPU kind {kind!r}; known: {', '.join(GPUS)}")
    path = path or calibration_path()
    entry = {
        "mfu": engine_tflops / GPUS[kind].peak_tflops,
        "engine_tflops": engine_tflops,
        "measured_at": time.strftime("%Y-%m-%dT%H:%M:%SZ", time.gmtime()),
        **info,
    }
    doc = read_calibration_file(path)
    doc.setdefault("gpus", {})[kind] = entry
    _write(path, doc)
    return entry


def kind_for_device(name: str) -> str | None:
    """The table's kind for a CUDA device name (torch.cuda.get_device_name), or None."""
    n = name.lower()
    if "h200" in n:
        return "h200"
    if "h100" in n:
        return "h100"
    if "l40s" in n:
        return "l40s"
    if "a100" in n:
        return "a100_80gb" if "80" in n else "a100_40gb"
    return None


def mfu_for(kind: str, override: float | None = None) -> tuple[float, str]:
    """(MFU, where it came from): the user's override, a measurement, or the assumption."""
    if override is not None:
        return override, "set by cluster.mfu"
    entry = read_calibration().get(kind)
    if entry and isinstance(entry.get("mfu"), int | float) and entry["mfu"] > 0:
        when = entry.get("measured_at", "?")
        return float(entry["mfu"]), f"measured by hallu.bench --gpu on {kind} at {when}"
    return ASSUMED_MFU, "assumed; run `python -m hallu.bench --gpu` on this GPU to measure it"


def cpu_rates() -> tuple[dict[str, float], str]:
    """({layer_call_s, flops_per_s}, where they came from) for a plan on this CPU."""
    entry = read_calibration_file().get("cpu")
    keys = ("layer_call_s", "flops_per_s")
    if isinstance(entry, dict) and all(isinstance(entry.get(k), int | float) for k in keys):
        when = entry.get("measured_at", "?")
        rates = {k: float(entry[k]) for k in keys}
        rates["token_s"] = float(entry.get("token_s", 0.0))  # older entries lack it
        return rates, f"measured by hallu.run.cpu_calibrate at {when}"
    return dict(CPU_DEFAULTS), "dev-VM defaults; run `python -m hallu.run.cpu_calibrate` here"


def read_calibration_file(path: Path | None = None) -> dict[str, Any]:
    """The whole calibration document ({} when missing or unreadable)."""
    try:
        data = json.loads((path or calibration_path()).read_text())
    except (OSError, ValueError):
        return {}
    return data if isinstance(data, dict) else {}


def write_cpu_calibration(path: Path | None = None, **entry: Any) -> dict:
    """Record this machine's CPU time model (layer_call_s, flops_per_s, ...); returns it."""
    path = path or calibration_path()
    doc = read_calibration_file(path)
    entry["measured_at"] = time.strftime("%Y-%m-%dT%H:%M:%SZ", time.gmtime())
    doc["cpu"] = entry
    _write(path, doc)
    return entry


def card(cfg: Any) -> str:
    """The calibration file's name for what a run's workers use: cluster.gpu, else model.device
    (`auto` resolved on this machine, so a CPU run and its next plan share one entry)."""
    if cfg.cluster.gpu:
        return cfg.cluster.gpu
    if cfg.model.device != "auto":
        return cfg.model.device
    import torch  # what `auto` picks here (hallu/engine/models.py): CUDA if there is one

    return "cuda" if torch.cuda.is_available() else "cpu"


def calibrated_model(cfg: Any) -> str:
    """The calibration file's name for the model a run holds: a rehearsal shrunk with
    model.n_layers or model.d_model is another model (its rates do not price the whole one)."""
    m = cfg.model
    shrunk = [f"{k}={getattr(m, k)}" for k in ("n_layers", "d_model") if getattr(m, k, None)]
    return " ".join([m.name_or_path, *shrunk])


def run_key(card: str, model: str) -> str:
    return f"{card}|{model}"


def write_run_calibration(card: str, model: str, entry: dict[str, Any],
                          path: Path | None = None) -> dict:  # fmt: skip
    """Record what a finished run measured on `card` with `model` (hallu/run/progress.py)."""
    path = path or calibration_path()
    doc = read_calibration_file(path)
    entry = {**entry, "measured_at": time.strftime("%Y-%m-%dT%H:%M:%SZ", time.gmtime())}
    doc.setdefault("runs", {})[run_key(card, model)] = entry
    _write(path, doc)
    return entry


def run_rates(card: str, model: str) -> dict[str, Any] | None:
    """What the last finished run measured on `card` with `model`, or None."""
    runs = read_calibration_file().get("runs")
    entry = runs.get(run_key(card, model)) if isinstance(runs, dict) else None
    return entry if isinstance(entry, dict) else None


def _write(path: Path, doc: dict[str, Any]) -> None:
    """The whole document, replaced atomically: a reader never sees half a file."""
    doc = {**doc, "version": 1}
    doc.setdefault("gpus", {})
    path.parent.mkdir(parents=True, exist_ok=True)
    tmp = path.with_suffix(f".{os.getpid()}.tmp")
    tmp.write_text(json.dumps(doc, indent=1, sort_keys=True))
    tmp.replace(path)
