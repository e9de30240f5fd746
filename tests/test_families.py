"""The fast engine on the chat families a replication runs on, against the naive reference.

Tiny random models built in code (tests/families.py): Llama-3 (llama3 rope scaling), Mistral with
a sliding window shorter than the prompts, Qwen2.5 (random q/k/v biases) and Gemma-2 (soft-capped
attention and logits, norms before and after attention and MLP, GeGLU, sliding-window layers
alternating with full ones). Every component and window, pairs of equal and unequal length,
within 1e-4 of tests/naive.py (one plain transformers forward per cell).
"""

from __future__ import annotations

import pytest
import torch
from transformers import OPTConfig, OPTForCausalLM

from hallu.engine.adapters import Adapter
from hallu.engine.cells import make_cells, patch_cells
from hallu.engine.fast import BatchOptions, trace
from hallu.engine.patch import choose_adapter
from hallu.errors import UserError

from .families import CHAT_FAMILIES, WINDOW, build, random_pair
from .naive import final_logits, naive_component_logits

TOL = 1e-4
CASES = [("resid_pre", 1), ("attn_out", 1), ("mlp_out", 1), ("attn_out", 2), ("mlp_out", 3),
         ("head", 1)]  # fmt: skip


def _naive(model, src, tgt, component, cells):
    return torch.stack(
        [
            naive_component_logits(
                model, tgt, src, component, list(c.layers()), c.position, c.source_position, c.head
            )
            for c in cells
        ]
    )


@pytest.mark.parametrize(
    "lengths",
    [(10, 10), pytest.param((9, 11), marks=pytest.mark.slow)],
    ids=["equal", "unequal"],
)
@pytest.mark.parametrize("family", CHAT_FAMILIES)
def test_every_component_and_window_matches_naive(family, lengths):
    model = build(family, seed=21, n_layers=3, d=32, heads=4, kv=2)
    ad = Adapter(model)
    n_src, n_tgt = lengths
    src, tgt = random_pair(21, n_target=n_tgt, n_source=n_src, first_diff=2)
    # Positions before, at and after the first difference, and the last (aligned from the end);
    # the prompts are longer than the sliding window, so early keys fall out of it.
    shift = n_src - n_tgt
    positions = [(t, t + shift) for t in (2, 3, 6, n_tgt - 1)]
    for component, window in CASES:
        layers = [0, 2] if window == 1 else [0, 1]
        cells = make_cells(component, layers, positions, 3, window, ad.n_heads)
        source, target = trace(ad, src, [component]), trace(ad, tgt, [component])
        assert (target.logits - final_logits(model, tgt)).abs().max().item() <= TOL
        out, _ = patch_cells(ad, component, source, target, cells, BatchOptions(target_tokens=40))
        worst = (out - _naive(model, src, tgt, component, cells)).abs().max().item()
        assert worst <= TOL, (family, component, window, worst)


def test_the_sliding_window_is_applied():
    """The window changes the numbers (so the test above checks it): the same Mistral with its
    window widened past the prompt gives other logits, and the engine follows each setting."""
    model = build("mistral_sw", seed=3, n_layers=2)
    ids = random_pair(3, 10, 10, first_diff=2)[1]
    windowed = trace(Adapter(model), ids).logits
    model.config.sliding_window = 64
    full = trace(Adapter(model), ids).logits
    assert (full - final_logits(model, ids)).abs().max().item() <= TOL
    assert (full - windowed).abs().max().item() > 1e-3
    assert Adapter(model).window(0, 10) is None


def test_gemma2_alternates_windows_and_caps_logits():
    model = build("gemma2", seed=4, n_layers=4)
    ad = Adapter(model)
    assert ad.windows == [WINDOW, None, WINDOW, None]
    logits = trace(ad, list(range(4, 14))).logits
    assert logits.abs().max().item() <= model.config.final_logit_softcapping


def test_fast_refuses_a_family_it_is_not_checked_on():
    """OPT keeps its layers at model.decoder.layers: sweep.engine=fast says so in one line;
    auto falls back to the hook route."""
    cfg = OPTConfig(
        vocab_size=64, hidden_size=32, num_hidden_layers=2, ffn_dim=64, num_attention_heads=4,
        max_position_embeddings=64, word_embed_proj_dim=32,
    )  # fmt: skip
    model = OPTForCausalLM(cfg).eval()
    with pytest.raises(UserError) as err:
        choose_adapter(model, "fast", "resid_pre")
    msg = str(err.value)
    assert "\n" not in msg and "sweep.engine=hooks" in msg and "OPT" in msg
    assert choose_adapter(model, "auto", "resid_pre") is None
