"""Tiny random models of every supported family, built in code from their config classes."""

from __future__ import annotations

import torch
from transformers import (
    Gemma2Config,
    Gemma2ForCausalLM,
    GPT2Config,
    GPT2LMHeadModel,
    GPTNeoXConfig,
    GPTNeoXForCausalLM,
    LlamaConfig,
    LlamaForCausalLM,
    MistralConfig,
    MistralForCausalLM,
    Qwen2Config,
    Qwen2ForCausalLM,
)

VOCAB = 64
WINDOW = 4  # the sliding window of the tiny Mistral and Gemma-2: shorter than the test prompts

# The chat families a replication runs on (issue: "Does it replicate?"), each with what sets it
# apart from Llama-2: Llama-3's rope scaling, Mistral's sliding window, Qwen2.5's q/k/v biases,
# Gemma-2's soft-capping, pre+post norms, GeGLU and alternating sliding-window layers.
CHAT_FAMILIES = ["llama3", "mistral_sw", "qwen25", "gemma2"]


def build(family: str, seed: int, n_layers: int = 3, d: int = 32, heads: int = 4, kv: int = 2):
    if family in CHAT_FAMILIES:
        return _chat(family, seed, n_layers, d, heads, kv)
    if family in ("llama", "mistral", "qwen2"):
        cls_cfg, cls = {
            "llama": (LlamaConfig, LlamaForCausalLM),
            "mistral": (MistralConfig, MistralForCausalLM),
            "qwen2": (Qwen2Config, Qwen2ForCausalLM),
        }[family]
        cfg = cls_cfg(
            vocab_size=VOCAB, hidden_size=d, intermediate_size=2 * d, num_hidden_layers=n_layers,
            num_attention_heads=heads, num_key_value_heads=kv, max_position_embeddings=128,
        )  # fmt: skip
    elif family == "gpt2":
        cfg = GPT2Config(
            vocab_size=VOCAB,
            n_embd=d,
            n_layer=n_layers,
            n_head=heads,
            n_positions=128,
            bos_token_id=None,
            eos_token_id=None,
        )
        cls = GPT2LMHeadModel
    elif family == "gpt_neox":
        cfg = GPTNeoXConfig(
            vocab_size=VOCAB, hidden_size=d, intermediate_size=2 * d, num_hidden_layers=n_layers,
            num_attention_heads=heads, max_position_embeddings=128, rotary_pct=0.5,
        )  # fmt: skip
        cls = GPTNeoXForCausalLM
    else:
        raise ValueError(family)
    cfg.initializer_range = 0.2  # visible differences between prompts
    with torch.random.fork_rng():
        torch.manual_seed(seed)
        model = cls(cfg)
    return model.float().eval()


def random_pair(seed: int, n_target: int, n_source: int, first_diff: int, n_diff: int = 2):
    """Token ids of a pair that agree on the first `first_diff` tokens and differ after them
    in `n_diff` tokens (aligned from the end when the lengths differ)."""
    g = torch.Generator().manual_seed(seed)
    tgt = torch.randint(4, VOCAB, (n_target,), generator=g).tolist()
    src = tgt[:first_diff] + tgt[first_diff + (n_target - n_source) :]
    if len(src) < n_source:  # source longer: repeat a token after the shared prefix
        src = tgt[:first_diff] + [tgt[first_diff]] * (n_source - n_target) + tgt[first_diff:]
    for j in range(n_diff):
        k = min(first_diff + j, len(src) - 1)
        src[k] = (src[k] + 1 + j) % (VOCAB - 4) + 4
    return src, tgt


def _chat(family: str, seed: int, n_layers: int, d: int, heads: int, kv: int):
    common = dict(
        vocab_size=VOCAB, hidden_size=d, intermediate_size=2 * d, num_hidden_layers=n_layers,
        num_attention_heads=heads, num_key_value_heads=kv, max_position_embeddings=128,
    )  # fmt: skip
    if family == "llama3":
        cls = LlamaForCausalLM
        cfg = LlamaConfig(
            **common, rope_theta=500000.0,
            rope_scaling={"rope_type": "llama3", "factor": 8.0, "low_freq_factor": 1.0,
                          "high_freq_factor": 4.0, "original_max_position_embeddings": 16},
        )  # fmt: skip
    elif family == "mistral_sw":
        cls, cfg = MistralForCausalLM, MistralConfig(**common, sliding_window=WINDOW)
    elif family == "qwen25":
        cls, cfg = Qwen2ForCausalLM, Qwen2Config(**common)
    else:
        cls = Gemma2ForCausalLM
        cfg = Gemma2Config(
            **common, head_dim=d // heads, sliding_window=WINDOW, query_pre_attn_scalar=d // heads,
            attn_logit_softcapping=2.0, final_logit_softcapping=3.0,
        )  # fmt: skip
    cfg.initializer_range = 0.2
    with torch.random.fork_rng():
        torch.manual_seed(seed)
        model = cls(cfg)
        # transformers zeroes biases and (Gemma's 1 + w) norm weights: random ones, so q/k/v
        # biases and every norm's scale take part in the check.
        with torch.no_grad():
            for name, p in model.named_parameters():
                if name.endswith("bias") or "norm" in name:
                    p.add_(torch.randn_like(p) * 0.3)
    return model.float().eval()
