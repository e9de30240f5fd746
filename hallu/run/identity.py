"""A study's content identity: what the config names, as it was actually read.

The config hash (Config.study_hash) covers the keys a user wrote, such as `prompts.path` and
`model.name_or_path`; the same path can hold other contents on a resume. So run.json also records
a SHA-256 (first 16 hex digits) of each of:

- `prompts`: the prompt rows the run uses, after column and condition mapping and pair selection
  (pair id, condition, text);
- `token_ids`: every prompt's token ids as the model sees them (chat template and BOS included);
- `metric_token_ids`: the metric's token ids (logit_diff's confident and tentative tokens, and
  logprob_diff's continuations when asked for);
- `weights`: for a hub id, the commit the files came from (`hub:<id>@<commit>`); for a local
  directory, a hash of its config.json and, for each weight file (*.safetensors, *.bin, *.pt,
  *.pth, *.gguf, *.h5, *.msgpack), its name, its size and, for safetensors, its header (every
  tensor's name, dtype, shape and offsets); when the weight files total at most 64 MiB, their
  whole contents instead. The in-code tiny model is named by its spec (covered by the config).

Headers, not weights, keep this cheap for a large checkpoint (kilobytes for 70B parameters): a
swapped model of another shape, a re-export or a re-quantisation changes it. Values edited in
place with every shape kept are caught only for small checkpoints (the whole-content rule); for a
large one, pin a hub commit or give the edited model a new directory. A resume with any part
changed is refused, naming what changed (hallu/store/study.py).
"""

from __future__ import annotations

import hashlib
import json
import re
import struct
from pathlib import Path
from typing import Any

from hallu.config import Config, ModelCfg

WEIGHT_SUFFIXES = (".safetensors", ".bin", ".pt", ".pth", ".gguf", ".h5", ".msgpack")
WHOLE_CONTENT_BYTES = 64 * 2**20  # weight files up to this total are hashed whole


def _digest(value: Any) -> str:
    return hashlib.sha256(json.dumps(value, sort_keys=True).encode()).hexdigest()[:16]


def study_identity(
    cfg: Config, token_ids: dict[str, dict[str, list[int]]], metric: Any, logprob: Any = None
) -> dict[str, str]:
    """The content identity of a prepared study (see the module doc)."""
    from hallu.prompts import load_pairs, select_pairs

    pairs = select_pairs(load_pairs(cfg.prompts), cfg.sweep)
    ids = {"logit_diff": [list(metric.confident_ids), list(metric.tentative_ids)]}
    if logprob is not None:
        ids["logprob_diff"] = [list(logprob.confident_ids), list(logprob.tentative_ids)]
    return {
        "prompts": _digest([[p.pair_id, sorted(p.texts.items())] for p in pairs]),
        "token_ids": _digest(token_ids),
        "metric_token_ids": _digest(ids),
        "weights": weights_identity(cfg.model),
    }


def weights_identity(cfg: ModelCfg) -> str:
    """`tiny:<spec hash>`, `dir:<hash>` for a local directory, or `hub:<id>@<commit>`."""
    if cfg.name_or_path == "tiny":
        return f"tiny:{_digest(cfg.tiny.model_dump() if cfg.tiny else None)}"
    if cfg.name_or_path == "toy":
        from hallu.engine.toy import TOY_DIR

        return f"dir:{directory_hash(Path(TOY_DIR))}"
    path = Path(cfg.name_or_path).expanduser()
    if path.is_dir():
        return f"dir:{directory_hash(path)}"
    return f"hub:{cfg.name_or_path}@{hub_commit(cfg.name_or_path, cfg.revision)}"


def directory_hash(path: Path) -> str:
    """Hash of config.json and each weight file's name, size and safetensors header (or whole
    contents, for small checkpoints)."""
    h = hashlib.sha256()
    config = path / "config.json"
    h.update(config.read_bytes() if config.is_file() else b"")
    files = sorted(p for p in path.rglob("*") if p.is_file() and p.suffix in WEIGHT_SUFFIXES)
    whole = sum(f.stat().st_size for f in files) <= WHOLE_CONTENT_BYTES
    for f in files:
        h.update(f"\0{f.relative_to(path)}\0{f.stat().st_size}\0".encode())
        if whole:
            h.update(f.read_bytes())
        elif f.suffix == ".safetensors":
            h.update(_safetensors_header(f))
    return h.hexdigest()[:16]


def _safetensors_header(path: Path) -> bytes:
    """The JSON header of a safetensors file: 8 bytes of little-endian length, then the JSON."""
    with open(path, "rb") as f:
        head = f.read(8)
        if len(head) < 8:
            return head
        (n,) = struct.unpack("<Q", head)
        return f.read(min(n, 100_000_000))


def hub_commit(repo_id: str, revision: str | None) -> str:
    """The commit a hub id resolves to in the local cache (filled when its config was read), or
    the pinned revision; `unresolved:<revision>` when neither says."""
    if revision and re.fullmatch(r"[0-9a-f]{40}", revision):
        return revision
    try:
        from huggingface_hub import try_to_load_from_cache

        found = try_to_load_from_cache(repo_id, "config.json", revision=revision)
    except Exception:  # noqa: BLE001 - an odd id or cache layout: say it is unresolved
        found = None
    if isinstance(found, str) and "snapshots" in Path(found).parts:
        parts = Path(found).parts
        return parts[parts.index("snapshots") + 1]
    return f"unresolved:{revision or 'main'}"
