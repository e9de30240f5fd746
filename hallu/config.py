"""Compose the Hydra config and validate it once, into typed pydantic models.

Everything downstream takes a `Config`, never a raw dict. Checks that need the model or the
tokenized prompts (layer range, positions, token lengths) live in `plan.py`/`prompts.py`, which
raise `UserError` naming the same keys used here.
"""

from __future__ import annotations

import hashlib
import json
import os
import re
from pathlib import Path
from typing import Any, Literal

from pydantic import BaseModel, ConfigDict, Field, ValidationError, field_validator, model_validator

from hallu.errors import UserError

CONF_DIR = Path(os.environ.get("HALLU_CONF_DIR", Path(__file__).resolve().parent.parent / "conf"))

Direction = Literal["restore_confidence", "induce_tentativeness"]
# Which condition's activations are patched into which condition's run, per direction.
DIRECTIONS: dict[str, tuple[str, str]] = {
    "restore_confidence": ("certain", "uncertain"),  # the study's Experiment 2A: source, target
    "induce_tentativeness": ("uncertain", "certain"),  # the study's Experiment 2B
}


class _Strict(BaseModel):
    model_config = ConfigDict(extra="forbid", frozen=True)


class TinySpec(_Strict):
    n_layers: int = Field(ge=1, le=64)
    d_model: int = Field(ge=8)
    n_heads: int = Field(ge=1)
    n_kv_heads: int = Field(ge=1)
    d_mlp: int = Field(ge=8)
    seed: int = 0


class ModelCfg(_Strict):
    name_or_path: str = Field(min_length=1)
    revision: str | None = None
    dtype: Literal["auto", "float32", "float16", "bfloat16"] = "auto"
    device: str = "auto"
    tiny: TinySpec | None = None

    @field_validator("device")
    @classmethod
    def _device(cls, v: str) -> str:
        if not re.fullmatch(r"auto|cpu|cuda(:\d+)?|mps", v):
            raise ValueError(f"'{v}' is not a device; use auto, cpu, cuda, cuda:N or mps")
        return v


class Columns(_Strict):
    pair_id: str = "pair_id"
    condition: str = "condition"
    text: str = "text"


class Conditions(_Strict):
    certain: str = "certain"
    uncertain: str = "uncertain"
    neutral: str = "neutral"


class PromptsCfg(_Strict):
    path: str
    format: Literal["auto", "csv", "jsonl"] = "auto"
    columns: Columns = Columns()
    conditions: Conditions = Conditions()
    chat_template: bool = True
    system_prompt: str | None = None


class MetricCfg(_Strict):
    name: Literal["logit_diff"] = "logit_diff"
    confident_tokens: list[str] = Field(min_length=1)
    tentative_tokens: list[str] = Field(min_length=1)
    # More metrics, one row each per cell: kl_to_clean = KL(clean run || this run) at the last
    # position (0 for the clean run itself); logprob_diff = teacher-forced log p(confident
    # continuation) - log p(tentative continuation) after the prompt (resid_pre only).
    extra: list[Literal["kl_to_clean", "logprob_diff"]] = []
    # The reference answers logprob_diff reads, as the assistant's text after the prompt; the
    # defaults are the toy model's two answers, also natural first words for a chat model.
    confident_continuation: str = " Yes, that is right."
    tentative_continuation: str = " Maybe, but I am not sure."


class WorkerResources(_Strict):
    """What Ray reserves for each worker actor: one GPU per model replica on GPU clusters."""

    num_cpus: float = Field(default=1, ge=0)
    num_gpus: float = Field(default=0, ge=0)


class ClusterCfg(_Strict):
    # local: in this process. ray_local: start Ray on this machine. ray: join a running cluster
    # (address, or $RAY_ADDRESS). lambda/runpod: submit the run as a Ray Job (jobs/, infra/).
    kind: Literal["local", "ray_local", "ray", "lambda", "runpod"] = "local"
    # ray: a Ray address (auto, HOST:6379); lambda/runpod: the job server (dashboard) URL.
    address: str | None = None
    num_workers: int = Field(default=1, ge=1, le=1024)
    resources: WorkerResources = WorkerResources()
    shards_per_worker: int = Field(default=2, ge=1, le=2)  # in flight per worker (ray.wait)
    max_shard_failures: int = Field(default=3, ge=1)  # then the run stops, naming the shard
    max_worker_restarts: int = Field(default=3, ge=0)  # per actor, after its process dies


class StorageCfg(_Strict):
    kind: Literal["local", "s3"] = "local"
    root: str = "runs"
    # s3 (boto3; credentials from the standard AWS chain, never from here):
    bucket: str | None = None
    prefix: str = "hallu"
    region: str | None = None
    endpoint_url: str | None = None  # S3-compatible stores (MinIO, R2, moto): http(s)://host:port
    # Attempts per request on transient errors (timeouts, 5xx, throttling), with backoff.
    max_attempts: int = Field(default=8, ge=1, le=20)
    # How long a store may stay unreachable (connection refused, 5xx, throttling) before the run
    # stops; requests are retried with backoff meanwhile and the run goes on when it is back.
    retry_seconds: float = Field(default=300, ge=0)

    @field_validator("endpoint_url")
    @classmethod
    def _has_scheme(cls, v: str | None) -> str | None:
        if v is not None and not re.match(r"^https?://[^/\s]+", v):
            raise ValueError(f"{v!r} has no http:// or https:// scheme; use e.g. http://{v}")
        return v


POSITIONS_HELP = "'all', 'last:K' (the last K tokens, aligned from the end) or a list of ints"


class SweepCfg(_Strict):
    name: str = "default"
    # Which experiments the run does; each writes its own rows and figures into the run.
    experiments: list[Literal["patching", "behavior"]] = Field(default=["patching"], min_length=1)
    # resid_pre: the residual stream entering a layer; attn_out / mlp_out: a layer's attention or
    # MLP output; head: one attention head's output (per layer x head x position).
    component: Literal["resid_pre", "attn_out", "mlp_out", "head"] = "resid_pre"
    # Consecutive layers patched together (ROME's causal tracing); attn_out and mlp_out only.
    window: int = Field(default=1, ge=1, le=1024)
    # fast: hallu.engine.fast (reuses the target run; same numbers); hooks: one forward per batch of
    # cells through the whole model (resid_pre only); auto: fast where the family has an adapter.
    engine: Literal["auto", "fast", "hooks"] = "auto"
    # Memory the fast engine may use for one batch, in GiB; null: half the free GPU memory, or 2.
    memory_gb: float | None = Field(default=None, gt=0)
    # Attribution patching screen: estimate every cell from one forward + backward pass per pair,
    # patch only the K largest exactly (others get patched = NaN); resid_pre only. null: off.
    screen_top_k: int | None = Field(default=None, ge=1)
    layers: Literal["all"] | list[int] = "all"
    positions: str | list[int] = "all"
    pairs: Literal["all"] | int | list[str] = "all"
    directions: list[Direction] = Field(default=list(DIRECTIONS), min_length=1)
    batch_size: int = Field(default=64, ge=1, le=65536)
    pairs_per_shard: int = Field(default=4, ge=1)
    # Control patches run beside the experiment (hallu/run/controls.py); [] runs none.
    controls: list[Literal["same_class", "random_source", "norm_matched"]] = []
    # Measure how much the metric moves with batching, padding and precision (hallu/run/noise.py).
    noise_floor: bool = False

    @field_validator("positions")
    @classmethod
    def _positions(cls, v: str | list[int]) -> str | list[int]:
        if isinstance(v, str) and not re.fullmatch(r"all|last:[1-9]\d*", v):
            raise ValueError(f"'{v}' is not a position spec; use {POSITIONS_HELP}")
        if isinstance(v, list) and (not v or len(set(v)) != len(v)):
            raise ValueError("give a non-empty list of distinct positions")
        return v

    @field_validator("layers")
    @classmethod
    def _layers(cls, v: str | list[int]) -> str | list[int]:
        if isinstance(v, list) and (not v or len(set(v)) != len(v)):
            raise ValueError("give 'all' or a non-empty list of distinct layer indices")
        return v

    @field_validator("pairs")
    @classmethod
    def _pairs(cls, v: str | int | list[str]) -> str | int | list[str]:
        if isinstance(v, int) and v < 1:
            raise ValueError(f"pairs={v}: give 'all', a count >= 1, or a list of pair ids")
        if isinstance(v, list) and not v:
            raise ValueError("give 'all', a count >= 1, or a non-empty list of pair ids")
        return v

    @field_validator("controls")
    @classmethod
    def _controls(cls, v: list[str]) -> list[str]:
        if len(set(v)) != len(v):
            raise ValueError(f"controls {v} repeat an entry")
        return v

    @model_validator(mode="after")
    def _window(self) -> SweepCfg:
        if self.window > 1 and self.component not in ("attn_out", "mlp_out"):
            raise ValueError(
                f"sweep.window={self.window} applies to sweep.component=attn_out or mlp_out, "
                f"not {self.component}; set sweep.window=1 or change the component"
            )
        if self.controls and self.component != "resid_pre":
            raise ValueError(
                f"sweep.controls={self.controls} patch resid_pre only, not {self.component}; "
                "set sweep.controls=[] or sweep.component=resid_pre"
            )
        if self.screen_top_k is not None and self.component != "resid_pre":
            raise ValueError(
                f"sweep.screen_top_k={self.screen_top_k} screens resid_pre cells only, not "
                f"{self.component}; set sweep.screen_top_k=null or sweep.component=resid_pre"
            )
        return self

    @field_validator("directions")
    @classmethod
    def _directions(cls, v: list[str]) -> list[str]:
        if len(set(v)) != len(v):
            raise ValueError(f"directions {v} repeat an entry")
        return v


class BehaviorCfg(_Strict):
    """Experiment 1 (behaviour): generate answers and classify their style (see behavior.py)."""

    conditions: list[Literal["certain", "uncertain", "neutral"]] = Field(
        default=["certain", "uncertain", "neutral"], min_length=1
    )
    decoding: list[Literal["greedy", "sampled"]] = Field(
        default=["greedy", "sampled"], min_length=1
    )
    temperature: float = Field(default=1.0, gt=0, le=5)  # for sampled decoding only
    n_samples: int = Field(default=4, ge=1, le=1000)  # sampled answers per prompt
    max_new_tokens: int = Field(default=64, ge=1, le=4096)
    batch_size: int = Field(default=16, ge=1, le=4096)  # prompts generated together
    prompts_per_chunk: int = Field(default=16, ge=1)  # prompts per stored Parquet file
    judge: ModelCfg | None = None  # optional judge model; null = lexicon classifier only
    judge_max_new_tokens: int = Field(default=8, ge=1, le=256)

    @field_validator("conditions", "decoding")
    @classmethod
    def _distinct(cls, v: list[str]) -> list[str]:
        if len(set(v)) != len(v):
            raise ValueError(f"{v} repeats an entry")
        return v


class Config(_Strict):
    mode: Literal["run", "plan"] = "run"
    run_id: str | None = Field(default=None, pattern=r"^[A-Za-z0-9][A-Za-z0-9._-]{0,127}$")
    seed: int = 0
    model: ModelCfg
    prompts: PromptsCfg
    metric: MetricCfg
    cluster: ClusterCfg = ClusterCfg()
    storage: StorageCfg = StorageCfg()
    sweep: SweepCfg = SweepCfg()
    behavior: BehaviorCfg = BehaviorCfg()

    def study_hash(self) -> str:
        """Hash of everything that determines the results (not mode, run id or where they go)."""
        d = self.model_dump(exclude={"mode", "run_id", "cluster", "storage"})
        return hashlib.sha256(json.dumps(d, sort_keys=True).encode()).hexdigest()[:12]


# Hints appended to pydantic's message for the keys users most often get wrong.
_HINTS = {
    "model": "choose model=tiny|llama2_7b_chat|llama2_13b_chat|llama2_70b_chat, "
    "or set model.name_or_path=<hub id or local directory>",
    "sweep.positions": f"use {POSITIONS_HELP}",
    "sweep.layers": "use 'all' or a list like [0,5,-1]",
    "sweep.directions": f"use a list from {list(DIRECTIONS)}",
    "sweep.controls": "use a list from [same_class, random_source, norm_matched], or []",
    "mode": "use mode=run or mode=plan",
    "behavior.conditions": "use a list from [certain, uncertain, neutral]",
    "behavior.decoding": "use a list from [greedy, sampled]",
    "sweep.experiments": "use a list from [patching, behavior]",
    "run_id": "use letters, digits, '.', '_' or '-' (at most 128)",
    "cluster.kind": "choose cluster=local|ray_local|ray|lambda|runpod",
    "storage.kind": "choose storage=local|s3",
}


def _format_validation_error(err: ValidationError) -> str:
    lines = []
    for e in err.errors():
        key = ".".join(str(p) for p in e["loc"] if not str(p).startswith(("literal[", "list[")))
        key = re.sub(r"\.(str|int|function-after\[.*?\])", "", key)
        if e["type"] == "extra_forbidden":
            parent, _, leaf = key.rpartition(".")
            lines.append(
                f"unknown config key '{key}': remove it or check its spelling"
                + (f" (see conf/ for the keys of '{parent}')" if parent else "")
            )
            continue
        given = e.get("input")
        hint = next((h for k, h in _HINTS.items() if key == k or key.startswith(k + ".")), "")
        msg = f"config key '{key}': {e['msg']} (got {given!r})"
        lines.append(msg + (f"; {hint}" if hint else ""))
    # pydantic reports each union branch separately; keep one line per key.
    seen, unique = set(), []
    for line in lines:
        head = line.split(":")[0]
        if head not in seen:
            seen.add(head)
            unique.append(line)
    return "invalid configuration:\n  " + "\n  ".join(unique)


def validate(raw: dict[str, Any]) -> Config:
    """Turn a composed config dict into a `Config`, or raise one `UserError` naming the keys."""
    try:
        return Config.model_validate(raw)
    except ValidationError as err:
        raise UserError(_format_validation_error(err)) from None


def compose(overrides: list[str]) -> Config:
    """Compose conf/config.yaml with command-line overrides (Hydra syntax) and validate it."""
    from hydra import compose as hydra_compose
    from hydra import initialize_config_dir
    from hydra.errors import HydraException
    from omegaconf import OmegaConf
    from omegaconf.errors import OmegaConfBaseException

    try:
        with initialize_config_dir(config_dir=str(CONF_DIR), version_base=None):
            cfg = hydra_compose("config", overrides=overrides)
        raw = OmegaConf.to_container(cfg, resolve=True, throw_on_missing=True)
    except (HydraException, OmegaConfBaseException) as err:
        raise UserError(_format_hydra_error(err)) from None
    return validate(raw)  # type: ignore[arg-type]


def _format_hydra_error(err: Exception) -> str:
    text = str(err).split("\nConfig search path:")[0].strip()
    m = re.search(r"Could not find '(\w+)/([^']+)'", text)
    if m:
        group, option = m.groups()
        options = sorted(p.stem for p in (CONF_DIR / group).glob("*.yaml"))
        fix = f"choose one of {', '.join(options)}"
        if group == "model":
            fix += ", or keep a preset and set model.name_or_path=<hub id or local directory>"
        return f"{group}={option}: there is no conf/{group}/{option}.yaml; {fix}"
    m = re.search(r"Could not override '([^']+)'", text)
    if m:
        key = m.group(1)
        return f"unknown config key '{key}': check its spelling against conf/ (Hydra: {text})"
    if "Missing mandatory value" in text:
        key = getattr(err, "full_key", None) or text.split(":")[-1].strip()
        return f"config key '{key}' has no value: set {key}=..."
    return f"could not compose the config: {text}"
