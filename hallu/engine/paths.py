"""Which heads carry the difference: per-head patching and path patching to the logits.

For a pair (source, target) and every head h of every layer l, at the last position:

- *total effect*: the target run with head h's output (its slice of the attention output
  projection's input, "z") replaced by the source's, through every later layer (ordinary
  activation patching of one head; the fast engine, hallu/engine/fast.py);
- *direct effect* (path patching head -> final residual, Wang et al. 2022; Goldowsky-Dill et al.
  2023): only the path from the head straight to the unembedding is patched. Every other path
  keeps the target's values, so the final residual at the last position becomes
  resid_final(target) + W_O[:, h] (z_source - z_target), read through the final norm and the
  unembedding. It needs no extra forward pass: both runs' traces hold z and resid_final.

A head whose total effect is large and whose direct effect is small works through later layers
(e.g. a mover whose output later heads read); equal effects: it writes the readout directly.
"""

from __future__ import annotations

from collections.abc import Sequence

import torch

from hallu.engine.adapters import Adapter
from hallu.engine.cells import make_cells, patch_cells
from hallu.engine.fast import BatchOptions, Trace, trace
from hallu.engine.hooks import LogitDiff


def _w_o(ad: Adapter, layer: int) -> torch.Tensor:
    """[d_model, n_heads * head_dim]: the attention output projection as a matrix."""
    proj = ad.head_proj(layer)
    w = proj.weight
    return w if isinstance(proj, torch.nn.Linear) else w.T  # GPT-2's Conv1D stores [in, out]


@torch.no_grad()
def direct_effects(ad: Adapter, source: Trace, target: Trace, metric: LogitDiff) -> torch.Tensor:
    """[n_layers, n_heads] metric with each head's direct path patched (last positions)."""
    hd, n_heads = ad.head_dim, ad.n_heads
    z_src, z_tgt = source.sites["head"][:, -1], target.sites["head"][:, -1]  # [L, H*hd]
    final = target.resid[-1, -1]  # [d]: the last layer's output at the last position
    rows = []
    for layer in range(ad.n_layers):
        dz = (z_src[layer] - z_tgt[layer]).reshape(n_heads, hd)
        w = _w_o(ad, layer).reshape(-1, n_heads, hd)  # [d, H, hd]
        delta = torch.einsum("dhk,hk->hd", w, dz)  # each head's change of the residual
        rows.append(metric(ad.logits(final[None] + delta)))
    return torch.stack(rows).float()


@torch.no_grad()
def head_effects(
    ad: Adapter,
    src_ids: Sequence[int],
    tgt_ids: Sequence[int],
    metric: LogitDiff,
    opts: BatchOptions | None = None,
) -> dict[str, torch.Tensor | float]:
    """clean and corrupted metric, and [L, H] total and direct patched metrics."""
    source, target = trace(ad, src_ids, ["head"]), trace(ad, tgt_ids, ["head"])
    last = [(len(tgt_ids) - 1, len(src_ids) - 1)]
    cells = make_cells("head", range(ad.n_layers), last, ad.n_layers, 1, ad.n_heads)
    logits, _ = patch_cells(ad, "head", source, target, cells, opts, skip_known=False)
    total = metric(logits).float().reshape(ad.n_layers, ad.n_heads)
    return {
        "clean": float(metric(source.logits)),
        "corrupted": float(metric(target.logits)),
        "total": total,
        "direct": direct_effects(ad, source, target, metric),
    }
