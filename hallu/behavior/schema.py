"""Experiment 1's data without a model: the Parquet schema of an answer, and its chunks.

Work is cut into chunks (one decoding x `prompts_per_chunk` prompts), each stored as one Parquet
file named by the hash of its spec, like patching shards: a rerun skips finished chunks. Nothing
here imports torch, so planning and the report can use it without loading the engine.
"""

from __future__ import annotations

import hashlib
import json
from dataclasses import dataclass

import pyarrow as pa

from hallu.config import Config
from hallu.errors import UserError

FOLDER = "behavior/responses"

COLUMNS: list[tuple[str, pa.DataType, str]] = [
    ("run_id", pa.string(), "the run directory's name"),
    ("chunk_id", pa.string(), "hash of the chunk's spec; its Parquet file's name"),
    ("model", pa.string(), "model.name_or_path"),
    ("model_revision", pa.string(), "hub commit of the weights; null for tiny/local models"),
    ("dtype", pa.string(), "dtype the model ran in"),
    ("experiment", pa.string(), "'behavior'"),
    ("prompt_id", pa.string(), "'<pair_id>/<condition>'"),
    ("pair_id", pa.string(), "the claim; the same across its conditions (pairs for McNemar)"),
    ("condition", pa.string(), "certain | uncertain | neutral"),
    ("decoding", pa.string(), "greedy | sampled"),
    ("sample_index", pa.int32(), "0 for greedy; 0..n_samples-1 for sampled"),
    ("seed", pa.int64(), "seed of this answer's generator; null for greedy"),
    ("temperature", pa.float64(), "sampling temperature; 0 for greedy"),
    ("max_new_tokens", pa.int32(), "behavior.max_new_tokens"),
    ("n_prompt_tokens", pa.int32(), "tokens of the rendered prompt (chat template included)"),
    ("n_new_tokens", pa.int32(), "tokens of the answer (EOS excluded)"),
    ("finished", pa.bool_(), "the answer ended with EOS (false: cut at max_new_tokens)"),
    ("response", pa.string(), "the assistant's answer only, decoded without special tokens"),
    ("style_label", pa.string(), "lexicon label: declarative | tentative | mixed"),
    ("n_hedges", pa.int32(), "hedge cues (negated boosters included)"),
    ("n_boosters", pa.int32(), "booster cues (negated doubt words included)"),
    ("n_negated", pa.int32(), "cues read under a negation"),
    ("stance", pa.float32(), "(boosters - hedges) / (boosters + hedges + 1)"),
    ("hedges", pa.list_(pa.string()), "the hedge cues found"),
    ("boosters", pa.list_(pa.string()), "the booster cues found"),
    ("judge_model", pa.string(), "behavior.judge.name_or_path; null without a judge"),
    ("judge_label", pa.string(), "judge's label; null without a judge or if unparsed"),
    ("judge_reply", pa.string(), "the judge's raw reply"),
    ("metric", pa.string(), "metric name, e.g. 'logit_diff'"),
    ("metric_value", pa.float32(), "that metric at the prompt's last position (float32)"),
    ("seed_run", pa.int64(), "the run's seed"),
]
SCHEMA = pa.schema([pa.field(n, t) for n, t, _ in COLUMNS])


@dataclass(frozen=True)
class Chunk:
    chunk_id: str
    decoding: str
    prompts: tuple[tuple[str, str], ...]  # (pair_id, condition)

    @property
    def n_rows(self) -> int:
        return len(self.prompts)


def plan_chunks(cfg: Config, pair_conditions: dict[str, set[str]]) -> list[Chunk]:
    """Chunks for every (decoding, prompt); a UserError if a pair lacks a requested condition."""
    b = cfg.behavior
    for pid, conds in pair_conditions.items():
        missing = [c for c in b.conditions if c not in conds]
        if missing:
            raise UserError(
                f"behavior.conditions={list(b.conditions)}: pair {pid!r} has no "
                f"{' or '.join(missing)} row in prompts.path={cfg.prompts.path}; add the rows, "
                f"or drop the condition (behavior.conditions=[certain,uncertain])"
            )
    prompts = [(pid, c) for pid in pair_conditions for c in b.conditions]
    chunks = []
    for decoding in b.decoding:
        for start in range(0, len(prompts), b.prompts_per_chunk):
            group = tuple(prompts[start : start + b.prompts_per_chunk])
            spec = {
                "model": cfg.model.model_dump(exclude={"device"}),
                "prompts_cfg": cfg.prompts.model_dump(),
                "metric": cfg.metric.model_dump(),
                "decoding": decoding,
                "prompts": group,
                "max_new_tokens": b.max_new_tokens,
                "judge": b.judge.model_dump() if b.judge else None,
                "judge_max_new_tokens": b.judge_max_new_tokens,
                "seed": cfg.seed,
            }
            if decoding == "sampled":
                spec |= {"temperature": b.temperature, "n_samples": b.n_samples}
            digest = hashlib.sha256(json.dumps(spec, sort_keys=True).encode()).hexdigest()[:16]
            chunks.append(Chunk(digest, decoding, group))
    return chunks


def answer_seed(seed: int, pair_id: str, sample_index: int) -> int:
    """Seed of one sampled answer. Shared by a claim's conditions, so they are compared under
    the same random stream (common random numbers), and independent of batching."""
    h = hashlib.sha256(f"{seed}/{pair_id}/{sample_index}".encode()).digest()
    return int.from_bytes(h[:8], "big") & (2**63 - 1)


def n_answers(cfg: Config, chunks: list[Chunk]) -> int:
    return sum(
        c.n_rows * (cfg.behavior.n_samples if c.decoding == "sampled" else 1) for c in chunks
    )


def describe(cfg: Config, chunks: list[Chunk]) -> str:
    b = cfg.behavior
    pairs = len({pid for c in chunks for pid, _ in c.prompts})
    return (
        f"behavior: {n_answers(cfg, chunks)} answers ({pairs} pairs x {len(b.conditions)} "
        f"condition(s); decoding {', '.join(b.decoding)}"
        + (f", {b.n_samples} samples at T={b.temperature}" if "sampled" in b.decoding else "")
        + f"; up to {b.max_new_tokens} new tokens) in {len(chunks)} chunks"
    )
