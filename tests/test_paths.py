"""Per-head total and direct (path-patched) effects against naive forward passes with hooks."""

from __future__ import annotations

import torch

from hallu.engine.adapters import Adapter
from hallu.engine.models import decoder_layers, load_model
from hallu.engine.paths import head_effects
from hallu.run.prepare import prepare
from tests.conftest import tiny_config


def _record(model, layers, ids):
    """Every layer's o_proj input, attention output and MLP output of one clean run."""
    rec = {"z": {}, "attn": {}, "mlp": {}}
    handles = []
    for i, layer in enumerate(layers):
        handles.append(
            layer.self_attn.o_proj.register_forward_pre_hook(
                lambda _m, a, i=i: rec["z"].__setitem__(i, a[0].clone())
            )
        )
        handles.append(
            layer.self_attn.register_forward_hook(
                lambda _m, _a, o, i=i: rec["attn"].__setitem__(i, o[0].clone())
            )
        )
        handles.append(layer.mlp.register_forward_hook(
            lambda _m, _a, o, i=i: rec["mlp"].__setitem__(i, o.clone())))  # fmt: skip
    try:
        logits = model(torch.tensor([ids])).logits[0, -1]
    finally:
        for h in handles:
            h.remove()
    return rec, logits


def _naive(model, layers, tgt, src_rec, tgt_rec, layer, head, hd, kind):
    """Target run with head `head` of `layer` patched at the last position; `path` freezes
    every later attention output at the target's values, `direct` also every MLP output from
    this layer's on."""
    handles = []

    def patch_z(_m, a):
        z = a[0].clone()
        z[0, -1, head * hd : (head + 1) * hd] = src_rec["z"][layer][
            0, -1, head * hd : (head + 1) * hd
        ]
        return (z,)

    handles.append(layers[layer].self_attn.o_proj.register_forward_pre_hook(patch_z))
    for i in range(layer, len(layers)):
        if i > layer and kind in ("path", "direct"):
            handles.append(layers[i].self_attn.register_forward_hook(
                lambda _m, _a, o, i=i: (tgt_rec["attn"][i], *o[1:])))  # fmt: skip
        if kind == "direct":
            handles.append(layers[i].mlp.register_forward_hook(
                lambda _m, _a, _o, i=i: tgt_rec["mlp"][i]))  # fmt: skip
    try:
        return model(torch.tensor([tgt])).logits[0, -1]
    finally:
        for h in handles:
            h.remove()


@torch.no_grad()
def test_head_effects_equal_naive_patching_and_naive_path_patching():
    cfg = tiny_config()
    prep = prepare(cfg)
    model, _ = load_model(cfg.model, len(prep.tokenizer))
    layers, ad = decoder_layers(model), Adapter(model)
    for pid in list(prep.token_ids)[:3]:
        src, tgt = prep.token_ids[pid]["certain"], prep.token_ids[pid]["uncertain"]
        eff = head_effects(ad, src, tgt, prep.metric)
        src_rec, src_logits = _record(model, layers, src)
        tgt_rec, tgt_logits = _record(model, layers, tgt)
        assert abs(eff["clean"] - float(prep.metric(src_logits))) < 1e-4
        for layer in range(ad.n_layers):
            for head in range(ad.n_heads):
                for kind in ("total", "path", "direct"):
                    logits = _naive(model, layers, tgt, src_rec, tgt_rec, layer, head,
                                    ad.head_dim, kind)  # fmt: skip
                    want = float(prep.metric(logits))
                    assert abs(float(eff[kind][layer, head]) - want) < 1e-4, (kind, layer, head)
        # the last layer's heads: the direct path differs from the total by the last MLP only
        assert not torch.allclose(eff["total"][:-1], eff["direct"][:-1])
        assert not torch.allclose(eff["path"][:-1], eff["direct"][:-1])  # later MLPs count
        assert not torch.allclose(eff["total"][:-2], eff["path"][:-2])  # later heads do not


@torch.no_grad()
def test_a_pair_with_itself_has_no_head_effects():
    cfg = tiny_config()
    prep = prepare(cfg)
    model, _ = load_model(cfg.model, len(prep.tokenizer))
    ids = next(iter(prep.token_ids.values()))["certain"]
    eff = head_effects(Adapter(model), ids, ids, prep.metric)
    for kind in ("total", "path", "direct"):
        torch.testing.assert_close(eff[kind], torch.full_like(eff[kind], eff["corrupted"]))
