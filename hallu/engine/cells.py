"""Cells of a sweep as engine patches, and the cells whose answer is known without a forward pass.

A cell is (layer, target position, source position[, head]) for one component; a window of k
layers (ROME's causal tracing) writes the component at layers l..l+k-1 together, clipped at the
last layer. A cell is *known* when the source and target prompts agree on every token up to and
including its position, at the same absolute positions: under causal attention every activation
there is the same in both runs, so the patch writes what is already there and the patched metric
is the corrupted baseline (the target run's own).
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass

import torch

from hallu.engine.adapters import Adapter
from hallu.engine.cost import known_by_tokens
from hallu.engine.fast import BatchOptions, Patch, Trace, Write, run_rows
from hallu.prompts import shared_prefix

COMPONENTS = ("resid_pre", "attn_out", "mlp_out", "head")


@dataclass(frozen=True)
class Cell:
    layer: int
    position: int  # in the target prompt
    source_position: int
    head: int | None = None
    window: int = 1  # layers written: layer .. layer + window - 1

    def layers(self) -> range:
        return range(self.layer, self.layer + self.window)


def make_cells(
    component: str,
    layers: Sequence[int],
    positions: Sequence[tuple[int, int]],
    n_layers: int,
    window: int = 1,
    n_heads: int = 0,
) -> list[Cell]:
    """Every (layer[, head], position) cell, layer-major, windows clipped at the last layer."""
    heads: Sequence[int | None] = range(n_heads) if component == "head" else [None]
    return [
        Cell(layer, t, s, head, min(window, n_layers - layer))
        for layer in layers
        for head in heads
        for t, s in positions
    ]


def is_known(cell: Cell, source_ids: Sequence[int], target_ids: Sequence[int]) -> bool:
    return _inside(cell, shared_prefix(source_ids, target_ids))


def _inside(cell: Cell, shared: int) -> bool:
    """Patched at its own position inside the prompts' `shared` leading tokens."""
    return known_by_tokens(cell.position, cell.source_position, shared)


def known_cells(
    component: str, source: Trace, target: Trace, cells: Sequence[Cell], head_dim: int
) -> list[bool]:
    """Which cells are known (module docstring): by the tokens, or because every write equals the
    target's activation there bit for bit (checked where the target's trace holds the site)."""
    shared = shared_prefix(source.ids, target.ids)  # once per pair, not per cell
    out = [_inside(c, shared) for c in cells]
    if component != "resid_pre" and component not in target.sites:
        return out
    todo = [i for i, k in enumerate(out) if not k]
    for part in range(0, len(todo), 4096):  # bounded copies for big sweeps
        chunk = todo[part : part + 4096]
        same = _writes_what_is_there(component, source, target, [cells[i] for i in chunk], head_dim)
        for i, s in zip(chunk, same, strict=True):
            out[i] = s
    return out


def _writes_what_is_there(
    component: str, source: Trace, target: Trace, cells: Sequence[Cell], head_dim: int
) -> list[bool]:
    """Per cell: is every value it writes equal to the target's activation there? One gather and
    one comparison for all cells."""
    acts = (lambda tr: tr.resid) if component == "resid_pre" else (lambda tr: tr.sites[component])
    entries = [(i, layer, c) for i, c in enumerate(cells) for layer in c.layers()]
    dev = source.resid.device
    layer_idx = torch.tensor([layer for _, layer, _ in entries], device=dev)
    a = acts(source)[layer_idx, torch.tensor([c.source_position for *_, c in entries], device=dev)]
    b = acts(target)[layer_idx, torch.tensor([c.position for *_, c in entries], device=dev)]
    if component == "head":
        rows = torch.arange(len(entries), device=dev)
        heads = torch.tensor([c.head for *_, c in entries], device=dev)
        a = a.view(len(entries), -1, head_dim)[rows, heads]
        b = b.view(len(entries), -1, head_dim)[rows, heads]
    equal = (a == b).all(-1).tolist()
    out = [True] * len(cells)
    for (i, _, _), eq in zip(entries, equal, strict=True):
        out[i] = out[i] and eq
    return out


def to_patch(component: str, cell: Cell, source: Trace, head_dim: int) -> Patch:
    return tuple(
        Write(
            layer,
            "head" if component == "head" else component,
            cell.position,
            source.value(component, layer, cell.source_position, cell.head, head_dim),
            cell.head,
        )
        for layer in cell.layers()
    )


def patch_cells(
    ad: Adapter,
    component: str,
    source: Trace,
    target: Trace,
    cells: Sequence[Cell],
    opts: BatchOptions | None = None,
    skip_known: bool = True,
) -> tuple[torch.Tensor, list[bool]]:
    """([len(cells), V] last-position logits, whether each came from the baseline unrun)."""
    return patch_pairs(ad, component, [(source, target, cells)], opts, skip_known)[0]


def patch_pairs(
    ad: Adapter,
    component: str,
    pairs: Sequence[tuple[Trace, Trace, Sequence[Cell]]],
    opts: BatchOptions | None = None,
    skip_known: bool = True,
) -> list[tuple[torch.Tensor, list[bool]]]:
    """`patch_cells` for several (source, target, cells) pairs run as one schedule: rows of
    different pairs share batches (targets of equal length; see hallu.engine.fast.run_rows)."""
    rows, owner, results = [], [], []
    for k, (source, target, cells) in enumerate(pairs):
        known = (
            known_cells(component, source, target, cells, ad.head_dim)
            if skip_known
            else [False] * len(cells)
        )
        todo = [i for i, kn in enumerate(known) if not kn]
        rows += [(target, to_patch(component, cells[i], source, ad.head_dim)) for i in todo]
        owner += [(k, i) for i in todo]
        results.append((target.logits.expand(len(cells), -1).clone(), known))
    if rows:
        computed = run_rows(ad, rows, opts or BatchOptions())
        for (k, i), row in zip(owner, computed, strict=True):
            results[k][0][i] = row.to(results[k][0].dtype)
    return results
