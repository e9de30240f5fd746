"""Residual-stream activations at named tokens, and the metric's readout direction.

`capture` runs each prompt once and keeps `resid_pre` of every layer at a few tokens of it
(offsets from the end: the marker's last token and the prompt's last token). The analysis
(hallu/analysis/mechanism.py, numpy only) turns these into difference-of-means directions, their
cosines and held-out AUROCs; nothing here averages or compares.

`readout` is the logit lens of the metric (nostalgebraist 2020): the vector r with
r . h / rms(h) = the metric's logit difference for a final residual h (the final RMSNorm is its
gain times h / rms(h)). Each capture also records rms of the prompt's own final residual at its
last position, so a direction d "reads as" r . d / rms logits of confident-minus-tentative: what
the metric would move by if d were added to the final residual (the norm's scale held fixed).
"""

from __future__ import annotations

from collections.abc import Sequence

import torch

from hallu.engine.hooks import capture_resid_pre
from hallu.engine.metrics import LogitDiff


@torch.no_grad()
def capture(
    model: torch.nn.Module,
    layers: torch.nn.ModuleList,
    prompts: Sequence[Sequence[int]],
    offsets: Sequence[Sequence[int]],
    metric: LogitDiff,
) -> tuple[torch.Tensor, torch.Tensor]:
    """([N, n_layers, K, d] float32 resid_pre at K tokens per prompt, [N] metric at the end,
    [N] root mean square of the final residual at the last token)."""
    acts, values, scale = [], [], []
    final: list[torch.Tensor] = []
    norm = model.model.norm if hasattr(model, "model") and hasattr(model.model, "norm") else None
    handle = None
    if norm is not None:
        handle = norm.register_forward_pre_hook(lambda _m, a: final.append(a[0][0, -1].float()))
    try:
        for ids, offs in zip(prompts, offsets, strict=True):
            resid, logits = capture_resid_pre(model, layers, ids)
            index = torch.tensor([len(ids) + o for o in offs], device=resid.device)
            acts.append(resid[:, index].float().cpu())
            values.append(float(metric(logits)))
            eps = getattr(norm, "variance_epsilon", 0.0)
            scale.append(float(final[-1].pow(2).mean().add(eps).sqrt()) if final else 1.0)
    finally:
        if handle is not None:
            handle.remove()
    return torch.stack(acts), torch.tensor(values), torch.tensor(scale)


@torch.no_grad()
def readout(model: torch.nn.Module, metric: LogitDiff) -> torch.Tensor:
    """[d] float32: final-norm gain times (mean confident - mean tentative unembedding rows)."""
    w = model.get_output_embeddings().weight.float()
    diff = w[list(metric.confident_ids)].mean(0) - w[list(metric.tentative_ids)].mean(0)
    norm = getattr(getattr(model, "model", None), "norm", None)
    gain = getattr(norm, "weight", None)
    return (diff * gain.float() if gain is not None else diff).cpu()
