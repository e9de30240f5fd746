"""Peak host memory of hallu.engine.models.load_model on a saved Llama (safetensors), CPU.

    PYTHONPATH=$PWD python benchmarks/load_memory.py [--dir /tmp/hallu-loadmem] [--dtype float32]

Saves a random Llama of ~166M parameters (8 layers, d_model 1024, vocabulary 32000) once, then
loads it in fresh subprocesses, one slot and split over two CPU "devices", sampling
/proc/self/status every 2 ms: the peak of anonymous resident memory (RssAnon: what the process
allocated; safetensors pages mapped from the file are not in it) and the kernel's peak resident
set (VmHWM: everything resident, file-backed pages included), each minus the value just
before the load; every weight is read once after the load (tensors mapped from the file are
resident only when touched). Each dtype loads a checkpoint saved in that dtype (as Llama-2's
fp16 files are). A loader that held a full second copy would show 2x the weights' bytes.
"""

from __future__ import annotations

import argparse
import json
import subprocess
import sys
from pathlib import Path

CHILD = r"""
import json, sys, threading, time
import torch, transformers
from hallu.config import ModelCfg
from hallu.engine.models import load_model

def status():
    out = {}
    for line in open("/proc/self/status"):
        k, _, v = line.partition(":")
        if k in ("RssAnon", "VmHWM", "VmRSS"):
            out[k] = int(v.split()[0]) * 1024
    return out

path, dtype, n = sys.argv[1], sys.argv[2], int(sys.argv[3])
before = status()
peak = [before["RssAnon"]]
done = threading.Event()
def sample():
    while not done.is_set():
        peak[0] = max(peak[0], status()["RssAnon"])
        time.sleep(0.002)
t = threading.Thread(target=sample); t.start()
t0 = time.time()
model, _ = load_model(ModelCfg(name_or_path=path, dtype=dtype, device="cpu"), 0, ["cpu"] * n)
secs = time.time() - t0
# Read every weight once: tensors mapped from the file become resident only when touched.
with torch.no_grad():
    total = sum(float(p.float().sum()) for p in model.parameters())
done.set(); t.join()
after = status()
weights = sum(p.numel() * p.element_size() for p in model.parameters())
print(json.dumps({"slots": n, "weights_bytes": weights, "seconds": secs,
                  "peak_anon_delta": peak[0] - before["RssAnon"],
                  "hwm_delta": after["VmHWM"] - before["VmHWM"],
                  "rss_after_delta": after["VmRSS"] - before["VmRSS"]}))
"""


def save(path: Path, dtype: str) -> None:
    import torch
    from transformers import LlamaConfig, LlamaForCausalLM

    if (path / "model.safetensors").exists() or (path / "model.safetensors.index.json").exists():
        return
    cfg = LlamaConfig(
        vocab_size=32000, hidden_size=1024, intermediate_size=2816, num_hidden_layers=8,
        num_attention_heads=16, num_key_value_heads=16,
    )  # fmt: skip
    torch.manual_seed(0)
    LlamaForCausalLM(cfg).to(getattr(torch, dtype)).save_pretrained(path)


def main() -> None:
    p = argparse.ArgumentParser()
    p.add_argument("--dir", default="/tmp/hallu-loadmem")
    p.add_argument("--dtype", nargs="+", default=["float32", "float16"])
    args = p.parse_args()
    for dtype in args.dtype:
        save(Path(args.dir) / dtype, dtype)
    import importlib.util

    direct = importlib.util.find_spec("accelerate") is not None
    route = "device_map (accelerate installed)" if direct else "host load, then place()"
    print(f"{sys.executable}: {route}")
    for dtype, n in [(d, n) for d in args.dtype for n in (1, 2)]:
        out = subprocess.run(
            [sys.executable, "-c", CHILD, str(Path(args.dir) / dtype), dtype, str(n)],
            capture_output=True, text=True, check=True,
        )  # fmt: skip
        r = json.loads(out.stdout.strip().splitlines()[-1])
        w, anon = r["weights_bytes"], r["peak_anon_delta"]
        print(
            f"{dtype}, slots {n}: weights {w / 2**20:.0f} MiB, load {r['seconds']:.1f} s, "
            f"peak RssAnon +{anon / 2**20:.0f} MiB ({anon / w:.2f}x), "
            f"VmHWM +{r['hwm_delta'] / 2**20:.0f} MiB ({r['hwm_delta'] / w:.2f}x), "
            f"RSS after +{r['rss_after_delta'] / 2**20:.0f} MiB"
        )


if __name__ == "__main__":
    main()
