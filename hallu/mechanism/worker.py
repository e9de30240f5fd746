"""What runs a mechanism unit (planned in hallu/mechanism/units.py): capture, steer, patchgen,
heads.

The worker holds the model once. A `capture` unit stores resid_pre at every captured layer and
site of every prompt of its claims; a `steer` unit generates answers to the unmarked prompts
with alpha x a direction added at one layer and site; a `patchgen` unit generates answers to
each pair's target prompt with the source's resid_pre written in at one layer and site (the
patch held while the model answers), beside the unpatched source and target answers.
Sampled answers use one seed per (claim, sample), shared by every alpha and setting (common
random numbers), so a change of label between settings is the edit's doing, not the sampler's.
"""

from __future__ import annotations

from typing import Any

import pyarrow as pa
import torch

from hallu.behavior.generate import generate
from hallu.behavior.schema import answer_seed
from hallu.behavior.style import classify
from hallu.config import DIRECTIONS
from hallu.engine.directions import capture, readout
from hallu.engine.hooks import capture_resid_pre
from hallu.engine.models import decoder_layers, load_model
from hallu.engine.steering import Edit, broadcast, held
from hallu.mechanism.schema import SCHEMAS, Unit
from hallu.mechanism.units import MechPrompts, prepare_mechanism


class MechanismWorker:
    def __init__(self, prep: Any, run_id: str, loaded: tuple[Any, str | None] | None = None):
        """`prep`: hallu.run.prepare.Prepared; `loaded`: (model, revision) this process holds
        already (the runner's replica), else the model is loaded here."""
        self.prep = prep
        self.cfg, self.run_id = self.prep.cfg, run_id
        self.mech: MechPrompts = prepare_mechanism(self.prep)
        self.model, self.revision = loaded or load_model(self.cfg.model, len(self.prep.tokenizer))
        self.layers = decoder_layers(self.model)
        self.dtype = str(next(self.model.parameters()).dtype).removeprefix("torch.")
        self.judge = None
        if self.cfg.behavior.judge is not None:  # the judge reads the answer only, as in Exp. 1
            from hallu.behavior.judge import Judge

            self.judge = Judge(self.cfg.behavior.judge, self.cfg.behavior.judge_max_new_tokens)

    def run(self, unit: Unit) -> pa.Table:
        run = {
            "capture": self._capture,
            "steer": self._steer,
            "patchgen": self._patchgen,
            "heads": self._heads,
        }[unit.kind]
        cols = run(unit)
        n = len(next(iter(cols.values())))
        cols |= {"run_id": [self.run_id] * n, "unit_id": [unit.unit_id] * n}
        if "response" in cols:
            judged = [None] * n
            if self.judge is not None:
                judged = [j[0] for j in self.judge.label(cols["response"], 16)]
            cols["judge_label"] = judged
        return pa.Table.from_pydict(cols, schema=SCHEMAS[unit.kind])

    def _capture(self, unit: Unit) -> dict[str, list]:
        rows = [r for r in self.mech.rows if r.claim_id in unit.claims]
        sites = self.cfg.sweep.mechanism.sites
        ids = [self.mech.ids[r.prompt_id] for r in rows]
        offs = [[self.mech.offsets[r.prompt_id][s] for s in sites] for r in rows]
        acts, metric, rms = capture(self.model, self.layers, ids, offs, self.prep.metric)
        lens = (acts @ readout(self.model, self.prep.metric)) / rms[:, None, None]  # [N, L, K]
        cols: dict[str, list] = {k: [] for k in CAPTURE_KEYS}
        for i, r in enumerate(rows):
            for layer in unit.layers:
                for k, site in enumerate(sites):
                    vals = (r.prompt_id, r.pair_id, r.claim_id, r.rung, r.condition, r.strength)
                    vals += (r.claim_true, r.template, layer, site, len(ids[i]) + offs[i][k])
                    vals += (float(lens[i, layer, k]), acts[i, layer, k].tolist())
                    vals += (float(metric[i]),)
                    for key, v in zip(CAPTURE_KEYS, vals, strict=True):
                        cols[key].append(v)
        return cols

    def _answers(self, prompts: list[list[int]], claims: list[str], edits_for: Any) -> tuple:
        """Sampled answers, n_samples per prompt, with the edits `edits_for(rows)` held."""
        m = self.cfg.sweep.mechanism
        jobs = [(i, k) for i in range(len(prompts)) for k in range(m.n_samples)]
        tok = self.prep.tokenizer
        with held(self.layers, edits_for([i for i, _ in jobs])):
            gen = generate(
                self.model,
                [prompts[i] for i, _ in jobs],
                pad_id=tok.pad_token_id if tok.pad_token_id is not None else tok.eos_token_id,
                eos_id=tok.eos_token_id,
                max_new_tokens=m.max_new_tokens,
                temperature=m.temperature,
                seeds=[answer_seed(self.cfg.seed, claims[i], k) for i, k in jobs],
            )
        texts = [tok.decode(t, skip_special_tokens=True).strip() for t in gen.tokens]
        metric = self.prep.metric(gen.first_logits).tolist()
        return jobs, texts, metric

    def _steer(self, unit: Unit) -> dict[str, list]:
        m = self.cfg.sweep.mechanism
        rows = [r for r in self.mech.rows if r.claim_id in unit.claims and r.condition == "neutral"]
        prompts = [self.mech.ids[r.prompt_id] for r in rows]
        offsets = [self.mech.offsets[r.prompt_id][m.steer_site] for r in rows]
        vector = torch.tensor(unit.vector)
        cols: dict[str, list] = {k: [] for k in STEER_KEYS}
        for alpha in m.alphas:

            def edits(idx: list[int], a: float = alpha) -> list[Edit]:
                vecs = broadcast(a * vector, len(idx))
                return [Edit(L, [offsets[i] for i in idx], vecs) for L in unit.layers]

            jobs, texts, metric = self._answers(prompts, [r.claim_id for r in rows], edits)
            for (i, k), text, value in zip(jobs, texts, metric, strict=True):
                r = rows[i]
                vals = (r.prompt_id, r.claim_id, r.claim_true, unit.direction, unit.layers[0])
                vals += (m.steer_site, alpha, float(vector.norm()), k, text)
                vals += (classify(text).label, value)
                for key, v in zip(STEER_KEYS, vals, strict=True):
                    cols[key].append(v)
        return cols

    def _patchgen(self, unit: Unit) -> dict[str, list]:
        m = self.cfg.sweep.mechanism
        src_c, tgt_c = DIRECTIONS[unit.direction]
        pairs = [p for p in self.mech.pairs if self.mech.claim_of[p] in unit.claims]
        pid = {c: [self.mech.pair_prompt[p][c] for p in pairs] for c in (src_c, tgt_c)}
        tgt_ids = [self.mech.ids[p] for p in pid[tgt_c]]
        src_ids = [self.mech.ids[p] for p in pid[src_c]]
        claims = [self.mech.claim_of[p] for p in pairs]
        cols: dict[str, list] = {k: [] for k in PATCHGEN_KEYS}
        settings = [("source", None), ("target", None)] + [("patched", L) for L in unit.layers]
        for setting, layer in settings:
            prompts = src_ids if setting == "source" else tgt_ids
            edits = (
                self._patch_edits(pid, src_c, tgt_c, layer, src_ids) if layer is not None else None
            )
            jobs, texts, metric = self._answers(prompts, claims, edits or (lambda idx: []))
            for (i, k), text, value in zip(jobs, texts, metric, strict=True):
                vals = (pairs[i], claims[i], self.mech.truth_of[pairs[i]], unit.direction)
                vals += (setting, layer, m.patch_site, k, text, classify(text).label, value)
                for key, v in zip(PATCHGEN_KEYS, vals, strict=True):
                    cols[key].append(v)
        return cols

    def _heads(self, unit: Unit) -> dict[str, list]:
        """Per-head total, path and direct effects at the last position, per pair."""
        from hallu.engine.adapters import Adapter
        from hallu.engine.paths import head_effects

        ad = Adapter(self.model)
        src_c, tgt_c = DIRECTIONS[unit.direction]
        cols: dict[str, list] = {k: [] for k in HEADS_KEYS}
        for p in self.mech.pairs:
            if self.mech.claim_of[p] not in unit.claims:
                continue
            src, tgt = (self.mech.ids[self.mech.pair_prompt[p][c]] for c in (src_c, tgt_c))
            eff = head_effects(ad, src, tgt, self.prep.metric)
            for layer in range(ad.n_layers):
                for head in range(ad.n_heads):
                    vals = (p, self.mech.claim_of[p], self.mech.truth_of[p], unit.direction)
                    vals += (layer, head, eff["clean"], eff["corrupted"])
                    vals += tuple(float(eff[k][layer, head]) for k in ("total", "path", "direct"))
                    for key, v in zip(HEADS_KEYS, vals, strict=True):
                        cols[key].append(v)
        return cols

    def _patch_edits(self, pid, src_c, tgt_c, layer, src_ids) -> Any:
        site = self.cfg.sweep.mechanism.patch_site
        src_vec = []
        for p, ids in zip(pid[src_c], src_ids, strict=True):
            resid, _ = capture_resid_pre(self.model, self.layers, ids)
            src_vec.append(resid[layer, len(ids) + self.mech.offsets[p][site]])
        src_vec_t = torch.stack(src_vec)
        tgt_off = [self.mech.offsets[p][site] for p in pid[tgt_c]]

        def edits(idx: list[int]) -> list[Edit]:
            return [Edit(layer, [tgt_off[i] for i in idx], src_vec_t[idx], mode="set")]

        return edits


CAPTURE_KEYS = (
    "prompt_id", "pair_id", "claim_id", "rung", "condition", "strength", "claim_true",
    "template", "layer", "site", "position", "lens", "vector", "metric_value",
)  # fmt: skip
STEER_KEYS = (
    "prompt_id", "claim_id", "claim_true", "direction", "layer", "site", "alpha", "norm",
    "sample_index", "response", "style_label", "metric_value",
)  # fmt: skip
HEADS_KEYS = (
    "pair_id", "claim_id", "claim_true", "patch_direction", "layer", "head", "clean",
    "corrupted", "total", "path", "direct",
)  # fmt: skip
PATCHGEN_KEYS = (
    "pair_id", "claim_id", "claim_true", "patch_direction", "setting", "layer", "site",
    "sample_index", "response", "style_label", "metric_value",
)  # fmt: skip
