"""Residual-stream activations at named tokens, and the metric's readout direction.

`capture` runs each prompt once and keeps `resid_pre` of every layer at a few tokens of it
(offsets from the end: the marker's last token and the prompt's last token). The analysis
(hallu/analysis/mechanism.py, numpy only) turns these into difference-of-means directions, their
cosines and held-out AUROCs; nothing here averages or compares.

`readout` is the logit lens of the metric (nostalgebraist 2020): the vector r with
r . h = the metric's logit difference for a final residual h, if the final RMSNorm's division by
the root mean square is left out (it scales every logit alike). A direction d then "reads as"
r . d logits of confident-minus-tentative.
"""

from __future__ import annotations

from collections.abc import Sequence

import torch

from hallu.engine.hooks import LogitDiff, capture_resid_pre


@torch.no_grad()
def capture(
    model: torch.nn.Module,
    layers: torch.nn.ModuleList,
    prompts: Sequence[Sequence[int]],
    offsets: Sequence[Sequence[int]],
    metric: LogitDiff,
) -> tuple[torch.Tensor, torch.Tensor]:
    """([N, n_layers, K, d] float32 resid_pre at K tokens per prompt, [N] metric at the end)."""
    acts, values = [], []
    for ids, offs in zip(prompts, offsets, strict=True):
        resid, logits = capture_resid_pre(model, layers, ids)
        index = torch.tensor([len(ids) + o for o in offs], device=resid.device)
        acts.append(resid[:, index].float().cpu())
        values.append(float(metric(logits)))
    return torch.stack(acts), torch.tensor(values)


@torch.no_grad()
def readout(model: torch.nn.Module, metric: LogitDiff) -> torch.Tensor:
    """[d] float32: final-norm gain times (mean confident - mean tentative unembedding rows)."""
    w = model.get_output_embeddings().weight.float()
    diff = w[list(metric.confident_ids)].mean(0) - w[list(metric.tentative_ids)].mean(0)
    norm = getattr(getattr(model, "model", None), "norm", None)
    gain = getattr(norm, "weight", None)
    return (diff * gain.float() if gain is not None else diff).cpu()
