"""The pieces the engine runs Llama-family layers with (hallu/engine/llama_layer.py) against
transformers' decoder layer, and the host-memory setting."""

from __future__ import annotations

import platform

import pytest
import torch

from hallu.engine import llama_layer as ll
from hallu.engine.adapters import Adapter
from hallu.engine.host_memory import keep_freed_memory
from hallu.engine.trace import causal_mask

from .families import build


@pytest.mark.parametrize("family", ["llama", "mistral", "qwen2"])
def test_pieces_equal_the_decoder_layer(family):
    """norm -> qkv -> attend -> o_proj -> mlp equals transformers' whole layer, GQA included."""
    model = build(family, seed=5, n_layers=2, d=32, heads=4, kv=2)
    ad = Adapter(model)
    h = torch.randn(3, 7, 32)
    pos_emb = ad.position_embeddings(h, 7)
    mask = causal_mask(0, 7, h.dtype, h.device)
    block, attn = ad.layers[1], ad.attn(1)
    want = ad.run_layer(1, h, pos_emb, mask, None)
    for fused in (False, True):
        q, k, v = ll.qkv(block, attn, h, pos_emb, ad.head_dim)
        a = attn.o_proj(ll.attend(attn, q, k, v, mask, fused=fused))
        got = (h + a) + ll.mlp(block, h + a)
        assert (got - want).abs().max().item() < 1e-5, fused


def test_queries_of_the_last_positions_only():
    model = build("llama", seed=6, n_layers=1, d=32, heads=4, kv=2)
    ad = Adapter(model)
    h = torch.randn(2, 6, 32)
    pos_emb = ad.position_embeddings(h, 6)
    q, k, v = ll.qkv(ad.layers[0], ad.attn(0), h, pos_emb, ad.head_dim)
    q4, k4, v4 = ll.qkv(ad.layers[0], ad.attn(0), h, pos_emb, ad.head_dim, queries_from=4)
    assert q4.shape[2] == 2 and torch.allclose(q4, q[:, :, 4:], atol=1e-6)
    assert torch.allclose(k4, k, atol=1e-6) and torch.equal(v4, v)


@pytest.mark.skipif(platform.libc_ver()[0] != "glibc", reason="glibc's mallopt only")
def test_freed_memory_is_kept_on_glibc():
    assert keep_freed_memory() is True
    assert keep_freed_memory() is True  # idempotent
