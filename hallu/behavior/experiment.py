"""Experiment 1 (behaviour): how does the model answer a certain, an uncertain, a neutral user?

For every selected pair and every condition in `behavior.conditions`, the user's text goes
through the chat template (prompts.render) and the model answers; only the assistant's new tokens
are kept. Greedy decoding gives one answer per prompt; sampled decoding gives `n_samples`, each
from its own logged seed. Each answer is labelled by the lexicon classifier (style.py), which
sees the answer text only, and optionally by a judge model (judge.py), which sees the answer and
a rubric only. The patching metric (e.g. logit diff) at the prompt's last position is stored
beside it, for the metric check in behavior_report.py.

The schema and the chunks live in behavior/schema.py (no torch); chunks run through the run's
one executor (hallu/run/executor.py) on its runner (hallu/run/runner.py, in this process for
cluster=local or in a Ray actor), which hands its replica to this worker and stores each chunk.
"""

from __future__ import annotations

from typing import TYPE_CHECKING, Any, Protocol

import pyarrow as pa

from hallu.behavior.generate import generate, pad_id_of
from hallu.behavior.schema import SCHEMA, Chunk, answer_seed
from hallu.behavior.style import classify

if TYPE_CHECKING:
    from hallu.config import Config
    from hallu.engine.metrics import LogitDiff


class Prepared(Protocol):
    """What a behaviour worker reads of hallu.run.prepare.Prepared (typed here, not imported:
    run sits above behavior in docs/architecture.md's layers)."""

    cfg: Config
    tokenizer: Any
    token_ids: dict[str, dict[str, list[int]]]
    metric: LogitDiff


class BehaviorWorker:
    """Holds the model (and judge) once; `run_chunk` turns a chunk into a response table."""

    def __init__(self, prep: Prepared, run_id: str, loaded: tuple[Any, str | None] | None = None):
        """`loaded`: (model, revision) already loaded by this process (a Ray worker shares its
        patching replica), else the model is loaded here."""
        from hallu.engine.models import load_model

        self.prep, self.cfg, self.run_id = prep, prep.cfg, run_id
        self.tok = prep.tokenizer
        self.model, self.revision = loaded or load_model(self.cfg.model, len(self.tok))
        self.dtype = str(next(self.model.parameters()).dtype).removeprefix("torch.")
        self.judge = None
        if self.cfg.behavior.judge is not None:
            from hallu.behavior.judge import Judge

            self.judge = Judge(self.cfg.behavior.judge, self.cfg.behavior.judge_max_new_tokens)

    def run_chunk(self, chunk: Chunk, progress: Any = None) -> pa.Table:
        b = self.cfg.behavior
        sampled = chunk.decoding == "sampled"
        # One row per answer: (pair, condition, sample index, seed).
        jobs = [
            (pid, cond, k, answer_seed(self.cfg.seed, pid, k) if sampled else None)
            for pid, cond in chunk.prompts
            for k in range(b.n_samples if sampled else 1)
        ]
        cols: dict[str, list] = {name: [] for name in SCHEMA.names}
        for start in range(0, len(jobs), b.batch_size):
            batch = jobs[start : start + b.batch_size]
            for row in self._answer_rows(batch, sampled):
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

    def _answer_rows(self, batch: list[tuple[str, str, int, int | None]], sampled: bool) -> list:
        """Generate one batch of answers and label each; one row (dict) per answer."""
        b, tok = self.cfg.behavior, self.tok
        ids = [self.prep.token_ids[pid][cond] for pid, cond, _, _ in batch]
        gen = generate(
            self.model,
            ids,
            pad_id=pad_id_of(tok),
            eos_id=tok.eos_token_id,
            max_new_tokens=b.max_new_tokens,
            temperature=b.temperature if sampled else None,
            seeds=[s for *_, s in batch] if sampled else None,
        )
        metric = self.prep.metric(gen.first_logits).tolist()
        rows = []
        for (pid, cond, k, seed), new, fin, m, prompt in zip(
            batch, gen.tokens, gen.finished, metric, ids, strict=True
        ):
            text = tok.decode(new, skip_special_tokens=True).strip()
            style = classify(text)  # the answer text alone: never the prompt
            rows.append(
                {
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
            )
        return rows
