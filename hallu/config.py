"""Compose the Hydra config and validate it once, into typed pydantic models.

Everything downstream takes a `Config`, never a raw dict. Checks that need the model or the
tokenized prompts (layer range, positions, token lengths) live in `plan.py`/`prompts.py`, which
raise `UserError` naming the same keys used here.
"""

from __future__ import annotations

import hashlib
import json
import re
from typing import Any, Literal

from pydantic import (
    BaseModel,
    ConfigDict,
    Field,
    ValidationError,
    ValidationInfo,
    field_validator,
    model_validator,
)

# Where configs come from is hallu/conf_paths.py; these names are re-exported from here.
from hallu.conf_paths import (  # noqa: F401
    CONF_DIR,
    CONFIG_DIR_ENV,
    config_dirs,
    group_options,
    user_config_dir,
)
from hallu.errors import UserError
from hallu.suggest import add_group, closest, did_you_mean, hydra_value

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


class PlantedSpec(_Strict):
    """The hand-built model of hallu/engine/planted.py: where its two heads sit, and the gains.

    `layer`/`head`: the named head that copies the marker's sign to the last position;
    `late_layer`/`late_head`: the head that copies the marker's pathway gain there later.
    """

    n_layers: int = Field(default=6, ge=2, le=64)
    layer: int = Field(default=2, ge=0)
    head: int = Field(default=1, ge=0, le=3)
    late_layer: int = Field(default=4, ge=1)
    late_head: int = Field(default=3, ge=0, le=3)
    # A gain <= 0 is a legitimate construction: a pathway that is absent (0) or reversed (< 0).
    certain_gain: float = Field(default=1.0, ge=-100, le=100)
    uncertain_gain: float = Field(default=1.0, ge=-100, le=100)

    @model_validator(mode="after")
    def _layers(self) -> PlantedSpec:
        if not self.layer < self.late_layer < self.n_layers:
            raise ValueError(
                f"model.planted needs layer < late_layer < n_layers, got layer={self.layer}, "
                f"late_layer={self.late_layer}, n_layers={self.n_layers}"
            )
        return self


class ShapeSpec(_Strict):
    """A preset's model sizes (from its config.json), so `mode=plan` needs no download."""

    n_layers: int = Field(ge=1)
    d_model: int = Field(ge=1)
    n_heads: int = Field(ge=1)
    n_kv_heads: int = Field(ge=1)
    d_mlp: int = Field(ge=1)
    vocab_size: int = Field(ge=1)
    context: int = Field(ge=1)  # max_position_embeddings
    head_dim: int | None = Field(default=None, ge=1)  # None: d_model / n_heads


class ModelCfg(_Strict):
    name_or_path: str = Field(min_length=1)
    revision: str | None = None
    dtype: Literal["auto", "float32", "float16", "bfloat16"] = "auto"
    device: str = "auto"
    tiny: TinySpec | None = None
    planted: PlantedSpec | None = None
    shape: ShapeSpec | None = None  # for planning offline; the loaded model's config wins
    # Node-local directory for hub downloads (one download per node, under a file lock;
    # hallu/engine/weights.py). None: the hub's default cache, and no lock.
    cache_dir: str | None = None
    # The architecture (hallu/data/arch/NAME.json, the hub's config.json) and chat template
    # (hallu/data/chat_templates/NAME.json) shipped for a preset: no download to plan or rehearse.
    arch: str | None = None
    chat_template: str | None = None
    # random: a rehearsal (hallu/engine/standin.py): the architecture with random weights and a
    # stand-in tokenizer; n_layers keeps the first N layers, d_model narrows it (heads of 16).
    weights: Literal["pretrained", "random"] = "pretrained"
    n_layers: int | None = Field(default=None, ge=1)
    d_model: int | None = Field(default=None, ge=16)
    # The metric's tokens as this tokenizer spells an answer's first word (" yes" -> "Yes" where
    # the template starts the answer on a new line); tokens not listed are used as they are.
    token_spelling: dict[str, str] = {}

    @field_validator("weights")
    @classmethod
    def _needs_arch(cls, v: str, info: ValidationInfo) -> str:
        if v == "random" and info.data.get("arch") is None:
            raise ValueError(
                "model.weights=random needs model.arch (an architecture shipped in hallu/data/"
                "arch); use a preset that names one, e.g. model=llama2_13b_chat"
            )
        return v

    @field_validator("n_layers", "d_model")
    @classmethod
    def _shrinks_random(cls, v: int | None, info: ValidationInfo) -> int | None:
        if v is not None and info.data.get("weights") != "random":
            raise ValueError(f"model.{info.field_name} shrinks a random-weights model only; "
                             "add model.weights=random")  # fmt: skip
        if info.field_name == "d_model" and v is not None and v % 16:
            raise ValueError(f"model.d_model={v} must be a multiple of 16 (the head size)")
        return v

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
    # Arithmetic of the logit difference: float32 (exact for any model dtype), or bfloat16, the
    # seed's (logits rounded to bf16 and subtracted there; +protocol=seed).
    dtype: Literal["float32", "bfloat16"] = "float32"
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
    # (address, or $RAY_ADDRESS). lambda/runpod: submit the run as a Ray Job (hallu jobs, infra/).
    kind: Literal["local", "ray_local", "ray", "lambda", "runpod"] = "local"
    # ray: a Ray address (auto, HOST:6379); lambda/runpod: the job server (dashboard) URL.
    address: str | None = None
    num_workers: int = Field(default=1, ge=1, le=1024)
    resources: WorkerResources = WorkerResources()
    shards_per_worker: int = Field(default=2, ge=1, le=2)  # in flight per worker (ray.wait)
    max_shard_failures: int = Field(default=3, ge=1)  # then the run stops, naming the shard
    max_worker_restarts: int = Field(default=3, ge=0)  # per actor, after its process dies
    # For the plan's time, memory and cost (hallu/run/gpus.py): the GPU kind each worker gets,
    # its price per GPU-hour (null: the table's default) and the fraction of peak FLOP/s the
    # engine reaches (null: measured by hallu.bench --gpu on that kind, else assumed).
    gpu: Literal["a100_40gb", "a100_80gb", "h100", "h200", "l40s"] | None = None
    price_per_gpu_hour: float | None = Field(default=None, ge=0)
    mfu: float | None = Field(default=None, gt=0, le=1)
    # Limits on the whole run (every session of one run_id): once a warm-up of units is stored,
    # a spend or a projection past either stops dispatching (hallu/run/progress.py).
    budget_usd: float | None = Field(default=None, gt=0)
    max_hours: float | None = Field(default=None, gt=0)


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


class MechanismCfg(_Strict):
    """+sweep=mechanism (hallu/mechanism/, docs/mechanism.md): directions, steering,
    patch-and-generate. Sites are tokens of each prompt: 'marker' (the marker's last token; for
    the unmarked prompt the token before the marker's slot) and 'last' (the last prompt token)."""

    layers: Literal["all"] | list[int] = "all"  # layers whose resid_pre is captured
    sites: list[Literal["marker", "last"]] = Field(default=["marker", "last"], min_length=1)
    # Steering: add alpha x (certain - neutral direction) at these layers and one site.
    steer_layers: list[int] = Field(default=[-1], min_length=1)
    steer_site: Literal["marker", "last"] = "last"
    alphas: list[float] = Field(default=[-2.0, -1.0, -0.5, 0.0, 0.5, 1.0, 2.0], min_length=2)
    n_random: int = Field(default=3, ge=0, le=100)  # random directions of the same norm
    # Patch-and-generate: the pair's source resid_pre written into the target at these layers.
    patch_layers: list[int] = Field(default=[0, 1, 2, 3], min_length=1)
    patch_site: Literal["marker", "last"] = "last"
    n_samples: int = Field(default=4, ge=1, le=1000)  # sampled answers per prompt and setting
    temperature: float = Field(default=1.0, gt=0, le=5)
    max_new_tokens: int = Field(default=8, ge=1, le=4096)
    claims_per_shard: int = Field(default=16, ge=1)
    # Per-head patching and path patching (head -> logits) at the last position, every head.
    heads: bool = True
    top_heads: int = Field(default=5, ge=1)  # heads the report lists, by total effect


class SweepCfg(_Strict):
    name: str = "default"
    # Which experiments the run does; each writes its own rows and figures into the run.
    experiments: list[Literal["patching", "behavior", "mechanism"]] = Field(
        default=["patching"], min_length=1
    )
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
    controls: list[Literal["same_class", "random_source", "norm_matched", "neutral_source"]] = []
    # Measure how much the metric moves with batching, padding and precision (hallu/run/noise.py).
    noise_floor: bool = False
    mechanism: MechanismCfg = MechanismCfg()

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


class AnalysisCfg(_Strict):
    """How hallu.report judges the numbers (docs/analysis.md)."""

    # Smallest 2A - 2B difference in band-mean restoration that counts as an asymmetry.
    equivalence_margin: float = Field(default=0.05, gt=0, le=10)
    # Fewer pairs (claims, for behaviour) used than this: the verdict is inconclusive.
    min_pairs: int = Field(default=10, ge=2)
    # Premise: the share of pairs excluded (wrong sign or inside the floor) may not exceed this.
    max_excluded_share: float = Field(default=0.2, ge=0, le=1)
    # Shared locus: a shift of this many layers or more in a band edge counts as different.
    locus_margin_layers: int = Field(default=2, ge=1)


class Config(_Strict):
    mode: Literal["run", "plan"] = "run"
    # A label for a bundle of choices (hallu/conf/protocol/): `seed` = the source study's.
    # The report derives the limits it names from the resolved values, not from this label.
    protocol: Literal["default", "seed"] = "default"
    run_id: str | None = Field(default=None, pattern=r"^[A-Za-z0-9][A-Za-z0-9._-]{0,127}$")
    seed: int = 0
    verbose: bool = False  # library logs and progress bars (transformers, hub, Ray)
    model: ModelCfg
    prompts: PromptsCfg
    metric: MetricCfg
    cluster: ClusterCfg = ClusterCfg()
    storage: StorageCfg = StorageCfg()
    sweep: SweepCfg = SweepCfg()
    behavior: BehaviorCfg = BehaviorCfg()
    analysis: AnalysisCfg = AnalysisCfg()

    def study_hash(self) -> str:
        """Hash of everything that determines the results (not mode, run id or where they go)."""
        # model.shape only describes the weights, which are hashed by name and revision.
        skip = ("mode", "run_id", "verbose", "cluster", "storage", "analysis")
        d = self.model_dump(exclude={**dict.fromkeys(skip, True), "model": {"shape"}})
        return hashlib.sha256(json.dumps(d, sort_keys=True).encode()).hexdigest()[:12]


# Hints appended to pydantic's message for the keys users most often get wrong.
_HINTS = {
    "model": "choose model=tiny|toy|planted|llama2_13b_chat|llama3_8b_instruct|"
    "mistral_7b_instruct|qwen25_7b_instruct|gemma2_9b_it (hallu/conf/model lists all), "
    "or set model.name_or_path=<hub id or local directory>",
    "sweep.positions": f"use {POSITIONS_HELP}",
    "sweep.layers": "use 'all' or a list like [0,5,-1]",
    "sweep.directions": f"use a list from {list(DIRECTIONS)}",
    "sweep.controls": "use a list from [same_class, random_source, norm_matched, "
    "neutral_source], or []",
    "mode": "use mode=run or mode=plan",
    "behavior.conditions": "use a list from [certain, uncertain, neutral]",
    "behavior.decoding": "use a list from [greedy, sampled]",
    "sweep.experiments": "use a list from [patching, behavior, mechanism]",
    "run_id": "use letters, digits, '.', '_' or '-' (at most 128)",
    "cluster.kind": "choose cluster=local|ray_local|ray|lambda|runpod",
    "storage.kind": "choose storage=local|s3",
}


# Spellings users bring from other tools, for values that are a fixed list.
_ALIASES = {"fp16": "float16", "half": "float16", "fp32": "float32", "bf16": "bfloat16"}


def _format_validation_error(err: ValidationError, overrides: list[str] | None = None) -> str:
    lines = []
    for e in err.errors():
        key = ".".join(str(p) for p in e["loc"] if not str(p).startswith(("literal[", "list[")))
        key = re.sub(r"\.(str|int|function-after\[.*?\])", "", key)
        if e["type"] == "extra_forbidden":
            given = e.get("input")
            hint = did_you_mean(key, hydra_value(given), overrides=overrides)
            lines.append(
                f"unknown config key '{key}'" + (hint or ": remove it or check its spelling")
            )
            continue
        given = e.get("input")
        # The 'model' hint is for a missing model section, not for a bad value inside it.
        hint = next(
            (
                h
                for k, h in _HINTS.items()
                if key == k or (k != "model" and key.startswith(k + "."))
            ),
            "",
        )
        msg = f"config key '{key}': {e['msg']} (got {given!r})"
        if e["type"] == "literal_error" and isinstance(given, str):
            allowed = re.findall(r"'([^']*)'", str(e.get("ctx", {}).get("expected", "")))
            near = _ALIASES.get(given.lower()) or closest(given, allowed)
            hint = f"did you mean {key}={near}?" if near in allowed else hint
        lines.append(msg + (f"; {hint}" if hint and hint not in msg else ""))
    # pydantic reports each union branch separately; keep one line per key.
    seen, unique = set(), []
    for line in lines:
        head = line.split(":")[0]
        if head not in seen:
            seen.add(head)
            unique.append(line)
    return "invalid configuration:\n  " + "\n  ".join(unique)


def validate(raw: dict[str, Any], overrides: list[str] | None = None) -> Config:
    """Turn a composed config dict into a `Config`, or raise one `UserError` naming the keys.

    `overrides`: the command line it came from, so a suggested key comes with its option."""
    try:
        cfg = Config.model_validate(raw)
    except ValidationError as err:
        raise UserError(_format_validation_error(err, overrides)) from None
    _check_gpu_reservation(cfg.cluster)
    return cfg


def _check_gpu_reservation(cluster: ClusterCfg) -> None:
    """Ray workers priced on GPUs must reserve them: an actor with num_gpus=0 sees no GPU (Ray
    hides them) and runs on the CPU, so the plan's time and cost would describe another run.
    cluster=local is exempt: its one replica uses the GPU it finds (model.device)."""
    if cluster.kind == "local" or cluster.gpu is None or cluster.resources.num_gpus > 0:
        return
    raise UserError(
        f"cluster.gpu={cluster.gpu} prices {cluster.num_workers} worker(s) on {cluster.gpu} "
        f"GPUs, but cluster={cluster.kind} reserves cluster.resources.num_gpus=0 for each, so "
        "they would run on the CPU. Fix: cluster.resources.num_gpus=1 (or cluster.gpu=null for "
        "CPU workers)"
    )


def compose(overrides: list[str], config_dir: str | None = None) -> Config:
    """Compose hallu.conf's config.yaml with overrides (Hydra syntax) and validate it."""
    from hydra import compose as hydra_compose
    from hydra import initialize_config_module
    from hydra.errors import HydraException
    from omegaconf import OmegaConf
    from omegaconf.errors import OmegaConfBaseException

    user = user_config_dir(config_dir)
    search = [f"hydra.searchpath=[file://{user}]"] if user else []
    try:
        with initialize_config_module(config_module="hallu.conf", version_base=None):
            cfg = hydra_compose("config", overrides=search + list(overrides))
        raw = OmegaConf.to_container(cfg, resolve=True, throw_on_missing=True)
    except (HydraException, OmegaConfBaseException) as err:
        raise UserError(_format_hydra_error(err, config_dir, overrides)) from None
    return validate(raw, overrides)  # type: ignore[arg-type]


def _format_hydra_error(
    err: Exception, config_dir: str | None = None, overrides: list[str] | None = None
) -> str:
    text = str(err).split("\nConfig search path:")[0].strip()
    m = re.search(r"Could not find '(\w+)/([^']+)'", text)
    if m:
        group, option = m.groups()
        options = group_options(group, config_dir)
        near = closest(option, options)
        fix = f"did you mean {add_group(group, near)}? Options: " if near else "choose one of "
        fix += ", ".join(options)
        if group == "model":
            fix += ", or keep a preset and set model.name_or_path=<hub id or local directory>"
        typed = next((a for a in overrides or [] if a.lstrip("+") == f"{group}={option}"), None)
        shown = typed or f"{group}={option}"  # as the user typed it, + included
        return f"{shown}: there is no {group}/{option}.yaml in the configs; {fix}"
    m = re.search(r"Could not override '([^']+)'.*?use \+[^=]+=(.*)$", text, re.S)
    if m:
        key, value = m.group(1), m.group(2).strip()
        hint = did_you_mean(key, value, config_dir, overrides)
        return f"unknown config key '{key}'" + (
            hint or "; check its spelling (hallu run --help lists the keys)"
        )
    m = re.search(r"Multiple values for (\w+)", text)
    if m:  # `+model=tiny`: the group has a default, so the option is chosen without the +
        group = m.group(1)
        typed = next((a for a in overrides or [] if re.match(rf"\+{group}=", a)), None)
        if typed:
            fix = typed[1:]
            return f"{typed}: {group} has a default option, chosen without '+'; did you mean {fix}?"
        return f"{group} is chosen twice; keep one {group}=NAME"
    if "Missing mandatory value" in text:
        key = getattr(err, "full_key", None) or text.split(":")[-1].strip()
        return f"config key '{key}' has no value: set {key}=..."
    return f"could not compose the config: {text}"
