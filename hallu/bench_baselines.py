"""What a user would run instead of hallu's engine, for `python -m hallu.bench` to time beside it.

- *naive, batched across pairs*: one full forward per (layer, position) cell with every pair of a
  length group stacked in the batch; a pre-hook on the layer writes each pair's source residual
  stream at that position (the obvious hook loop, done well);
- *TransformerLens 4.3* `patching.get_act_patch_resid_pre` on a `TransformerBridge` booted from
  the same Hugging Face model object's weights (a copy: booting switches attention to eager),
  with the corrupted batch of all pairs of a length group, as its docs describe. Optional: the
  `bench` extra (`pip install -e .[bench]`); skipped when not importable.

Both run one full forward per cell, as does the one-pair naive reference, so the analytic FLOP
ratio to the engine is the same for all three (hallu.bench.flop_counts); the clean run they add
once per group is left out of it. Metric for the comparison: the last-position logit difference
of two fixed tokens, summed over the pairs of a group (TransformerLens's metric must reduce the
batch to a scalar by default).
"""

from __future__ import annotations

import copy
import functools
import tempfile
from collections import defaultdict
from collections.abc import Sequence

import torch

from hallu.engine.adapters import Adapter

TOKENS = (5, 9)  # the two tokens of the logit-difference metric


def length_groups(pairs: Sequence[tuple[list[int], list[int]]]) -> list[list[int]]:
    """Indices of pairs grouped by (source, target) length: a batch cannot mix lengths."""
    groups: dict[tuple[int, int], list[int]] = defaultdict(list)
    for i, (src, tgt) in enumerate(pairs):
        groups[len(src), len(tgt)].append(i)
    return list(groups.values())


def metric(last_logits: torch.Tensor) -> torch.Tensor:
    """[..., V] -> [...]: logit of TOKENS[0] minus TOKENS[1]."""
    return last_logits[..., TOKENS[0]] - last_logits[..., TOKENS[1]]


@torch.no_grad()
def naive_batched(model: torch.nn.Module, pairs, group: list[int], cells=None) -> torch.Tensor:
    """[L, T] summed metric over the group's pairs, one batched forward per (layer, position);
    `cells` [(layer, position)] limits it to some cells (the others stay 0)."""
    ad = Adapter(model)
    src = torch.tensor([pairs[i][0] for i in group], device=ad.device)
    tgt = torch.tensor([pairs[i][1] for i in group], device=ad.device)
    hidden = model(src, output_hidden_states=True).hidden_states
    out = torch.zeros(ad.n_layers, tgt.shape[1])
    todo = cells or [(lay, t) for lay in range(ad.n_layers) for t in range(tgt.shape[1])]
    for layer, pos in todo:
        value = hidden[layer][:, pos]

        def hook(_m, args, kwargs, pos=pos, value=value):
            h = (args[0] if args else kwargs["hidden_states"]).clone()
            h[:, pos] = value
            if args:
                return (h, *args[1:]), kwargs
            return args, {**kwargs, "hidden_states": h}

        handle = ad.layers[layer].register_forward_pre_hook(hook, with_kwargs=True)
        try:
            out[layer, pos] = metric(model(tgt).logits[:, -1]).float().sum()
        finally:
            handle.remove()
    return out


# What the bench says when the TransformerLens baseline is missing (the `bench` extra).
TL_MISSING = "not installed (pip install 'hallu[bench]')"


def transformer_lens_bridge(model: torch.nn.Module, tokenizer):
    """A TransformerBridge over a copy of `model`, or None when TransformerLens is missing."""
    try:
        from transformer_lens import patching
        from transformer_lens.model_bridge import TransformerBridge
    except ImportError:
        return None
    # Its sweep draws a progress bar (tqdm, which reads TQDM_DISABLE only when first imported,
    # i.e. before this runs): switch it off so the bench prints only its table.
    if not isinstance(patching.tqdm, functools.partial):
        patching.tqdm = functools.partial(patching.tqdm, disable=True)
    from transformers import AutoTokenizer

    # The bridge reloads the tokenizer by name to add BOS, so give it one saved on disk.
    with tempfile.TemporaryDirectory() as d:
        tokenizer.save_pretrained(d)
        tok = AutoTokenizer.from_pretrained(d)
        twin = copy.deepcopy(model)
        device = str(Adapter(model).device)
        bridge = TransformerBridge.boot_transformers(
            "hallu-bench", hf_model=twin, tokenizer=tok, device=device
        )
    return bridge.eval()


@torch.no_grad()
def transformer_lens(bridge, pairs, group: list[int]) -> torch.Tensor:
    """[L, T] summed metric over the group's pairs from get_act_patch_resid_pre."""
    from transformer_lens import patching

    src = torch.tensor([pairs[i][0] for i in group])
    tgt = torch.tensor([pairs[i][1] for i in group])
    _, cache = bridge.run_with_cache(src)
    out = patching.get_act_patch_resid_pre(bridge, tgt, cache, lambda lg: metric(lg[:, -1]).sum())
    return out.float().cpu()
