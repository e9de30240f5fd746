"""Control patches: do other activations, put in the same place, restore as much as the real one?

Each control reruns the experiment's cells (same direction, pairs, layers and target positions)
with a different *source* of the patched residual-stream vector:

- `same_class`: the target condition's prompt of a *different* pair (for 2A, uncertain into
  uncertain; for 2B, certain into certain), aligned from the end. It differs from the target in
  its claim but not in the user's certainty, so it should restore nothing if the effect is
  certainty.
- `random_source`: an unrelated prompt (`UNRELATED_TEXT`, repeated until it is long enough, in
  the same chat template), aligned from the end.
- `norm_matched`: a random direction with the same L2 norm as the real source's vector at that
  layer and position (seeded by run seed, direction and pair), so only the norm is kept.

Rows have the experiment's schema with `control` set to the name. `clean` and `corrupted` are the
*real* pair's baselines, so `restoration` is on the experiment's scale: a control that reaches the
real patch's restoration says the real patch is not specific to the certainty marker.
Only the engine's public functions (`capture_resid_pre`, `patched_logits`) are used.
"""

from __future__ import annotations

import hashlib
from typing import Any

import pyarrow as pa
import torch

from hallu.config import DIRECTIONS
from hallu.engine.hooks import capture_resid_pre, patched_logits
from hallu.engine.metrics import resolution
from hallu.prompts import render
from hallu.run.plan import Shard, resolve_positions
from hallu.run.prepare import Prepared
from hallu.store import schema

CONTROLS = ("same_class", "random_source", "norm_matched")
UNRELATED_TEXT = "Thanks for your help with this. Can you tell me what you think about it?"


def same_class_partner(token_ids: dict[str, dict[str, list[int]]], pid: str, cond: str) -> str:
    """The next pair (cyclic, in run order) whose `cond` prompt is at least as long as `pid`'s.

    Long enough means every target position has an end-aligned source; if no pair is, the
    longest other pair is used and the positions it cannot cover are left out.
    """
    order = list(token_ids)
    i = order.index(pid)
    others = [order[(i + k) % len(order)] for k in range(1, len(order))]
    need = len(token_ids[pid][cond])
    for q in others:
        if len(token_ids[q][cond]) >= need:
            return q
    return max(others, key=lambda q: len(token_ids[q][cond]))


def unrelated_ids(prep: Prepared, min_len: int) -> list[int]:
    """The unrelated prompt, its text repeated until it has at least `min_len` tokens."""
    text = UNRELATED_TEXT
    ids = render(prep.tokenizer, text, prep.cfg.prompts)
    while len(ids) < min_len:
        text = f"{text} {UNRELATED_TEXT}"
        ids = render(prep.tokenizer, text, prep.cfg.prompts)
    return ids


def norm_matched(resid: torch.Tensor, seed_text: str) -> torch.Tensor:
    """Random vectors with the L2 norm of `resid`'s, one per (layer, position); seeded by text."""
    seed = int(hashlib.sha256(seed_text.encode()).hexdigest()[:15], 16)
    gen = torch.Generator().manual_seed(seed)
    noise = torch.randn(resid.shape, generator=gen, dtype=torch.float32)
    real = resid.float()
    scale = real.norm(dim=-1, keepdim=True) / noise.norm(dim=-1, keepdim=True).clamp_min(1e-12)
    return (noise * scale.cpu()).to(device=resid.device, dtype=resid.dtype)


def run_control_shard(
    prep: Prepared,
    model: torch.nn.Module,
    layers: torch.nn.ModuleList,
    shard: Shard,
    meta: dict[str, Any],
    progress: Any = None,
) -> pa.Table:
    """Result rows of one control shard (`shard.control` names the control)."""
    if shard.control not in CONTROLS:
        raise ValueError(f"unknown control {shard.control!r}; known: {CONTROLS}")
    cfg = prep.cfg
    cols: dict[str, list] = {name: [] for name in schema.SCHEMA.names}
    for pid in shard.pair_ids:
        n_cells = _pair_rows(prep, model, layers, shard, pid, cols)
        if progress is not None:
            progress.update(n_cells)
    n = len(cols["layer"])
    constant = {
        **meta,
        "shard_id": shard.shard_id,
        "model": cfg.model.name_or_path,
        "experiment": "patching",
        "direction": shard.direction,
        "component": cfg.sweep.component,
        "layer_window": 1,
        "head": None,
        "metric": cfg.metric.name,
        "seed": cfg.seed,
        "control": shard.control,
        "known": False,  # a control's source differs from the target everywhere it is patched
        "approx": None,
        "screen_spearman": None,
    }
    for k, v in constant.items():
        cols[k] = [v] * n
    return schema.to_table(cols)


def _pair_rows(
    prep: Prepared,
    model: torch.nn.Module,
    layers: torch.nn.ModuleList,
    shard: Shard,
    pid: str,
    cols: dict[str, list],
) -> int:
    """Patch one pair's control cells and append their rows to `cols`; the cells counted."""
    source_cond, target_cond = DIRECTIONS[shard.direction]
    real_src, tgt = prep.token_ids[pid][source_cond], prep.token_ids[pid][target_cond]
    real_resid, real_logits = capture_resid_pre(model, layers, real_src)
    _, tgt_logits = capture_resid_pre(model, layers, tgt)
    clean, corrupted = float(prep.metric(real_logits)), float(prep.metric(tgt_logits))
    real_positions = resolve_positions(prep.cfg.sweep.positions, pid, len(real_src), len(tgt))
    targets = [t for t, _ in real_positions]
    resid, pos, src_tokens = _control_source(
        prep, model, layers, shard, pid, real_resid, real_positions
    )
    cells = [(layer, t, pos[t]) for layer in shard.layers for t in targets if pos[t] >= 0]
    values = prep.metric(
        patched_logits(model, layers, tgt, resid, [(c,) for c in cells], prep.cfg.sweep.batch_size)
    )
    steps = resolution(values, next(model.parameters()).dtype).tolist()
    tgt_tokens = prep.tokenizer.convert_ids_to_tokens(tgt)
    for (layer, t, s), value, step in zip(cells, values.tolist(), steps, strict=True):
        row = {
            "resolution": step,
            "layer": layer,
            **schema.cell_fields(pid, t, s, tgt_tokens, src_tokens, clean, corrupted, value),
        }
        for k, v in row.items():
            cols[k].append(v)
    return len(shard.layers) * len(targets)


def _control_source(
    prep: Prepared,
    model: torch.nn.Module,
    layers: torch.nn.ModuleList,
    shard: Shard,
    pid: str,
    real_resid: torch.Tensor,
    real_positions: list[tuple[int, int]],
) -> tuple[torch.Tensor, dict[int, int], list[str]]:
    """The control's (residual stream to patch from, target -> source position, source tokens)."""
    source_cond, target_cond = DIRECTIONS[shard.direction]
    n_target = len(prep.token_ids[pid][target_cond])
    if shard.control == "norm_matched":
        resid = norm_matched(real_resid, f"{prep.cfg.seed}/{shard.direction}/{pid}")
        return resid, dict(real_positions), ["<random>"] * len(prep.token_ids[pid][source_cond])
    if shard.control == "same_class":
        partner = same_class_partner(prep.token_ids, pid, target_cond)
        src_ids = prep.token_ids[partner][target_cond]
    else:
        src_ids = unrelated_ids(prep, n_target)
    resid, _ = capture_resid_pre(model, layers, src_ids)
    # Aligned from the end: the target's last token takes the source's last token.
    pos = {t: len(src_ids) - (n_target - t) for t, _ in real_positions}
    return resid, pos, prep.tokenizer.convert_ids_to_tokens(src_ids)
