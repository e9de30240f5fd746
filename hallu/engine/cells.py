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
from hallu.engine.fast import BatchOptions, Patch, Trace, Write, run_patches

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


def shared_prefix(a: Sequence[int], b: Sequence[int]) -> int:
    """Number of leading tokens two prompts have in common."""
    n = 0
    for x, y in zip(a, b, strict=False):
        if x != y:
            break
        n += 1
    return n


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
    return cell.position == cell.source_position and cell.position < shared_prefix(
        source_ids, target_ids
    )


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
    known = [skip_known and is_known(c, source.ids, target.ids) for c in cells]
    todo = [i for i, k in enumerate(known) if not k]
    patches = [to_patch(component, cells[i], source, ad.head_dim) for i in todo]
    computed = run_patches(ad, target, patches, opts or BatchOptions())
    out = target.logits.expand(len(cells), -1).clone()
    if todo:
        out[torch.tensor(todo, device=out.device)] = computed.to(out.dtype)
    return out, known
