"""Load a model and its tokenizer: the tiny in-code model, a hub id, or a local directory.

`load_shape` reads only the config (no weights) so that `mode=plan` and validation stay cheap.
`decoder_layers` is the one place that knows where each family keeps its transformer blocks.
"""

from __future__ import annotations

import importlib.util
import os
import sys
from collections import Counter
from collections.abc import Sequence
from typing import Any

import torch

from hallu.config import Config, ModelCfg
from hallu.engine.adapters import Adapter
from hallu.engine.placement import Placement, split_layers
from hallu.errors import UserError
from hallu.shape import ModelShape, shape_from_config, tiny_shape

# Models this process has loaded, by name (load_model counts each call): with cluster=ray the
# launching process must have none, its workers hold the replicas (tests/test_every_stage_ray.py).
LOADS: Counter[str] = Counter()
DTYPES = {"float32": torch.float32, "float16": torch.float16, "bfloat16": torch.bfloat16}


def resolve_device(cfg: ModelCfg) -> torch.device:
    if cfg.device == "auto":
        return torch.device("cuda" if torch.cuda.is_available() else "cpu")
    if cfg.device.startswith("cuda") and not torch.cuda.is_available():
        raise UserError(
            f"model.device={cfg.device}, but no CUDA GPU is visible; use model.device=cpu"
        )
    return torch.device(cfg.device)


def resolve_dtype(cfg: ModelCfg, device: torch.device) -> torch.dtype:
    if cfg.dtype == "auto":
        return torch.float16 if device.type == "cuda" else torch.float32
    return DTYPES[cfg.dtype]


def is_tiny(cfg: ModelCfg) -> bool:
    return cfg.name_or_path == "tiny"


def is_random(cfg: ModelCfg) -> bool:
    """A rehearsal: the preset's architecture with random weights (hallu/engine/standin.py)."""
    return cfg.weights == "random"


def is_planted(cfg: ModelCfg) -> bool:
    """The hand-built model of hallu/engine/planted.py (the toy's tokenizer, weights in code)."""
    return cfg.name_or_path == "planted"


def source_path(cfg: ModelCfg) -> str:
    """Hub id or directory to load; `toy`: trained by hallu.engine.toy, shipped in hallu."""
    if cfg.name_or_path == "toy":
        from hallu.engine.toy import TOY_DIR

        return str(TOY_DIR)
    return cfg.name_or_path


def weights_path(cfg: ModelCfg) -> str:
    """Where `load_model` reads the weights: with `model.cache_dir`, a hub id is downloaded
    once per node into that directory (hallu/engine/weights.py); a local directory is read as
    it is."""
    path = source_path(cfg)
    if cfg.cache_dir is None or os.path.isdir(path):
        return path
    from hallu.engine.weights import hub_snapshot

    return hub_snapshot(path, cfg.revision, cfg.cache_dir)


def replica_devices(cfg: Config) -> list[str]:
    """The devices one replica spans: `cluster.resources.num_gpus` GPUs when it asks for more
    than one (Ray numbers an actor's GPUs from 0), else `model.device` alone."""
    device = resolve_device(cfg.model)
    n = int(cfg.cluster.resources.num_gpus)
    if device.type != "cuda" or n <= 1:
        return [str(device)]
    if n > torch.cuda.device_count():
        raise UserError(
            f"cluster.resources.num_gpus={n}, but this worker sees {torch.cuda.device_count()} "
            "GPU(s); lower it or give the workers more GPUs"
        )
    return [f"cuda:{i}" for i in range(n)]


def load_tokenizer(cfg: ModelCfg) -> Any:
    if is_random(cfg):
        from hallu.engine.standin import standin_tokenizer

        return standin_tokenizer(cfg)
    if is_tiny(cfg) or is_planted(cfg):
        from hallu.engine.tiny import build_tokenizer

        return build_tokenizer()
    from transformers import AutoTokenizer

    try:
        tok = AutoTokenizer.from_pretrained(
            source_path(cfg), revision=cfg.revision, cache_dir=cfg.cache_dir
        )
    except (OSError, ValueError) as err:
        raise UserError(_load_failure("tokenizer", cfg, err)) from None
    return tok


def load_shape(cfg: ModelCfg) -> ModelShape:
    if is_random(cfg):
        from hallu.engine.standin import arch_config

        return shape_from_config(arch_config(cfg))
    if is_planted(cfg):
        from hallu.engine import planted
        from hallu.engine.tiny import build_tokenizer

        spec = _planted_spec(cfg)
        return ModelShape(
            spec.n_layers,
            planted.D_MODEL,
            planted.N_HEADS,
            planted.N_HEADS,
            planted.D_MLP,
            len(build_tokenizer()),
        )
    if is_tiny(cfg):
        if cfg.tiny is None:
            raise UserError("model.name_or_path=tiny needs a model.tiny section; use model=tiny")
        from hallu.engine.tiny import build_tokenizer

        return tiny_shape(cfg.tiny, len(build_tokenizer()))
    from transformers import AutoConfig

    try:
        c = AutoConfig.from_pretrained(
            source_path(cfg), revision=cfg.revision, cache_dir=cfg.cache_dir
        )
    except (OSError, ValueError) as err:
        raise UserError(_load_failure("config", cfg, err)) from None
    return shape_from_config(c)


def load_model(
    cfg: ModelCfg, vocab_size: int, devices: Sequence[str] | None = None
) -> tuple[torch.nn.Module, str | None]:
    """Return the model in eval mode on its device, and the hub revision it came from.

    `devices` (default: `model.device` alone) spreads the decoder layers over several devices
    (hallu/engine/placement.py; the fast engine moves activations between them)."""
    LOADS[cfg.name_or_path] += 1
    device = resolve_device(cfg)
    dtype = resolve_dtype(cfg, device)
    devices = list(devices or [str(device)])
    if is_planted(cfg) or is_tiny(cfg) or is_random(cfg):
        model = _build_in_code(cfg, vocab_size, dtype).to(device=devices[0], dtype=dtype)
        if len(devices) > 1:
            place(model, split_layers(len(decoder_layers(model)), devices))
        return model.eval(), None
    return _load_pretrained(cfg, dtype, devices)


def _build_in_code(cfg: ModelCfg, vocab_size: int, dtype: torch.dtype) -> torch.nn.Module:
    if is_random(cfg):
        from hallu.engine.standin import build_random

        return build_random(cfg, dtype)
    if is_planted(cfg):
        from hallu.engine.planted import build_model as build_planted
        from hallu.engine.tiny import build_tokenizer

        return build_planted(_planted_spec(cfg), build_tokenizer())
    from hallu.engine.tiny import build_model

    assert cfg.tiny is not None
    try:
        return build_model(cfg.tiny, vocab_size)
    except ValueError as err:
        raise UserError(str(err)) from None


def _load_pretrained(
    cfg: ModelCfg, dtype: torch.dtype, devices: list[str]
) -> tuple[torch.nn.Module, str | None]:
    """From safetensors straight onto each layer's device (transformers' device_map, which
    needs accelerate: the `gpu` extra); without accelerate, into host memory and then moved."""
    from safetensors import SafetensorError
    from transformers import AutoConfig, AutoModelForCausalLM

    path = weights_path(cfg)
    direct = importlib.util.find_spec("accelerate") is not None
    try:
        config = AutoConfig.from_pretrained(path, revision=cfg.revision)
        placement = split_layers(shape_from_config(config).n_layers, devices)
        kwargs: dict[str, Any] = {"revision": cfg.revision, "dtype": dtype}
        if direct and len(devices) == 1:
            kwargs["device_map"] = {"": devices[0]}
        elif direct:
            from hallu.engine.weights import module_device_map

            kwargs["device_map"] = module_device_map(config, placement)
        model = AutoModelForCausalLM.from_pretrained(path, **kwargs)
    except SafetensorError as err:  # a truncated or damaged weight file: that file, not the id
        raise UserError(
            f"model.name_or_path={cfg.name_or_path}: a weight file is damaged ({err}). Fix: copy "
            "or download the weights again (for a hub id, delete its folder in the hub cache)"
        ) from None
    except (OSError, ValueError) as err:
        raise UserError(_load_failure("weights", cfg, err)) from None
    if not direct and any(not d.startswith("cpu") for d in devices):
        print(
            "hallu: accelerate is not installed, so the weights pass through host memory on "
            "their way to the GPU; install the gpu extra (pip install 'hallu[gpu]')",
            file=sys.stderr,
        )
    if len(devices) > 1:
        place(model, placement)  # moves nothing when device_map already put it there
    elif not direct:
        model.to(devices[0])
    revision = getattr(model.config, "_commit_hash", None) or cfg.revision
    return model.eval(), revision


def decoder_layers(model: torch.nn.Module) -> torch.nn.ModuleList:
    """The list of transformer blocks, whose inputs are the residual stream (resid_pre)."""
    for path in ("model.layers", "transformer.h", "gpt_neox.layers", "model.decoder.layers"):
        obj: Any = model
        for attr in path.split("."):
            obj = getattr(obj, attr, None)
            if obj is None:
                break
        if isinstance(obj, torch.nn.ModuleList):
            return obj
    raise UserError(
        f"model.name_or_path: cannot find the decoder layers of {type(model).__name__}; "
        "supported families keep them at model.layers, transformer.h or gpt_neox.layers"
    )


def _planted_spec(cfg: ModelCfg) -> Any:
    if cfg.planted is None:
        raise UserError(
            "model.name_or_path=planted needs a model.planted section; use model=planted"
        )
    return cfg.planted


def _load_failure(what: str, cfg: ModelCfg, err: Exception) -> str:
    first = str(err).strip().splitlines()[0] if str(err).strip() else type(err).__name__
    return (
        f"model.name_or_path={cfg.name_or_path}: could not load its {what} ({first}). "
        "Fix: check the id or path; for gated models (Llama-2) accept the licence on the hub and "
        "log in (HF_TOKEN), or set model.name_or_path to a local directory written by "
        "save_pretrained."
    )


def place(model: torch.nn.Module, placement: Placement) -> None:
    """Move a built model's modules to their devices and record the placement on the model
    (`hallu_placement`, which hallu.engine.adapters.Adapter reads). Here, not in
    placement.py, because it needs the Adapter, which itself reads placements."""
    ad = Adapter(model)
    if len(placement.layer_slot) != ad.n_layers:
        raise ValueError(
            f"placement for {len(placement.layer_slot)} layers, model has {ad.n_layers}"
        )
    for module in (ad.embed_tokens, ad.abs_pos, ad.rotary):
        if module is not None:
            module.to(placement.first)
    for layer, block in enumerate(ad.layers):
        block.to(placement.layer_device(layer))
    ad.norm.to(placement.last)
    ad.unembed.to(placement.last)
    model.hallu_placement = placement
