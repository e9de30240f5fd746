"""Weights on their way to the devices: a node-local cache, and the device map of a placement.

*Node-local cache* (`model.cache_dir`): every worker on a node needs the same weights, so the
first one to ask downloads them (huggingface_hub's `snapshot_download` into `cache_dir`, the
hub's own cache layout) while holding an exclusive file lock, and writes a marker when the
download is complete; the others wait on the lock, then find the marker and load from disk. A
download that died leaves no marker, so the next worker resumes it. The lock is `fcntl.flock`
on a file in `cache_dir`, so `cache_dir` must be on the node's own disk (not a network share).

*Device map*: transformers' `from_pretrained(device_map=...)` reads each safetensors tensor
straight onto the device the map names, so a replica spread over several GPUs never holds a
full copy in host memory. The map is the engine's own placement (hallu/engine/placement.py)
written as module names, found on a skeleton of the model built on the meta device (no memory).
"""

from __future__ import annotations

import fcntl
import os
from collections.abc import Callable
from pathlib import Path
from typing import Any

import torch

from hallu.engine.placement import Placement, device_map
from hallu.errors import UserError

# What a patching run reads from a hub repository (weights in safetensors only: no pickles).
PATTERNS = ["*.json", "*.safetensors", "tokenizer.model", "*.txt"]


def node_cached(cache_dir: str, key: str, fetch: Callable[[], str]) -> str:
    """The local path `fetch()` returned the first time any process on this node asked for
    `key` under `cache_dir`; `fetch` runs at most once per node (unless it failed)."""
    root = Path(cache_dir)
    root.mkdir(parents=True, exist_ok=True)
    safe = key.replace("/", "--")
    marker = root / f".hallu-{safe}.done"
    with open(root / f".hallu-{safe}.lock", "a") as lock:
        fcntl.flock(lock, fcntl.LOCK_EX)  # released when the file closes, also if we die
        if marker.exists():
            return marker.read_text().strip()
        path = fetch()
        tmp = marker.with_suffix(f".tmp{os.getpid()}")
        tmp.write_text(path)
        tmp.replace(marker)  # atomic: a marker is never half written
        return path


def hub_snapshot(repo: str, revision: str | None, cache_dir: str) -> str:
    """Local directory of `repo` at `revision`, downloaded once per node into `cache_dir`."""
    from huggingface_hub import snapshot_download

    def fetch() -> str:
        return snapshot_download(
            repo, revision=revision, cache_dir=cache_dir, allow_patterns=PATTERNS
        )

    return node_cached(cache_dir, f"{repo}@{revision or 'default'}", fetch)


def module_device_map(config: Any, placement: Placement) -> dict[str, str]:
    """{module name: device} that puts a model of `config` where `placement` says: the
    embedding (and position embeddings) with the first layers, norm and unembedding with the
    last; any other module holding weights goes with the first slot."""
    from transformers import AutoModelForCausalLM

    from hallu.engine.adapters import Adapter

    with torch.device("meta"):
        skeleton = AutoModelForCausalLM.from_config(config)
    ad = Adapter(skeleton)
    if ad.unembed.weight is ad.embed_tokens.weight and placement.first != placement.last:
        raise UserError(
            f"{type(skeleton).__name__} ties its unembedding to its embedding, so its layers "
            f"cannot be split over {len(set(placement.devices))} devices; use "
            "cluster.resources.num_gpus=1"
        )
    name = {id(m): n for n, m in skeleton.named_modules()}
    first = [name[id(m)] for m in (ad.embed_tokens, ad.abs_pos, ad.rotary) if m is not None]
    last = [name[id(ad.norm)], name[id(ad.unembed)]]
    out = device_map(placement, name[id(ad.layers)], first, last)
    covered = tuple(out)
    for n, _ in skeleton.named_parameters():
        if not any(n == c or n.startswith(c + ".") for c in covered):
            out[n.rsplit(".", 1)[0]] = str(placement.first)
    return out
