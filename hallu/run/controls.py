"""Control patches: do other activations, put in the same place, restore as much as the real one?

Each control reruns the experiment's cells (same direction, pairs, layers and target positions)
with a different *source* of the patched residual-stream vector:

- `same_class`: the target condition's prompt of a *different* pair (for 2A, uncertain into
  uncertain; for 2B, certain into certain), aligned from the end. It differs from the target in
  its claim but not in the user's certainty, so it should restore nothing if the effect is
  certainty.
- `random_source`: an unrelated prompt (hallu.run.plan.UNRELATED_TEXT, repeated until it is
  long enough, in the same chat template), aligned from the end.
- `norm_matched`: random vectors drawn like the real source's activations at that layer: each
  dimension from a normal with that dimension's mean and spread over the source's positions
  (seeded by run seed, direction and pair). A random direction scaled to the real norm would put
  an outlier dimension's size (a constant dimension of 8192 on model=planted) into every
  dimension and destroy the metric; drawn per dimension, the norm matches in distribution and
  the outlier stays where it is.
- `neutral_source`: the same claim said by the neutral user (no marker), aligned from the end: it
  moves the target toward the neutral prompt's metric, the baseline both markers depart from.

Rows have the experiment's schema with `control` set to the name. `clean` is the metric of the
control's *own* source prompt (NaN for `norm_matched`, which has none) and `corrupted` the real
target's, so `restoration` is the fraction of the way the metric moved toward where the control's
source sits; analysis reports the raw change (patched - corrupted, in logits) beside it.
Cells run through the engine's face (`Patcher.clean_run`, `Patcher.patch_resid`): with the fast
engine, one trace per prompt and the cells as rows of its schedule, resuming at the patched layer
and position; a cell whose written vector is the target's own activation (e.g. the same token's
embedding at layer 0) is known, with the target's logits and no forward. `known` says which.
"""

from __future__ import annotations

import hashlib
import math
from typing import Any

import pyarrow as pa
import torch

from hallu.config import DIRECTIONS
from hallu.engine.patch import Patcher
from hallu.run.plan import Shard, control_source_ids, end_aligned, resolve_positions, unrelated_ids
from hallu.run.prepare import Prepared
from hallu.store import schema

CONTROLS = ("same_class", "random_source", "norm_matched", "neutral_source")


def norm_matched(resid: torch.Tensor, seed_text: str) -> torch.Tensor:
    """Random vectors like `resid`'s ([layers, positions, d]): per layer, each dimension drawn
    from a normal with its mean and standard deviation over the positions; seeded by text."""
    seed = int(hashlib.sha256(seed_text.encode()).hexdigest()[:15], 16)
    gen = torch.Generator().manual_seed(seed)
    noise = torch.randn(resid.shape, generator=gen, dtype=torch.float32)
    real = resid.float().cpu()
    mean = real.mean(dim=-2, keepdim=True)
    std = real.std(dim=-2, keepdim=True) if real.shape[-2] > 1 else torch.zeros_like(mean)
    return (mean + std * noise).to(device=resid.device, dtype=resid.dtype)


def run_control_shard(
    prep: Prepared,
    engine: Patcher,
    shard: Shard,
    meta: dict[str, Any],
    progress: Any = None,
) -> pa.Table:
    """Result rows of one control shard (`shard.control` names the control)."""
    if shard.control not in CONTROLS:
        raise ValueError(f"unknown control {shard.control!r}; known: {CONTROLS}")
    cfg = prep.cfg
    cols: dict[str, list] = {name: [] for name in schema.SCHEMA.names}
    try:
        for pid in shard.pair_ids:
            n_cells = _pair_rows(prep, engine, shard, pid, cols)
            if progress is not None:
                progress.update(n_cells)
    finally:
        engine.forget()  # the shard's traces (each prompt traced once per shard)
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
        "approx": None,
        "screen_spearman": None,
    }
    for k, v in constant.items():
        cols[k] = [v] * n
    return schema.to_table(cols)


def _pair_rows(
    prep: Prepared,
    engine: Patcher,
    shard: Shard,
    pid: str,
    cols: dict[str, list],
) -> int:
    """Patch one pair's control cells and append their rows to `cols`; the cells counted."""
    source_cond, target_cond = DIRECTIONS[shard.direction]
    if shard.control == "neutral_source" and "neutral" not in prep.token_ids[pid]:
        return 0  # a pair without a neutral prompt has no such control
    real_src, tgt = prep.token_ids[pid][source_cond], prep.token_ids[pid][target_cond]
    _, tgt_logits = engine.clean_run(tgt)
    corrupted = float(prep.metric(tgt_logits))
    real_positions = resolve_positions(prep.cfg.sweep.positions, pid, len(real_src), len(tgt))
    targets = [t for t, _ in real_positions]
    resid, pos, src_tokens, clean = _control_source(prep, engine, shard, pid, real_positions)
    cells = [(layer, t, pos[t]) for layer in shard.layers for t in targets if pos[t] >= 0]
    # Through the engine's route: the fast engine's schedule (known cells unrun), or hooks.
    logits, known = engine.patch_resid(tgt, resid, cells)
    patched = prep.metric(logits).tolist()
    steps = prep.metric.resolution(logits, engine.dtype).tolist()
    tgt_tokens = prep.tokenizer.convert_ids_to_tokens(tgt)
    anchors = prep.anchors[pid][target_cond] if prep.anchors else None
    for (layer, t, s), value, step, was_known in zip(cells, patched, steps, known, strict=True):
        row = {
            "resolution": step,
            "layer": layer,
            "known": was_known,
            **schema.cell_fields(
                pid, t, s, tgt_tokens, src_tokens, clean, corrupted, value, anchors
            ),
        }
        for k, v in row.items():
            cols[k].append(v)
    return len(shard.layers) * len(targets)


def _control_source(
    prep: Prepared,
    engine: Patcher,
    shard: Shard,
    pid: str,
    real_positions: list[tuple[int, int]],
) -> tuple[torch.Tensor, dict[int, int], list[str], float]:
    """The control's residual stream to patch from, target -> source position, source tokens,
    and its own source's clean metric (nan for norm_matched: no source prompt, raw change only).
    The one place a control's source is built."""
    source_cond, target_cond = DIRECTIONS[shard.direction]
    n_target = len(prep.token_ids[pid][target_cond])
    if shard.control == "norm_matched":
        real_src = prep.token_ids[pid][source_cond]
        real_resid, _ = engine.clean_run(real_src)
        resid = norm_matched(real_resid, f"{prep.cfg.seed}/{shard.direction}/{pid}")
        return resid, dict(real_positions), ["<random>"] * len(real_src), math.nan
    src_ids = control_source_ids(
        shard.control,
        prep.token_ids,
        pid,
        shard.direction,
        lambda n: unrelated_ids(prep.tokenizer, prep.cfg.prompts, n),
    )
    assert src_ids is not None, "neutral_source pairs without a neutral prompt are skipped"
    resid, src_logits = engine.clean_run(src_ids)
    pos = end_aligned([t for t, _ in real_positions], n_target, len(src_ids))
    tokens = prep.tokenizer.convert_ids_to_tokens(src_ids)
    return resid, pos, tokens, float(prep.metric(src_logits))
