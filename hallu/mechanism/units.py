"""+sweep=mechanism's plan: its prompts and sites, its checks, the units of both stages.

Stage 1, `capture`: resid_pre of every prompt (every rung of a ladder) at the captured layers
and sites, a group of claims per unit. The driver then finds, per steered layer, the direction
certain - neutral (difference of means over claims, hallu/analysis/mechanism.py).
Stage 2, `heads`: every head's total and direct (path-patched) effect at the last position;
`steer`: the unmarked prompts answered with alpha x that direction added (and with
`n_random` random directions of the same norm, the control); `patchgen`: each pair's target
answered with the source's resid_pre held at one layer and site, both patching directions.
Units are named by the hash of their spec and stored under mechanism/<kind>/<id>.parquet; a
rerun skips stored units. Plan and tokenization here need no torch; the worker is
hallu/mechanism/worker.py, the order of the stages hallu/mechanism/stages.py.
"""

from __future__ import annotations

import hashlib
import json
from dataclasses import dataclass
from typing import Any

from hallu.config import DIRECTIONS
from hallu.errors import UserError
from hallu.mechanism.schema import Unit
from hallu.prompt_meta import PromptRow, load_prompt_rows
from hallu.prompts import render
from hallu.shape import check_context, resolve_layers


@dataclass
class MechPrompts:
    rows: list[PromptRow]
    ids: dict[str, list[int]]  # prompt id -> token ids
    offsets: dict[str, dict[str, int]]  # prompt id -> site -> offset from the end
    pairs: list[str]  # pair ids with both pair conditions
    pair_prompt: dict[str, dict[str, str]]  # pair -> condition -> prompt id
    claim_of: dict[str, str]
    truth_of: dict[str, bool | None]


def prepare_mechanism(prep: Any) -> MechPrompts:
    """Every prompt of the selected pairs' claims, tokenized, with its site offsets."""
    cfg = prep.cfg
    selected = set(prep.token_ids)
    rows = [r for r in load_prompt_rows(cfg.prompts) if r.pair_id in selected]
    ids = {r.prompt_id: render(prep.tokenizer, r.text, cfg.prompts) for r in rows}
    offsets = {r.prompt_id: _sites(prep.tokenizer, r, ids[r.prompt_id], cfg.prompts) for r in rows}
    pair_prompt: dict[str, dict[str, str]] = {}
    for r in rows:
        if r.condition is not None:
            pair_prompt.setdefault(r.pair_id, {})[r.condition] = r.prompt_id
    for r in rows:  # files without marker_at: the first token that differs from the unmarked
        neutral = pair_prompt.get(r.pair_id, {}).get("neutral")
        if r.marker_at is None and neutral is not None:
            offsets[r.prompt_id]["marker"] = _first_difference(ids, r, pair_prompt, neutral)
    pairs = [p for p, c in pair_prompt.items() if {"certain", "uncertain", "neutral"} <= set(c)]
    if not pairs:
        raise UserError(
            f"+sweep=mechanism needs certain, uncertain and neutral prompts of each pair; "
            f"prompts.path={cfg.prompts.path} has none with all three. Add neutral rows"
        )
    claim_of = {r.pair_id: r.claim_id for r in rows}
    truth_of = {r.pair_id: r.claim_true for r in rows}
    return MechPrompts(rows, ids, offsets, pairs, pair_prompt, claim_of, truth_of)


def _first_difference(ids: dict, row: PromptRow, pair_prompt: dict, neutral: str) -> int:
    """Offset from the end of the first token where the prompt leaves its pair's unmarked
    prompt; for the unmarked prompt itself, the token before where the certain one leaves it."""
    other = pair_prompt[row.pair_id].get("certain") if row.prompt_id == neutral else neutral
    a, b = ids[row.prompt_id], ids[other] if other else ids[row.prompt_id]
    first = next((i for i, (x, y) in enumerate(zip(a, b, strict=False)) if x != y), len(a) - 1)
    if row.prompt_id == neutral:
        first = max(first - 1, 0)
    return first - len(a)


def _sites(tokenizer: Any, row: PromptRow, ids: list[int], cfg: Any) -> dict[str, int]:
    """Offsets from the end of the marker's last token (or the token before an empty marker's
    slot) and of the last token, found through the tokenizer's character offsets."""
    if row.marker_at is None:  # files without marker_at: the last token is the only site
        return {"marker": -1, "last": -1}
    if cfg.chat_template:
        messages = [{"role": "user", "content": row.text}]
        if cfg.system_prompt:
            from hallu.prompts import SYSTEM_PRESETS

            system = SYSTEM_PRESETS.get(cfg.system_prompt, cfg.system_prompt)
            messages.insert(0, {"role": "system", "content": system})
        text = tokenizer.apply_chat_template(messages, tokenize=False, add_generation_prompt=True)
        enc = tokenizer(text, add_special_tokens=False, return_offsets_mapping=True)
    else:
        text = row.text
        enc = tokenizer(text, add_special_tokens=True, return_offsets_mapping=True)
    if list(enc["input_ids"]) != ids:
        raise UserError(f"prompt {row.prompt_id!r}: re-tokenizing with offsets gave other ids")
    start = text.rfind(row.text)
    end = start + row.marker_at + (len(row.marker) if row.marker else -1)
    index = max(i for i, (a, b) in enumerate(enc["offset_mapping"]) if a < end and b > a)
    return {"marker": index - len(ids), "last": -1}


def mech_layers(spec: Any, n_layers: int, key: str) -> list[int]:
    """resolve_layers with the error naming the mechanism key."""
    try:
        return resolve_layers(spec, n_layers)
    except UserError as err:
        raise UserError(str(err).replace("sweep.layers", key, 1)) from None


def check(prep: Any) -> str:
    """Validate the mechanism settings before any work (so a mistake leaves no results);
    return a one-line description of the work."""
    m, n = prep.cfg.sweep.mechanism, prep.shape.n_layers
    captured = mech_layers(m.layers, n, "sweep.mechanism.layers")
    steer = mech_layers(m.steer_layers, n, "sweep.mechanism.steer_layers")
    patch = mech_layers(m.patch_layers, n, "sweep.mechanism.patch_layers")
    if m.steer_site not in m.sites or not set(steer) <= set(captured):
        raise UserError(
            f"sweep.mechanism.steer_layers={steer} at site {m.steer_site!r}: the direction comes "
            f"from the captured layers {captured} and sites {m.sites}; capture those too"
        )
    mech = prepare_mechanism(prep)
    by_pair: dict[str, dict[str, list[int]]] = {}
    for r in mech.rows:
        by_pair.setdefault(r.pair_id, {})[r.condition or r.prompt_id] = mech.ids[r.prompt_id]
    # steering and patch-and-generate answer each prompt: it and the answer must fit
    check_context(by_pair, prep.shape, ("sweep.mechanism.max_new_tokens", m.max_new_tokens))
    return (
        f"mechanism: {len(mech.rows)} prompts ({len(mech.pairs)} pairs) captured at "
        f"{len(captured)} layers x {len(m.sites)} sites; steering at layers {steer} with "
        f"{len(m.alphas)} alphas x (1 + {m.n_random} random); patch-and-generate at layers "
        f"{patch}; {m.n_samples} samples each" + ("; per-head effects" if m.heads else "")
    )


def _unit_id(spec: dict[str, Any]) -> str:
    return hashlib.sha256(json.dumps(spec, sort_keys=True).encode()).hexdigest()[:16]


def _base_spec(cfg: Any) -> dict[str, Any]:
    return {
        "model": cfg.model.model_dump(exclude={"device"}),
        "prompts": cfg.prompts.model_dump(),
        "metric": cfg.metric.model_dump(),
        "mechanism": cfg.sweep.mechanism.model_dump(),
        "seed": cfg.seed,
    }


def capture_units(cfg: Any, mech: MechPrompts, n_layers: int) -> list[Unit]:
    m = cfg.sweep.mechanism
    layers = tuple(mech_layers(m.layers, n_layers, "sweep.mechanism.layers"))
    claims = list(dict.fromkeys(r.claim_id for r in mech.rows))
    units = []
    for start in range(0, len(claims), m.claims_per_shard):
        group = tuple(claims[start : start + m.claims_per_shard])
        spec = {**_base_spec(cfg), "kind": "capture", "claims": group, "layers": layers}
        units.append(Unit("capture", _unit_id(spec), group, layers))
    return units


def stage2_units(cfg: Any, mech: MechPrompts, n_layers: int, directions: dict) -> list[Unit]:
    """Steering units (one per steered layer and direction) and patch-and-generate units."""
    m = cfg.sweep.mechanism
    claims = tuple(dict.fromkeys(r.claim_id for r in mech.rows))
    units = []
    for layer in mech_layers(m.steer_layers, n_layers, "sweep.mechanism.steer_layers"):
        for name, vec in directions[layer].items():
            spec = {**_base_spec(cfg), "kind": "steer", "layer": layer, "direction": name}
            spec["vector"] = hashlib.sha256(json.dumps(vec).encode()).hexdigest()
            units.append(Unit("steer", _unit_id(spec), claims, (layer,), name, tuple(vec)))
    patch_layers = tuple(mech_layers(m.patch_layers, n_layers, "sweep.mechanism.patch_layers"))
    for direction in cfg.sweep.directions:
        spec = {**_base_spec(cfg), "kind": "patchgen", "direction": direction}
        units.append(Unit("patchgen", _unit_id(spec), claims, patch_layers, direction))
    if m.heads:
        for direction in cfg.sweep.directions:
            spec = {**_base_spec(cfg), "kind": "heads", "direction": direction}
            units.append(Unit("heads", _unit_id(spec), claims, (), direction))
    assert set(cfg.sweep.directions) <= set(DIRECTIONS)
    return units
