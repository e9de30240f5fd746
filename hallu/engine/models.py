"""Load a model and its tokenizer: the tiny in-code model, a hub id, or a local directory.

`load_shape` reads only the config (no weights) so that `mode=plan` and validation stay cheap.
`decoder_layers` is the one place that knows where each family keeps its transformer blocks.
"""

from __future__ import annotations

from collections import Counter
from typing import Any

import torch

from hallu.config import ModelCfg
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


def is_planted(cfg: ModelCfg) -> bool:
    """The hand-built model of hallu/engine/planted.py (the toy's tokenizer, weights in code)."""
    return cfg.name_or_path == "planted"


def source_path(cfg: ModelCfg) -> str:
    """Hub id or directory to load; `toy`: trained by hallu.engine.toy, shipped in hallu."""
    if cfg.name_or_path == "toy":
        from hallu.engine.toy import TOY_DIR

        return str(TOY_DIR)
    return cfg.name_or_path


def load_tokenizer(cfg: ModelCfg) -> Any:
    if is_tiny(cfg) or is_planted(cfg):
        from hallu.engine.tiny import build_tokenizer

        return build_tokenizer()
    from transformers import AutoTokenizer

    try:
        tok = AutoTokenizer.from_pretrained(source_path(cfg), revision=cfg.revision)
    except (OSError, ValueError) as err:
        raise UserError(_load_failure("tokenizer", cfg, err)) from None
    return tok


def load_shape(cfg: ModelCfg) -> ModelShape:
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
        c = AutoConfig.from_pretrained(source_path(cfg), revision=cfg.revision)
    except (OSError, ValueError) as err:
        raise UserError(_load_failure("config", cfg, err)) from None
    return shape_from_config(c)


def load_model(cfg: ModelCfg, vocab_size: int) -> tuple[torch.nn.Module, str | None]:
    """Return the model in eval mode on its device, and the hub revision it came from."""
    LOADS[cfg.name_or_path] += 1
    device = resolve_device(cfg)
    dtype = resolve_dtype(cfg, device)
    if is_planted(cfg):
        from hallu.engine.planted import build_model as build_planted
        from hallu.engine.tiny import build_tokenizer

        model = build_planted(_planted_spec(cfg), build_tokenizer())
        return model.to(device=device, dtype=dtype), None
    if is_tiny(cfg):
        from hallu.engine.tiny import build_model

        assert cfg.tiny is not None
        try:
            model = build_model(cfg.tiny, vocab_size)
        except ValueError as err:
            raise UserError(str(err)) from None
        return model.to(device=device, dtype=dtype), None
    from transformers import AutoModelForCausalLM

    try:
        model = AutoModelForCausalLM.from_pretrained(
            source_path(cfg), revision=cfg.revision, dtype=dtype
        )
    except (OSError, ValueError) as err:
        raise UserError(_load_failure("weights", cfg, err)) from None
    revision = getattr(model.config, "_commit_hash", None) or cfg.revision
    return model.to(device).eval(), revision


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
