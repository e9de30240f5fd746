"""A replica split across devices equals the unsplit one (hallu/engine/placement.py).

Two CPU "slots" go through the same placement code as two GPUs: every layer's device is checked,
and every boundary crossing is counted (`Adapter.moves`); with a GPU, cuda + cpu is tested too.
"""

from __future__ import annotations

import copy

import pytest
import torch

from hallu.engine.adapters import Adapter
from hallu.engine.cells import make_cells, patch_pairs
from hallu.engine.fast import BatchOptions, Write, run_patches, trace
from hallu.engine.models import place
from hallu.engine.placement import device_map, split_layers

from .families import build, random_pair

COMPONENTS = [("resid_pre", 1), ("attn_out", 2), ("mlp_out", 1), ("head", 1)]


def test_split_layers_is_contiguous_and_even():
    assert split_layers(4, ["cpu", "cpu"]).layer_slot == (0, 0, 1, 1)
    assert split_layers(5, ["cpu"] * 3).layer_slot == (0, 0, 1, 1, 2)
    assert split_layers(3, ["cpu"]).layer_slot == (0, 0, 0)
    with pytest.raises(ValueError, match="3 devices for 2 layers"):
        split_layers(2, ["cpu"] * 3)


def _canonical(device: torch.device) -> tuple[str, int]:
    """'cuda' and 'cuda:0' name the same device (a tensor always reports its index)."""
    return device.type, device.index or 0


def _split_equals_unsplit(devices: list[str], family: str = "llama") -> None:
    model = build(family, seed=41, n_layers=4, d=32, heads=4, kv=2)
    twin = copy.deepcopy(model)
    placement = split_layers(4, devices)
    place(twin, placement)
    ad, split = Adapter(model), Adapter(twin)
    assert split.placement == placement
    for layer, block in enumerate(split.layers):
        want = _canonical(placement.layer_device(layer))
        assert {_canonical(p.device) for p in block.parameters()} == {want}
    assert _canonical(split.unembed.weight.device) == _canonical(placement.last)
    pairs = [random_pair(s, n_target=8, n_source=8, first_diff=2) for s in (42, 43)]
    for component, window in COMPONENTS:
        outs = []
        for a in (ad, split):
            items = []
            for src, tgt in pairs:
                cells = make_cells(component, range(4), [(t, t) for t in range(8)], 4, window, 4)
                items.append((trace(a, src, [component]), trace(a, tgt, [component]), cells))
            outs.append([o for o, _ in patch_pairs(a, component, items, BatchOptions(max_rows=7))])
        for x, y in zip(*outs, strict=True):
            assert (x - y.to(x.device)).abs().max().item() <= 1e-5, component


@pytest.mark.parametrize("family", ["llama", "gpt2"])
def test_two_cpu_slots_equal_one_device(family):
    _split_equals_unsplit(["cpu", "cpu"], family)


@pytest.mark.gpu
@pytest.mark.skipif(not torch.cuda.is_available(), reason="needs a CUDA device")
def test_cuda_and_cpu_equal_one_device():
    _split_equals_unsplit(["cuda", "cpu"])


def test_every_boundary_crossing_moves_the_hidden_states():
    model = build("llama", seed=44, n_layers=4, d=32, heads=4, kv=2)
    place(model, split_layers(4, ["cpu", "cpu"]))
    ad = Adapter(model)
    src, tgt = random_pair(44, n_target=6, n_source=6, first_diff=2)
    source, target = trace(ad, src), trace(ad, tgt)
    assert ad.moves == 2  # each trace crosses from slot 0 to slot 1 once, at layer 2
    for layer, expected in [(0, 1), (1, 1), (2, 1), (3, 1)]:
        ad.moves = 0
        run_patches(ad, target, [(Write(layer, "resid_pre", 3, source.resid[layer, 3]),)])
        # From layer 0 or 1: the batch enters slot 1 at layer 2; from 2 or 3: the trace's
        # residuals are brought to slot 1 where the row joins.
        assert ad.moves == expected, layer
    ad.moves = 0
    patches = [(Write(layer, "resid_pre", 3, source.resid[layer, 3]),) for layer in range(4)]
    run_patches(ad, target, patches, BatchOptions(target_tokens=10_000))
    # One batch: it enters slot 1 at layer 2, and the trace's residuals of the rows joining at
    # layers 2 and 3 are brought over.
    assert ad.moves == 3


def test_weights_load_straight_to_their_devices(tmp_path):
    """transformers' from_pretrained with the placement's device_map, read from safetensors
    (transformers 5 needs accelerate for any device_map: the `gpu` extra installs it)."""
    pytest.importorskip("accelerate")
    from transformers import AutoModelForCausalLM

    model = build("llama", seed=45, n_layers=4, d=32, heads=4, kv=2)
    model.save_pretrained(tmp_path)
    placement = split_layers(4, ["cpu", "cpu"])
    dmap = device_map(
        placement, "model.layers", ["model.embed_tokens", "model.rotary_emb"],
        ["model.norm", "lm_head"],
    )  # fmt: skip
    assert dmap["model.layers.3"] == "cpu" and len(dmap) == 4 + 4
    loaded = AutoModelForCausalLM.from_pretrained(tmp_path, device_map=dmap, dtype=torch.float32)
    ids = torch.tensor([random_pair(45, 6, 6, 2)[1]])
    with torch.no_grad():
        assert torch.equal(loaded(ids).logits, model(ids).logits)


def _saved_llama(tmp_path):
    model = build("llama", seed=46, n_layers=4, d=32, heads=4, kv=2)
    model.save_pretrained(tmp_path)  # safetensors
    assert (tmp_path / "model.safetensors").exists()
    return model


def test_load_model_splits_a_saved_llama_over_two_slots(tmp_path):
    """load_model with two CPU "devices": the same placement code as two GPUs (transformers'
    device_map when accelerate is installed, else `place`); logits and every component's
    patches equal the unsplit load and the model that was saved."""
    from hallu.config import ModelCfg
    from hallu.engine.models import load_model

    saved = _saved_llama(tmp_path)
    cfg = ModelCfg(name_or_path=str(tmp_path), dtype="float32", device="cpu")
    one, _ = load_model(cfg, 64)
    two, _ = load_model(cfg, 64, ["cpu", "cpu"])
    assert Adapter(one).placement.devices == (torch.device("cpu"),)
    assert Adapter(two).placement == split_layers(4, ["cpu", "cpu"])
    ids = torch.tensor([random_pair(46, 7, 7, 2)[1]])
    with torch.no_grad():
        assert torch.equal(one(ids).logits, saved(ids).logits)
        assert torch.equal(two(ids).logits, saved(ids).logits)
    pairs = [random_pair(s, n_target=7, n_source=7, first_diff=2) for s in (46, 47)]
    for component, window in COMPONENTS:
        outs = []
        for model in (one, two):
            ad = Adapter(model)
            cells = make_cells(component, range(4), [(t, t) for t in range(7)], 4, window, 4)
            items = [
                (trace(ad, s, [component]), trace(ad, t, [component]), cells) for s, t in pairs
            ]
            outs.append([o for o, _ in patch_pairs(ad, component, items)])
        for x, y in zip(*outs, strict=True):
            assert (x - y).abs().max().item() <= 1e-5, component


def test_tiny_model_split_through_load_model():
    from hallu.engine.models import load_model

    from .conftest import tiny_config

    cfg = tiny_config("model.device=cpu").model
    one, _ = load_model(cfg, 50)
    two, _ = load_model(cfg, 50, ["cpu", "cpu"])
    n = len(Adapter(two).layers)
    assert Adapter(two).placement == split_layers(n, ["cpu", "cpu"])
    ids = torch.tensor([[3, 9, 4, 12, 7]])
    with torch.no_grad():
        assert torch.equal(one(ids).logits, two(ids).logits)
