"""A small Llama-architecture model and a word-level tokenizer, built in code (no download).

The tokenizer knows every word of the built-in prompt set plus a few hundred common English
words, lower-cased, with `<unk>` for the rest; "definitely" and "probably" are one token each, so
certain/uncertain pairs tokenize to equal lengths. Its chat template mimics Llama-2-chat's
`<s>[INST] ... [/INST]` so the same rendering code serves the tiny and the real models.
"""

from __future__ import annotations

import csv
import re
from importlib import resources

import torch
from tokenizers import Regex, Tokenizer, models, normalizers, pre_tokenizers, processors
from transformers import LlamaConfig, LlamaForCausalLM, PreTrainedTokenizerFast

from hallu.config import TinySpec
from hallu.shape import TINY_CONTEXT

SPECIAL = ["<pad>", "<unk>", "<s>", "</s>", "[INST]", "[/INST]", "<<SYS>>", "<</SYS>>"]

# Words a chat answer or a user's own prompt file is likely to use (beyond the built-in set).
COMMON_WORDS = """
a about after again all also always am an and answer any are as at be because been before
being believe both but by can cannot certain certainly clearly completely confident correct
could definitely did do does doubt either exactly fact false for from guess had has have he
her here his how however i if in indeed is isn it its just know known likely made may maybe
might more most much must my no not of often on one only or other our out perhaps possibly
probably quite rather really right say see seems she should so some sure than that the their
them then there these they think this those though to too true uncertain unclear unlikely
unsure up was we well were what when where which while who why will with without would yes
you your correct incorrect actually absolutely undoubtedly surely apparently arguably might
not sure wrong sorry great question thanks thank help let me check however although
""".split()
PUNCT = list(".,?!:;'\"()-")
NEWLINE = "\u00b6"  # stands for a run of newlines in the stand-in tokenizers

CHAT_TEMPLATE = (
    "{% if messages[0]['role'] == 'system' %}"
    "{% set sys = messages[0]['content'] %}{% set msgs = messages[1:] %}"
    "{% else %}{% set sys = none %}{% set msgs = messages %}{% endif %}"
    "{% for m in msgs %}"
    "{% if m['role'] == 'user' %}<s>[INST] "
    "{% if loop.first and sys %}<<SYS>> {{ sys }} <</SYS>> {% endif %}"
    "{{ m['content'] }} [/INST]"
    "{% elif m['role'] == 'assistant' %} {{ m['content'] }} </s>{% endif %}"
    "{% endfor %}"
)


def _builtin_words() -> list[str]:
    path = resources.files("hallu") / "data" / "prompts_builtin.csv"
    words: set[str] = set()
    with path.open(encoding="utf-8") as f:
        for row in csv.DictReader(f):
            words.update(re.findall(r"\w+", row["text"].lower()))
    return sorted(words)


def build_tokenizer(
    special: list[str] | None = None,
    chat_template: str = CHAT_TEMPLATE,
    bos: str | None = "<s>",
    eos: str = "</s>",
    newlines: bool = False,
) -> PreTrainedTokenizerFast:
    """The word-level tokenizer; the defaults are the tiny model's. Another family's `special`
    tokens (each one token), template, BOS/EOS make the stand-in of hallu/engine/standin.py;
    `newlines`: a run of newlines is one token too (chat templates put them between turns)."""
    special = SPECIAL if special is None else ["<pad>", "<unk>", *special]
    words = sorted(set(COMMON_WORDS) | set(_builtin_words()) | {str(d) for d in range(10)})
    extra = [NEWLINE] if newlines else []
    vocab = {tok: i for i, tok in enumerate(special + PUNCT + extra + words)}
    tok = Tokenizer(models.WordLevel(vocab=vocab, unk_token="<unk>"))
    steps = [normalizers.Lowercase()]
    if newlines:
        steps.append(normalizers.Replace(Regex("\n+"), f" {NEWLINE} "))
    tok.normalizer = normalizers.Sequence(steps) if newlines else steps[0]
    tok.pre_tokenizer = pre_tokenizers.Whitespace()
    tok.add_special_tokens(special)
    if bos is not None:
        tok.post_processor = processors.TemplateProcessing(
            single=f"{bos} $A", pair=f"{bos} $A $B", special_tokens=[(bos, vocab[bos])]
        )
    fast = PreTrainedTokenizerFast(
        tokenizer_object=tok,
        bos_token=bos,
        eos_token=eos,
        unk_token="<unk>",
        pad_token="<pad>",
        padding_side="left",
        clean_up_tokenization_spaces=False,
    )
    fast.chat_template = chat_template
    return fast


def build_model(spec: TinySpec, vocab_size: int) -> LlamaForCausalLM:
    if spec.d_model % spec.n_heads or spec.n_heads % spec.n_kv_heads:
        raise ValueError(
            f"model.tiny: d_model {spec.d_model} must divide by n_heads {spec.n_heads}, "
            f"and n_heads by n_kv_heads {spec.n_kv_heads}"
        )
    config = LlamaConfig(
        vocab_size=vocab_size,
        hidden_size=spec.d_model,
        intermediate_size=spec.d_mlp,
        num_hidden_layers=spec.n_layers,
        num_attention_heads=spec.n_heads,
        num_key_value_heads=spec.n_kv_heads,
        max_position_embeddings=TINY_CONTEXT,
        pad_token_id=0,
        bos_token_id=2,
        eos_token_id=3,
        tie_word_embeddings=False,
    )
    # Seeded init so a tiny run is reproducible; a larger init scale than HF's default 0.02
    # gives logits that differ visibly between prompts.
    config.initializer_range = 0.2
    gen = torch.random.fork_rng()
    with gen:
        torch.manual_seed(spec.seed)
        model = LlamaForCausalLM(config)
    return model.float().eval()
