"""A replica's layers spread over several devices (pipeline placement, no parallelism).

A model too big for one GPU (Llama-2-70b: 140 GB of fp16 weights) is split into contiguous runs
of decoder layers, one run per device; the embedding sits with the first run and the final norm
and unembedding with the last. The fast engine runs layers one at a time, so it moves the hidden
states to a layer's device just before calling it (`Adapter.enter`), and keeps the tensors a
layer reads (mask, position embeddings, prefix keys/values) on that layer's device. Only one
device works at a time: the split buys memory, not speed.

Devices are *slots*: ['cpu', 'cpu'] is two slots that happen to be one device, so the tests
exercise every boundary crossing on a machine without GPUs.

Weights load straight to their devices: `device_map(...)` gives transformers' `from_pretrained`
a {module name: device} map, and each safetensors tensor is read onto its device without a full
copy in host memory (transformers' loading, "Big model inference" in its docs).
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass

import torch


@dataclass(frozen=True)
class Placement:
    devices: tuple[torch.device, ...]  # one per slot
    layer_slot: tuple[int, ...]  # slot of each decoder layer; nondecreasing

    def layer_device(self, layer: int) -> torch.device:
        return self.devices[self.layer_slot[layer]]

    @property
    def first(self) -> torch.device:
        return self.devices[0]

    @property
    def last(self) -> torch.device:
        return self.devices[self.layer_slot[-1]]


def split_layers(n_layers: int, devices: Sequence[str | torch.device]) -> Placement:
    """Contiguous, as even as possible; earlier slots take the remainder (they also hold the
    embedding, the last holds the unembedding, which is about as large)."""
    if not devices:
        raise ValueError("split_layers: give at least one device")
    if len(devices) > n_layers:
        raise ValueError(f"split_layers: {len(devices)} devices for {n_layers} layers")
    base, extra = divmod(n_layers, len(devices))
    slots: list[int] = []
    for k in range(len(devices)):
        slots += [k] * (base + (1 if k < extra else 0))
    return Placement(tuple(torch.device(d) for d in devices), tuple(slots))


def device_map(placement: Placement, layers_prefix: str, first: Sequence[str], last: Sequence[str]):
    """{module name: device} for transformers' from_pretrained(device_map=...)."""
    out = {name: str(placement.first) for name in first}
    for layer, slot in enumerate(placement.layer_slot):
        out[f"{layers_prefix}.{layer}"] = str(placement.devices[slot])
    out.update({name: str(placement.last) for name in last})
    return out


def infer(model: torch.nn.Module, layers: Sequence[torch.nn.Module]) -> Placement:
    """The recorded placement, or one slot per run of layers on one device (a model loaded with
    transformers' device_map)."""
    recorded = getattr(model, "hallu_placement", None)
    if isinstance(recorded, Placement):
        return recorded
    devices: list[torch.device] = []
    slots = []
    for block in layers:
        dev = next(block.parameters()).device
        if not devices or devices[-1] != dev:
            devices.append(dev)
        slots.append(len(devices) - 1)
    return Placement(tuple(devices), tuple(slots))
