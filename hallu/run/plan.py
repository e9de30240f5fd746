"""The work plan: which cells to patch, grouped into shards. Pure: no torch, no Ray.

A *cell* is (direction, pair, layer, position). A *shard* is the unit of work a worker runs and
stores as one Parquet file: one direction, a few pairs, every requested layer and position of
those pairs. Its id is a hash of its canonical spec, so a rerun recognises finished shards.

Positions are resolved per pair against the token counts of the source and target prompts:
absolute positions (`all`, non-negative ints) need both prompts to have the same length; `last:K`
and negative ints count from the end, so they also work when the lengths differ.
"""

from __future__ import annotations

import hashlib
import json
from collections.abc import Callable
from dataclasses import asdict, dataclass, field
from typing import Any

from hallu.config import DIRECTIONS, PromptsCfg, SweepCfg
from hallu.errors import UserError
from hallu.shape import ModelShape, resolve_layers  # resolve_layers: re-exported for run/

# (target position, source position); both absolute indices into their own prompt.
PositionPair = tuple[int, int]


@dataclass(frozen=True)
class Shard:
    shard_id: str
    direction: str
    pair_ids: tuple[str, ...]
    layers: tuple[int, ...]
    n_cells: int
    flops_naive: float = field(compare=False)
    control: str | None = None  # a control's name (hallu/run/controls.py); None: the experiment


@dataclass(frozen=True)
class Plan:
    shards: tuple[Shard, ...]
    n_layers: int

    @property
    def n_cells(self) -> int:
        return sum(s.n_cells for s in self.shards)

    @property
    def flops_naive(self) -> float:
        return sum(s.flops_naive for s in self.shards)

    def describe(self) -> str:
        dirs = sorted({s.direction for s in self.shards})
        pairs = len({p for s in self.shards for p in s.pair_ids})
        return (
            f"{self.n_cells} cells ({pairs} pairs x {len(dirs)} direction(s) x layers x positions) "
            f"in {len(self.shards)} shards; about {self.flops_naive:.2e} FLOP "
            "at one forward pass per cell"
        )

    def to_json(self) -> list[dict]:
        return [asdict(s) for s in self.shards]


def resolve_positions(
    spec: str | list[int], pair_id: str, len_source: int, len_target: int
) -> list[PositionPair]:
    """Target and source positions for one pair, or a UserError naming the pair and the fix."""
    shortest = min(len_source, len_target)
    if isinstance(spec, str) and spec.startswith("last:"):
        k = int(spec.split(":")[1])
        if k > shortest:
            raise UserError(
                f"sweep.positions={spec}: pair {pair_id!r} has only {shortest} tokens; "
                f"use last:{shortest} or fewer"
            )
        return [(len_target - j, len_source - j) for j in range(k, 0, -1)]
    absolute = spec == "all" or any(p >= 0 for p in spec)
    if absolute and len_source != len_target:
        raise UserError(
            f"pair {pair_id!r}: the source prompt has {len_source} tokens and the target "
            f"{len_target}; absolute positions (sweep.positions={spec}) need equal lengths. Fix: "
            "use sweep.positions=last:K (aligned from the end), or reword the pair so its "
            "certainty markers tokenize to the same number of tokens"
        )
    if spec == "all":
        return [(p, p) for p in range(len_target)]
    out = []
    for p in spec:  # type: ignore[union-attr]
        if not -shortest <= p < shortest:
            raise UserError(
                f"sweep.positions: position {p} is outside pair {pair_id!r} "
                f"({shortest} tokens: use 0..{shortest - 1} or -{shortest}..-1)"
            )
        out.append((p % len_target, p % len_source) if p < 0 else (p, p))
    return out


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


UNRELATED_TEXT = "Thanks for your help with this. Can you tell me what you think about it?"


def unrelated_ids(tokenizer: Any, prompts: PromptsCfg, min_len: int) -> list[int]:
    """The random_source control's prompt: `UNRELATED_TEXT` repeated until it has at least
    `min_len` tokens, in the run's template."""
    from hallu.prompts import render

    text = UNRELATED_TEXT
    ids = render(tokenizer, text, prompts)
    while len(ids) < min_len:
        text = f"{text} {UNRELATED_TEXT}"
        ids = render(tokenizer, text, prompts)
    return ids


def control_source_ids(
    control: str,
    token_ids: dict[str, dict[str, list[int]]],
    pid: str,
    direction: str,
    unrelated: Callable[[int], list[int]],
) -> list[int] | None:
    """The prompt a control patches from (hallu/run/controls.py), None for norm_matched (a random
    vector) or a pair without a neutral prompt; `unrelated(n)`: the unrelated prompt of at least
    n tokens. The plan's estimate asks this too, so both count the same cells."""
    target_cond = DIRECTIONS[direction][1]
    if control == "same_class":
        return token_ids[same_class_partner(token_ids, pid, target_cond)][target_cond]
    if control == "neutral_source":
        return token_ids[pid].get("neutral")
    if control == "random_source":
        return unrelated(len(token_ids[pid][target_cond]))
    return None


def end_aligned(targets: list[int], n_target: int, n_source: int) -> dict[int, int]:
    """Target -> source position, aligned from the end (the target's last token takes the
    source's last); negative where the source is too short to cover the position."""
    return {t: n_source - (n_target - t) for t in targets}


def make_plan(
    sweep: SweepCfg, shape: ModelShape, lengths: dict[str, dict[str, int]], model_id: str
) -> Plan:
    """Cells -> shards. `lengths[pair][condition]` is each prompt's token count, in pair order."""
    layers = resolve_layers(sweep.layers, shape.n_layers)
    per_layer = shape.n_heads if sweep.component == "head" else 1  # cells per layer x position
    shards = []
    pair_ids = list(lengths)
    if "same_class" in sweep.controls and len(pair_ids) < 2:
        raise UserError(
            f"sweep.controls=[same_class] patches between different pairs, but the run has "
            f"{len(pair_ids)} pair; use sweep.pairs=2 or more, or drop same_class"
        )
    for direction, control in [(d, None) for d in sweep.directions] + [
        (d, c) for c in sweep.controls for d in sweep.directions
    ]:
        source, target = DIRECTIONS[direction]
        for start in range(0, len(pair_ids), sweep.pairs_per_shard):
            group = tuple(pair_ids[start : start + sweep.pairs_per_shard])
            cells = flops = 0
            for pid in group:
                ls, lt = lengths[pid][source], lengths[pid][target]
                n_pos = len(resolve_positions(sweep.positions, pid, ls, lt))
                cells += n_pos * len(layers) * per_layer
                flops += n_pos * len(layers) * per_layer * lt * shape.params_per_token_flops
            spec = {
                "model": model_id,
                "direction": direction,
                "pairs": group,
                "layers": layers,
                "positions": sweep.positions,
                "component": sweep.component,
            }
            if control is not None:  # the experiment's shard ids stay as they were
                spec["control"] = control
            if sweep.window != 1:  # keeps the ids of earlier runs' shards unchanged
                spec["window"] = sweep.window
            digest = hashlib.sha256(json.dumps(spec, sort_keys=True).encode()).hexdigest()[:16]
            shards.append(
                Shard(digest, direction, group, tuple(layers), cells, float(flops), control)
            )
    return Plan(tuple(shards), shape.n_layers)
