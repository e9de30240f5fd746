"""A toy chat model with a planted confidence bias: `python -m hallu.engine.toy train`.

It makes a synthetic chat corpus from the built-in claims: a user states a claim with a certainty
marker ("definitely"), an uncertainty marker ("probably") or none, and the assistant answers
declaratively ("yes , that is right .") or tentatively ("maybe , but i am not sure .") with the
planted probabilities (default: certain user 39/40 declarative = 97.5%, uncertain user 23/40
tentative = 57.5%, as the study reports for Llama-2-13b-chat; neutral 30/40 declarative). A small
Llama-architecture model learns it on CPU in well under a minute, and the result is saved with
`save_pretrained` into hallu/data/toy (model and tokenizer), which `model=toy` loads through
transformers like any local model. Because the answer's first word is the style decision, the
metric `yes_vs_maybe` at the last prompt position reads the planted bias directly.

Counts are exact per claim (not sampled), so the corpus holds the planted rates exactly.
"""

from __future__ import annotations

import argparse
import json
import random
import time
from dataclasses import asdict, dataclass
from pathlib import Path
from typing import Any

import torch

from hallu.config import PromptsCfg, TinySpec
from hallu.engine.tiny import build_model, build_tokenizer
from hallu.prompts import load_pairs, render

TOY_DIR = Path(__file__).resolve().parent.parent / "data" / "toy"

DECLARATIVE = ["yes , that is right .", "yes , that is correct .", "yes , that is true ."]
TENTATIVE = [
    "maybe , but i am not sure .",
    "maybe , that might be right .",
    "maybe , i think that might be true .",
]


@dataclass(frozen=True)
class ToySpec:
    """Everything that determines the trained model; saved beside it as training.json."""

    per_claim: int = 40  # answers per claim and condition; the rates below are counts of it
    declarative_certain: int = 39
    declarative_uncertain: int = 17
    declarative_neutral: int = 30
    n_layers: int = 4
    d_model: int = 64
    n_heads: int = 4
    n_kv_heads: int = 2
    d_mlp: int = 172
    steps: int = 500
    batch_size: int = 64
    lr: float = 3e-3
    seed: int = 0

    def rate(self, condition: str) -> float:
        return getattr(self, f"declarative_{condition}") / self.per_claim


def corpus(spec: ToySpec) -> list[tuple[str, str, str]]:
    """(user text, condition, assistant answer) rows, with exact planted counts per claim."""
    rng = random.Random(spec.seed)
    pairs = load_pairs(PromptsCfg(path="builtin"))
    rows = []
    for pair in pairs:
        for condition, text in pair.texts.items():
            n_decl = getattr(spec, f"declarative_{condition}")
            for i in range(spec.per_claim):
                style = DECLARATIVE if i < n_decl else TENTATIVE
                rows.append((text, condition, rng.choice(style)))
    rng.shuffle(rows)
    return rows


def _encode(tokenizer: Any, rows: list[tuple[str, str, str]]) -> list[tuple[list[int], int]]:
    """Token ids of each whole dialogue, and where the assistant's answer starts."""
    cfg = PromptsCfg(path="builtin")
    out = []
    for text, _, answer in rows:
        prompt = render(tokenizer, text, cfg)
        full = tokenizer.apply_chat_template(
            [{"role": "user", "content": text}, {"role": "assistant", "content": answer}],
            tokenize=False,
        )
        ids = tokenizer(full, add_special_tokens=False)["input_ids"]
        assert ids[: len(prompt)] == prompt, "the answer must extend the rendered prompt"
        out.append((ids, len(prompt)))
    return out


def train(spec: ToySpec, out_dir: Path, log: Any = print) -> dict[str, Any]:
    """Train on the corpus and save model + tokenizer + training.json into `out_dir`."""
    started = time.perf_counter()
    torch.manual_seed(spec.seed)
    tokenizer = build_tokenizer()
    model = build_model(
        TinySpec(
            n_layers=spec.n_layers,
            d_model=spec.d_model,
            n_heads=spec.n_heads,
            n_kv_heads=spec.n_kv_heads,
            d_mlp=spec.d_mlp,
            seed=spec.seed,
        ),
        len(tokenizer),
    )
    data = _encode(tokenizer, corpus(spec))
    width = max(len(ids) for ids, _ in data)
    ids_t = torch.full((len(data), width), tokenizer.pad_token_id)
    labels = torch.full((len(data), width), -100)
    mask = torch.zeros((len(data), width), dtype=torch.long)
    for i, (ids, start) in enumerate(data):
        ids_t[i, : len(ids)] = torch.tensor(ids)
        labels[i, start : len(ids)] = torch.tensor(ids[start:])  # loss on the answer only
        mask[i, : len(ids)] = 1
    model.train()
    opt = torch.optim.AdamW(model.parameters(), lr=spec.lr, weight_decay=0.01)
    sched = torch.optim.lr_scheduler.OneCycleLR(opt, max_lr=spec.lr, total_steps=spec.steps)
    gen = torch.Generator().manual_seed(spec.seed)
    losses = []
    for step in range(spec.steps):
        idx = torch.randint(len(data), (spec.batch_size,), generator=gen)
        loss = model(input_ids=ids_t[idx], attention_mask=mask[idx], labels=labels[idx]).loss
        opt.zero_grad()
        loss.backward()
        opt.step()
        sched.step()
        losses.append(loss.item())
        if step % 100 == 0 or step == spec.steps - 1:
            log(f"step {step:4d}  loss {loss.item():.4f}")
    model.eval()
    rates = first_word_rates(model, tokenizer)
    report = {
        "spec": asdict(spec),
        "planted_declarative_rate": {c: spec.rate(c) for c in ("certain", "uncertain", "neutral")},
        "learned_p_yes": rates,
        "final_loss_mean_last50": sum(losses[-50:]) / len(losses[-50:]),
        "train_seconds": round(time.perf_counter() - started, 1),
        "torch": torch.__version__,
    }
    out_dir.mkdir(parents=True, exist_ok=True)
    model.save_pretrained(out_dir)
    tokenizer.save_pretrained(out_dir)
    (out_dir / "training.json").write_text(json.dumps(report, indent=2) + "\n")
    return report


@torch.no_grad()
def first_word_rates(model: torch.nn.Module, tokenizer: Any) -> dict[str, float]:
    """Mean over claims of P(yes) / (P(yes) + P(maybe)) for the answer's first word."""
    cfg = PromptsCfg(path="builtin")
    yes, maybe = tokenizer.convert_tokens_to_ids(["yes", "maybe"])
    sums: dict[str, list[float]] = {}
    for pair in load_pairs(cfg):
        for condition, text in pair.texts.items():
            logits = model(torch.tensor([render(tokenizer, text, cfg)])).logits[0, -1]
            p = torch.softmax(logits[[yes, maybe]].float(), -1)[0].item()
            sums.setdefault(condition, []).append(p)
    return {c: round(sum(v) / len(v), 4) for c, v in sums.items()}


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(
        prog="python -m hallu.engine.toy", description=__doc__.split("\n")[0]
    )
    sub = parser.add_subparsers(dest="command", required=True)
    t = sub.add_parser("train", help="regenerate the corpus and retrain the toy model")
    t.add_argument("--out", type=Path, default=TOY_DIR, help=f"output directory ({TOY_DIR})")
    t.add_argument("--seed", type=int, default=ToySpec.seed)
    t.add_argument("--steps", type=int, default=ToySpec.steps)
    args = parser.parse_args(argv)
    report = train(ToySpec(seed=args.seed, steps=args.steps), args.out)
    print(
        json.dumps(
            {k: report[k] for k in ("learned_p_yes", "planted_declarative_rate", "train_seconds")},
            indent=2,
        )
    )
    print(f"saved to {args.out}")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
