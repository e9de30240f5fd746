"""An independent, straightforward patching reference for the tests: one forward per cell.

It shares no code with hallu.engine.hooks: source activations come from Hugging Face's own
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


# --- Other components and families (still one full forward per cell, no hallu code) ---------

# Where each family keeps its blocks, the module just before block 0, and inside a block the
# attention, the MLP, and the projection whose input holds the heads side by side.
_FAMILY = {
    "llama": ("model.layers", "model.embed_tokens", "self_attn", "mlp", "self_attn.o_proj"),
    "mistral": ("model.layers", "model.embed_tokens", "self_attn", "mlp", "self_attn.o_proj"),
    "qwen2": ("model.layers", "model.embed_tokens", "self_attn", "mlp", "self_attn.o_proj"),
    # Gemma-2: embed_tokens scales by sqrt(d) inside; attn_out / mlp_out are the modules'
    # outputs, before the norms that follow them.
    "gemma2": ("model.layers", "model.embed_tokens", "self_attn", "mlp", "self_attn.o_proj"),
    "gpt2": ("transformer.h", "transformer.drop", "attn", "mlp", "attn.c_proj"),
    "gpt_neox": ("gpt_neox.layers", "gpt_neox.emb_dropout", "attention", "mlp", "attention.dense"),
}


def _attr(obj, path):
    for a in path.split("."):
        obj = getattr(obj, a)
    return obj


def _module(model, component, layer):
    blocks, before, attn, mlp, heads = _FAMILY[model.config.model_type]
    if component == "resid_pre":
        return _attr(model, before) if layer == 0 else _attr(model, blocks)[layer - 1]
    inner = {"attn_out": attn, "mlp_out": mlp, "head": heads}[component]
    return _attr(_attr(model, blocks)[layer], inner)


def _head_dim(model):
    c = model.config
    return getattr(c, "head_dim", None) or c.hidden_size // c.num_attention_heads


@torch.no_grad()
def naive_component_logits(
    model, target_ids, source_ids, component, layers, tpos, spos, head=None
) -> torch.Tensor:
    """Last-position logits of the target with `component` at every layer of `layers` (a window)
    and position tpos replaced by the source's value at spos; one head's slice for 'head'."""
    grabbed = {}

    def grab(layer):
        def hook(_m, args, out):
            x = args[0] if component == "head" else (out[0] if isinstance(out, tuple) else out)
            grabbed[layer] = x[0, spos].clone()

        return hook

    def put(layer):
        def hook(_m, _args, out):
            x = (out[0] if isinstance(out, tuple) else out).clone()
            x[0, tpos] = grabbed[layer]
            return (x, *out[1:]) if isinstance(out, tuple) else x

        return hook

    def put_pre(layer):
        d = _head_dim(model)

        def hook(_m, args):
            x = args[0].clone()
            x[0, tpos, head * d : (head + 1) * d] = grabbed[layer][head * d : (head + 1) * d]
            return (x, *args[1:])

        return hook

    mods = {layer: _module(model, component, layer) for layer in layers}
    if component == "head":
        handles = [
            m.register_forward_pre_hook(lambda _m, a, L=layer: grab(L)(_m, a, None))
            for layer, m in mods.items()
        ]
    else:
        handles = [m.register_forward_hook(grab(layer)) for layer, m in mods.items()]
    try:
        model(torch.tensor([source_ids]))
    finally:
        for h in handles:
            h.remove()
    if component == "head":
        handles = [m.register_forward_pre_hook(put_pre(layer)) for layer, m in mods.items()]
    else:
        handles = [m.register_forward_hook(put(layer)) for layer, m in mods.items()]
    try:
        return model(torch.tensor([target_ids])).logits[0, -1].float()
    finally:
        for h in handles:
            h.remove()


@torch.no_grad()
def naive_continuation_logprob(model, target_ids, continuation, source_ids=None, cells=()):
    """Sum of log p(continuation | target prompt), teacher-forced, in float32, with the residual
    stream entering each (layer, tpos, spos) of `cells` replaced by the source prompt's."""

    def put(tpos, value):
        def hook(_m, _inp, out):
            t = (out[0] if isinstance(out, tuple) else out).clone()
            t[0, tpos] = value
            return (t, *out[1:]) if isinstance(out, tuple) else t

        return hook

    handles = []
    if cells:
        src = model(torch.tensor([source_ids]), output_hidden_states=True).hidden_states
        for layer, tpos, spos in cells:
            value = src[layer][0, spos].clone()
            handles.append(_before(model, layer).register_forward_hook(put(tpos, value)))
    try:
        logits = model(torch.tensor([list(target_ids) + list(continuation)])).logits[0]
    finally:
        for h in handles:
            h.remove()
    n, t = len(continuation), len(target_ids)
    logp = torch.log_softmax(logits[t - 1 : t - 1 + n].float(), -1)
    return logp[torch.arange(n), torch.tensor(continuation)].sum().item()
