"""Attribution patching: a first-order screen of every resid_pre cell, then exact top-K.

One forward and one backward pass of the target run give the metric's gradient at the residual
stream entering every layer; a cell's approximate effect is (source activation - target
activation) . gradient (Nanda 2023; Syed et al. 2023). The K cells with the largest |approximate
effect| are then patched exactly by the engine, and the Spearman rank correlation between the
approximation and the exact values on those cells says how far the screen can be trusted.

`sweep.screen_top_k=K` runs it in a sweep (hallu/run/worker.py).
"""

from __future__ import annotations

from collections.abc import Callable, Sequence
from dataclasses import dataclass

import torch
from scipy.stats import spearmanr

from hallu.engine.adapters import Adapter
from hallu.engine.cells import Cell, patch_cells
from hallu.engine.fast import BatchOptions, PrefixCache, Trace
from hallu.engine.trace import layer_masks


def resid_gradients(
    ad: Adapter, ids: Sequence[int], metric: Callable[[torch.Tensor], torch.Tensor]
) -> torch.Tensor:
    """[L, T, d] gradient of metric(last-position logits) at every layer's input, float32."""
    with torch.enable_grad():
        h = ad.embed(torch.tensor([list(ids)], device=ad.device))
        pos_emb = ad.position_embeddings(h, len(ids))
        masks = layer_masks(ad, 0, len(ids), h.dtype, h.device)
        inputs = []
        for layer in range(ad.n_layers):
            h = h.detach().requires_grad_() if layer == 0 else h
            h.retain_grad()
            inputs.append(h)
            h = ad.run_layer(layer, h, pos_emb, masks[layer], PrefixCache())
        metric(ad.logits(h[:, -1])[0]).backward()
    return torch.stack([x.grad[0].float() for x in inputs])


@dataclass
class Screen:
    approx: torch.Tensor  # [len(cells)] first-order estimate of patched - corrupted
    top: list[int]  # indices of the cells patched exactly, largest |approx| first
    exact: torch.Tensor  # [len(top)] exact patched - corrupted of those cells
    logits: torch.Tensor  # [len(top), V] their patched last-position logits
    spearman: float  # rank correlation of approx and exact on `top` (NaN if under 2 cells)


def screen(
    ad: Adapter,
    source: Trace,
    target: Trace,
    cells: Sequence[Cell],
    metric: Callable[[torch.Tensor], torch.Tensor],
    k: int,
    opts: BatchOptions | None = None,
) -> Screen:
    grad = resid_gradients(ad, target.ids, metric)
    approx = torch.stack(
        [
            ((source.resid[c.layer, c.source_position] - target.resid[c.layer, c.position]).float()
             * grad[c.layer, c.position]).sum()
            for c in cells
        ]
    )  # fmt: skip
    top = torch.argsort(approx.abs(), descending=True)[:k].tolist()
    logits, _ = patch_cells(ad, "resid_pre", source, target, [cells[i] for i in top], opts)
    exact = metric(logits).float() - metric(target.logits).float()
    rho = float("nan")
    if len(top) > 1:
        rho = float(spearmanr(approx[top].cpu().numpy(), exact.cpu().numpy())[0])
    return Screen(approx, top, exact, logits, rho)
