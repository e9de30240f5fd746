"""An independent, straightforward patching reference for the tests: one forward per cell.

It shares no code with hallu.patching: source activations come from Hugging Face's own
`output_hidden_states`, and the patch is written by a forward hook on the module *before* the
patched layer (the embedding for layer 0), not by a pre-hook on the layer itself.
"""

from __future__ import annotations

import torch


def _before(model: torch.nn.Module, layer: int) -> torch.nn.Module:
    return model.model.embed_tokens if layer == 0 else model.model.layers[layer - 1]


@torch.no_grad()
def naive_patched_logits(model, target_ids, source_ids, layer, tpos, spos) -> torch.Tensor:
    src = torch.tensor([source_ids])
    hidden = model(src, output_hidden_states=True).hidden_states[layer][0, spos].clone()

    def hook(_m, _inp, out):
        t = out[0] if isinstance(out, tuple) else out
        t = t.clone()
        t[0, tpos] = hidden
        return (t, *out[1:]) if isinstance(out, tuple) else t

    handle = _before(model, layer).register_forward_hook(hook)
    try:
        return model(torch.tensor([target_ids])).logits[0, -1].float()
    finally:
        handle.remove()


@torch.no_grad()
def final_logits(model, ids) -> torch.Tensor:
    return model(torch.tensor([ids])).logits[0, -1].float()
