"""Which heads carry the difference: per-head patching and path patching to the logits.

For a pair (source, target) and every head h of every layer l, at the last position:

- *total effect*: the target run with head h's output (its slice of the attention output
  projection's input, "z") replaced by the source's, through every later layer (ordinary
  activation patching of one head; the fast engine, hallu/engine/fast.py);
- *path effect* (path patching head -> logits, as Wang et al. 2022 do it for the IOI circuit):
  the head's output is patched and every later attention layer is frozen at the target's
  output, while MLPs and norms recompute. It measures what the head sends to the logits by
  itself, through the residual stream and any later MLPs, but not through later heads. One
  forward per layer, the layer's heads stacked in one batch.
- *direct effect* (Goldowsky-Dill et al. 2023's narrowest path: head -> final residual): every
  later attention and MLP keeps the target's values, so the final residual at the last position
  becomes resid_final(target) + W_O[:, h] (z_source - z_target), read through the final norm and
  the unembedding. It needs no extra forward pass: both runs' traces hold z and resid_final.

total >> path: the head works through later heads (e.g. a mover whose output a later head
reads); path >> direct: through a later MLP (the planted model's heads write values that only
the late MLP reads, hallu/engine/planted.py); all three equal: it writes the readout directly.
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any

import torch

from hallu.engine.adapters import Adapter
from hallu.engine.cells import make_cells, patch_cells
from hallu.engine.fast import BatchOptions, Trace, trace
from hallu.engine.metrics import LogitDiff


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


def _out(output: Any) -> torch.Tensor:
    return output[0] if isinstance(output, tuple) else output


@torch.no_grad()
def _attn_outputs(ad: Adapter, ids: Sequence[int]) -> list[torch.Tensor]:
    """Every layer's attention output at the last position of one run ([d] each)."""
    outs: list[torch.Tensor] = [torch.empty(0)] * ad.n_layers

    def keep(i: int) -> Any:
        return lambda _m, _a, o: outs.__setitem__(i, _out(o)[0, -1].clone())

    handles = [ad.attn(i).register_forward_hook(keep(i)) for i in range(ad.n_layers)]
    try:
        ad.model(torch.tensor([list(ids)], device=ad.device))
    finally:
        for h in handles:
            h.remove()
    return outs


@torch.no_grad()
def path_effects(
    ad: Adapter, source: Trace, tgt_ids: Sequence[int], metric: LogitDiff
) -> torch.Tensor:
    """[n_layers, n_heads] metric with each head patched and every later attention frozen."""
    hd, n_heads = ad.head_dim, ad.n_heads
    frozen = _attn_outputs(ad, tgt_ids)
    z_src = source.sites["head"][:, -1]  # [L, H*hd]
    batch = torch.tensor([list(tgt_ids)] * n_heads, device=ad.device)
    rows = []
    for layer in range(ad.n_layers):

        def patch_z(_m: Any, args: tuple, layer: int = layer) -> tuple:
            z = args[0].clone()
            for h in range(n_heads):  # batch row h patches head h
                sl = slice(h * hd, (h + 1) * hd)
                z[h, -1, sl] = z_src[layer, sl].to(z.device, z.dtype)
            return (z, *args[1:])

        def freeze(i: int) -> Any:
            def hook(_m: Any, _a: tuple, o: Any) -> Any:
                x = _out(o).clone()
                x[:, -1] = frozen[i].to(x.device, x.dtype)
                return (x, *o[1:]) if isinstance(o, tuple) else x

            return hook

        handles = [ad.head_proj(layer).register_forward_pre_hook(patch_z)]
        handles += [
            ad.attn(i).register_forward_hook(freeze(i)) for i in range(layer + 1, ad.n_layers)
        ]
        try:
            rows.append(metric(ad.model(batch).logits[:, -1]))
        finally:
            for h in handles:
                h.remove()
    return torch.stack(rows).float()


@torch.no_grad()
def head_effects(
    ad: Adapter,
    src_ids: Sequence[int],
    tgt_ids: Sequence[int],
    metric: LogitDiff,
    opts: BatchOptions | None = None,
) -> dict[str, torch.Tensor | float]:
    """clean and corrupted metric, and [L, H] total, path and direct patched metrics."""
    source, target = trace(ad, src_ids, ["head"]), trace(ad, tgt_ids, ["head"])
    last = [(len(tgt_ids) - 1, len(src_ids) - 1)]
    cells = make_cells("head", range(ad.n_layers), last, ad.n_layers, 1, ad.n_heads)
    logits, _ = patch_cells(ad, "head", source, target, cells, opts, skip_known=False)
    total = metric(logits).float().reshape(ad.n_layers, ad.n_heads)
    return {
        "clean": float(metric(source.logits)),
        "corrupted": float(metric(target.logits)),
        "total": total,
        "path": path_effects(ad, source, tgt_ids, metric),
        "direct": direct_effects(ad, source, target, metric),
    }
