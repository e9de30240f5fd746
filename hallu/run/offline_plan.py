"""`mode=plan` without a download: shape from the preset, token counts from the tokenizer when it
is on this machine (else estimated), then the estimate (hallu/run/estimate.py) as text. No torch
unless the tokenizer is local (tiny, toy, planted, a directory, or the Hugging Face cache).
"""

from __future__ import annotations

import os
from pathlib import Path
from typing import Any

from hallu.config import Config
from hallu.errors import UserError
from hallu.run.estimate import GB, Memory, estimate
from hallu.run.gpus import ASSUMED_DECODE_BANDWIDTH

# Llama-2's SentencePiece averages ~1.35 tokens per English word; its chat template adds
# "<s>[INST] ... [/INST]" (about 10 tokens) and a system prompt's <<SYS>> block about 12 more.
# A preset with a shipped chat template counts its own (template_tokens).
TOKENS_PER_WORD = 1.35
TEMPLATE_TOKENS = 10


def tokenizer_is_local(cfg: Config) -> bool:
    """True when the tokenizer and model config load without the network."""
    name = cfg.model.name_or_path
    if cfg.model.weights == "random" or name in ("tiny", "toy", "planted") or Path(name).is_dir():
        return True
    try:
        from huggingface_hub import try_to_load_from_cache
    except ImportError:
        return False
    files = ("tokenizer_config.json", "config.json")
    rev = cfg.model.revision
    return all(isinstance(try_to_load_from_cache(name, f, revision=rev), str) for f in files)


def estimated_lengths(cfg: Config) -> dict[str, dict[str, int]]:
    """Token counts from word counts; both prompts of a pair get the same count (one estimate)."""
    from hallu.prompts import load_pairs, select_pairs

    pairs = select_pairs(load_pairs(cfg.prompts), cfg.sweep)
    extra = TEMPLATE_TOKENS if cfg.prompts.chat_template else 1
    if cfg.prompts.chat_template and cfg.model.chat_template:
        extra = template_tokens(cfg.model.chat_template)
    if cfg.prompts.system_prompt:
        extra += 12 + round(TOKENS_PER_WORD * len(cfg.prompts.system_prompt.split()))
    out = {}
    for p in pairs:
        n = max(round(TOKENS_PER_WORD * len(t.split())) for t in p.texts.values()) + extra
        out[p.pair_id] = {c: n for c in p.texts}
    return out


def template_tokens(name: str) -> int:
    """Tokens a preset's shipped chat template (hallu/data/chat_templates) adds around one user
    message: each special token one, the fixed text as words at TOKENS_PER_WORD, runs of
    newlines one each (no torch, no tokenizer)."""
    import json
    import re
    from importlib import resources

    from jinja2.sandbox import ImmutableSandboxedEnvironment

    t = json.loads(
        (resources.files("hallu") / "data" / "chat_templates" / f"{name}.json").read_text()
    )
    marker = "\x00"
    text = ImmutableSandboxedEnvironment().from_string(t["chat_template"]).render(
        messages=[{"role": "user", "content": marker}], add_generation_prompt=True,
        bos_token=t["bos_token"] or "", eos_token=t["eos_token"],
    )  # fmt: skip
    text = text.replace(marker, " ")
    specials = sum(text.count(tok) for tok in t["special_tokens"])
    for tok in t["special_tokens"]:
        text = text.replace(tok, " ")
    words = len(re.findall(r"\w+|[^\w\s]+", text))
    return specials + round(TOKENS_PER_WORD * words) + len(re.findall(r"\n+", text))


def offline_shape(cfg: Config) -> Any:
    from hallu.shape import ModelShape

    s = cfg.model.shape
    if s is None:
        raise UserError(
            f"mode=plan: model {cfg.model.name_or_path} is not on this machine and its config has "
            "no model.shape; download it once (huggingface-cli download NAME), or add model.shape="
            "{n_layers:..,d_model:..,n_heads:..,n_kv_heads:..,d_mlp:..,vocab_size:..,context:..}"
        )
    return ModelShape(
        s.n_layers,
        s.d_model,
        s.n_heads,
        s.n_kv_heads,
        s.d_mlp,
        s.vocab_size,
        s.context,
        s.head_dim,
    )


def format_estimate(cfg: Config, est: dict[str, Any]) -> list[str]:
    lines = []
    if "answers" in est:
        b = cfg.behavior
        lines += [
            "# behaviour plan",
            f"behavior: {est['answers']} answers ({len(b.conditions)} condition(s); decoding "
            f"{', '.join(b.decoding)}; up to {b.max_new_tokens} new tokens), about "
            f"{est['flops_behavior']:.2e} FLOP",
        ]
    lines.append(f"# estimate (prompt lengths {est['lengths']})")
    if "cells" in est:
        exp = est["cells"] - est["control_cells"]
        ratio = est["flops_naive"] / max(est["flops_engine"], 1.0)
        lines += [
            f"patching: {est['cells']:,} cells ({exp:,} experiment + {est['control_cells']:,} "
            "control)",
            f"patching FLOP: naive {est['flops_naive']:.2e}, with the engine "
            f"{est['flops_engine']:.2e} ({ratio:.1f}x fewer)",
        ]
    m: Memory = est["memory"]
    lines.append(
        f"memory per replica: weights {_gb(m.weights)} + traces {_gb(m.traces)} + batch "
        f"{_gb(m.batch)} (or generation KV cache {_gb(m.generation)}, or the largest other "
        f"stage {_gb(m.stages)}) + CUDA context 1.5 GB = "
        f"{_gb(m.total)}"
    )
    lines += stage_lines(est)
    if "gpu" not in est:
        lines.append("cost (and time on a GPU): set cluster.gpu=a100_40gb|a100_80gb|h100|h200|l40s")
        return lines
    g, per, n = est["gpu"], est["gpus_per_replica"], est["replicas"]
    lines += [
        f"fits: {per} x {g.label} per replica ({per * g.memory_gb:.0f} GB), {n} replica(s)",
        f"MFU: {est['mfu']:.2f} ({est['mfu_source']}); decoding by the bytes each step reads "
        f"(weights + KV cache) at {g.bandwidth_gbs:,.0f} GB/s x {ASSUMED_DECODE_BANDWIDTH} "
        "(assumed share of the datasheet bandwidth), or its FLOP at peak x MFU where longer",
        f"time: {hours_text(est['hours'])} wall on {n} x {per} x {g.label} (compute at "
        f"{g.peak_tflops:.0f} TFLOP/s peak x MFU, plus {est['load_s'] / 60:.1f} min to load the "
        "weights at 1 GB/s)",
        f"cost: ${est['cost']:,.{2 if est['cost'] >= 1 else 4}f} ({n * per} GPUs x "
        f"{hours_text(est['hours'])} x "
        f"${est['price']:.2f}/GPU-hour, {est['price_source']})",
    ]
    return lines


def stage_lines(est: dict[str, Any]) -> list[str]:
    """One line per stage (hallu/run/stage_cost.py) and the total: work, FLOP, memory, time."""
    timed = est.get("stage_seconds")
    where = ""
    if "gpu" in est:
        where = f" on {est['replicas']} x {est['gpus_per_replica']} x {est['gpu'].label}"
    elif timed is not None:
        r = est["rates"]
        where = (f" on this CPU: {r.layer_call_s * 1e3:.2f} ms per layer call + FLOP at "
                 f"{r.flops_per_s / 1e9:.2f} GFLOP/s, {r.where}")  # fmt: skip
    head = "# stages (forward calls, generated tokens, FLOP, memory besides weights, time"
    lines = [f"{head}{where})"]
    if est.get("measured"):
        when = est["measured_at"]
        lines.append(f"measured: {', '.join(est['measured'])} and the load time, by the run "
                     f"finished {when} on this card and model (calibration file)")  # fmt: skip
    for s in est["stages"]:
        units = f" ({s.units} units)" if s.units else ""
        gen = f", {s.generated:,} generated tokens" if s.generated else ""
        time = f", {hours_text(timed[s.name] / 3600)}" if timed is not None else ""
        lines.append(f"{s.name}{units}: {s.calls:,} calls{gen}, {s.flops:.2e} FLOP, "
                     f"{_gb(s.memory)}{time}{_other_dtypes(s, est)}")  # fmt: skip
    total = f"total: {est['flops_total']:.2e} FLOP"
    if timed is not None:
        total += (f", {hours_text(est['seconds'] / 3600)} (with {est['load_s']:.1f} s to load the "
                  "weights)")  # fmt: skip
    if "cost" in est:
        total += f", ${est['cost']:,.{2 if est['cost'] >= 1 else 4}f}"
    return [*lines, total]


def _other_dtypes(s: Any, est: dict[str, Any]) -> str:
    """What the noise floor's other dtypes hold (hallu/run/stage_cost.py) and whether they fit."""
    if not s.other_dtypes:
        return ""
    text = f" (other dtypes made from the replica in memory, no load: +{_gb(s.other_dtypes)}"
    if "other_dtypes_fit" not in est:
        return f"{text} beside its weights)"
    if est["other_dtypes_fit"]:
        return f"{text} beside its weights, fits)"
    card = f"{est['gpus_per_replica']} x {est['gpu'].label}"
    return f"{text} beside its weights, more than {card} holds: they are recorded as errors)"


def hours_text(h: float) -> str:
    if h >= 1:
        return f"{h:.2f} h"
    return f"{h * 60:.1f} min" if h * 60 >= 1 else f"{h * 3600:.1f} s"


def _gb(n: float) -> str:
    return f"{n / GB:.2f} GB" if n >= 0.01 * GB else f"{n / 1e6:.2f} MB"


def offline(cfg: Config) -> tuple[Any, dict[str, dict[str, int]], Any, Any]:
    """(shape, token counts, token ids or None, the unrelated prompt's ids for n tokens or None)
    for planning, with no network."""
    if tokenizer_is_local(cfg):
        from hallu.run.prepare import prepare

        prep = prepare(cfg)
        ids = prep.token_ids
        if "behavior" in cfg.sweep.experiments:  # validates its conditions, as a run would
            from hallu.behavior.schema import plan_chunks

            plan_chunks(cfg, {pid: set(c) for pid, c in ids.items()})
        lengths = {p: {c: len(i) for c, i in d.items()} for p, d in ids.items()}
        from hallu.run.plan import unrelated_ids

        return prep.shape, lengths, ids, lambda n: unrelated_ids(prep.tokenizer, cfg.prompts, n)
    os.environ["HF_HUB_OFFLINE"] = "1"  # nothing below may wait on the hub
    return offline_shape(cfg), estimated_lengths(cfg), None, None


def plan_and_estimate(cfg: Config) -> tuple[Any, dict[str, Any]]:
    """(the patching Plan or None, the estimate dict) for `cfg`."""
    from hallu.run.plan import make_plan

    shape, lengths, tokens, unrelated = offline(cfg)
    plan = None
    if "patching" in cfg.sweep.experiments:
        plan = make_plan(cfg.sweep, shape, lengths, cfg.model.name_or_path)
    return plan, estimate(cfg, shape, lengths, plan, tokens, unrelated)
