"""Experiment 1 (behaviour): how does the model answer a certain, an uncertain, a neutral user?

For every selected pair and every condition in `behavior.conditions`, the user's text goes
through the chat template (prompts.render) and the model answers; only the assistant's new tokens
are kept. Greedy decoding gives one answer per prompt; sampled decoding gives `n_samples`, each
from its own logged seed. Each answer is labelled by the lexicon classifier (style.py), which
sees the answer text only, and optionally by a judge model (judge.py), which sees the answer and
a rubric only. The patching metric (e.g. logit diff) at the prompt's last position is stored
beside it, for the metric check in behavior_report.py.

Work is cut into chunks (one decoding x `prompts_per_chunk` prompts), each stored as one Parquet
file named by the hash of its spec, like patching shards: a rerun skips finished chunks.
"""

from __future__ import annotations

import hashlib
import json
import sys
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any

import pyarrow as pa
import torch
from tqdm import tqdm

from hallu.behavior.generate import generate
from hallu.behavior.style import classify
from hallu.config import Config
from hallu.errors import UserError

if TYPE_CHECKING:
    from hallu.store.base import Store  # typing only: behaviour never imports a store

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


class BehaviorWorker:
    """Holds the model (and judge) once; `run_chunk` turns a chunk into a response table."""

    def __init__(self, prep: Any, run_id: str):
        from hallu.engine.models import load_model

        self.prep, self.cfg, self.run_id = prep, prep.cfg, run_id
        self.tok = prep.tokenizer
        self.model, self.revision = load_model(self.cfg.model, len(self.tok))
        self.dtype = str(next(self.model.parameters()).dtype).removeprefix("torch.")
        self.judge = None
        if self.cfg.behavior.judge is not None:
            from hallu.behavior.judge import Judge

            self.judge = Judge(self.cfg.behavior.judge, self.cfg.behavior.judge_max_new_tokens)

    def run_chunk(self, chunk: Chunk, progress: Any = None) -> pa.Table:
        b, tok = self.cfg.behavior, self.tok
        sampled = chunk.decoding == "sampled"
        # One row per answer: (pair, condition, sample index, seed).
        jobs = [
            (pid, cond, k, answer_seed(self.cfg.seed, pid, k) if sampled else None)
            for pid, cond in chunk.prompts
            for k in range(b.n_samples if sampled else 1)
        ]
        cols: dict[str, list] = {name: [] for name in SCHEMA.names}
        pad = tok.pad_token_id if tok.pad_token_id is not None else tok.eos_token_id
        for start in range(0, len(jobs), b.batch_size):
            batch = jobs[start : start + b.batch_size]
            ids = [self.prep.token_ids[pid][cond] for pid, cond, _, _ in batch]
            gen = generate(
                self.model,
                ids,
                pad_id=pad,
                eos_id=tok.eos_token_id,
                max_new_tokens=b.max_new_tokens,
                temperature=b.temperature if sampled else None,
                seeds=[s for *_, s in batch] if sampled else None,
            )
            metric = self.prep.metric(gen.first_logits).tolist()
            for (pid, cond, k, seed), new, fin, m, prompt in zip(
                batch, gen.tokens, gen.finished, metric, ids, strict=True
            ):
                text = tok.decode(new, skip_special_tokens=True).strip()
                style = classify(text)  # the answer text alone: never the prompt
                row = {
                    "prompt_id": f"{pid}/{cond}",
                    "pair_id": pid,
                    "condition": cond,
                    "sample_index": k,
                    "seed": seed,
                    "temperature": b.temperature if sampled else 0.0,
                    "n_prompt_tokens": len(prompt),
                    "n_new_tokens": len(new),
                    "finished": fin,
                    "response": text,
                    "style_label": style.label,
                    "n_hedges": style.n_hedges,
                    "n_boosters": style.n_boosters,
                    "n_negated": style.n_negated,
                    "stance": style.stance,
                    "hedges": style.hedges,
                    "boosters": style.boosters,
                    "metric_value": m,
                }
                for key, v in row.items():
                    cols[key].append(v)
            if progress is not None:
                progress.update(len(batch))
        n = len(cols["response"])
        judged: list[tuple[str | None, str | None]] = [(None, None)] * n
        if self.judge is not None:
            judged = list(self.judge.label(cols["response"], b.batch_size))
        cols["judge_label"] = [j[0] for j in judged]
        cols["judge_reply"] = [j[1] for j in judged]
        constant = {
            "run_id": self.run_id,
            "chunk_id": chunk.chunk_id,
            "model": self.cfg.model.name_or_path,
            "model_revision": self.revision,
            "dtype": self.dtype,
            "experiment": "behavior",
            "decoding": chunk.decoding,
            "max_new_tokens": b.max_new_tokens,
            "judge_model": self.judge.name if self.judge else None,
            "metric": self.cfg.metric.name,
            "seed_run": self.cfg.seed,
        }
        for key, v in constant.items():
            cols[key] = [v] * n
        return pa.table({f.name: pa.array(cols[f.name], type=f.type) for f in SCHEMA})


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


def run_behavior(prep: Any, chunks: list[Chunk], store: Store, run_meta: dict[str, Any]) -> int:
    """Run every chunk not yet in `store` (in this process); return how many were run."""
    done = store.table_names(FOLDER)
    todo = [c for c in chunks if c.chunk_id not in done]
    if not todo:
        return 0
    torch.manual_seed(prep.cfg.seed)
    worker = BehaviorWorker(prep, store.run_id)  # loads before run.json: a bad model leaves no run
    store.create(prep.cfg, {**run_meta, "model_revision": worker.revision, "dtype": worker.dtype})
    with tqdm(
        total=n_answers(prep.cfg, todo), unit="answer", desc="behavior", file=sys.stderr
    ) as bar:
        for chunk in todo:
            store.write_table(f"{FOLDER}/{chunk.chunk_id}.parquet", worker.run_chunk(chunk, bar))
    return len(todo)
