"""Presets of real chat models: shipped architecture and chat template, offline plan, rehearsal.

`model.weights=random` builds the preset's architecture (hallu/data/arch) with random weights and
a stand-in tokenizer with the real chat template (hallu/engine/standin.py), so a study runs on
this machine without a download.
"""

from __future__ import annotations

import json
import re

import pytest
import yaml

from hallu.config import CONF_DIR, ModelCfg
from hallu.engine.standin import arch_config, build_random, standin_tokenizer
from hallu.prompts import single_token_id
from hallu.shape import shape_from_config

PRESETS = sorted(p.stem for p in (CONF_DIR / "model").glob("*.yaml") if "arch:" in p.read_text())
NEW = ["llama3_8b_instruct", "mistral_7b_instruct", "qwen25_7b_instruct", "gemma2_9b_it"]


def _preset(name: str, **change) -> ModelCfg:
    d = yaml.safe_load((CONF_DIR / "model" / f"{name}.yaml").read_text())
    d.update(change)
    return ModelCfg(**d)


def test_every_new_family_and_its_larger_sibling_has_a_preset():
    assert set(NEW) <= set(PRESETS)
    assert {"llama3_70b_instruct", "qwen25_72b_instruct", "gemma2_27b_it"} <= set(PRESETS)


@pytest.mark.parametrize("name", PRESETS)
def test_the_preset_matches_its_shipped_architecture(name):
    """The shape mode=plan reads equals the shipped config.json's, and the dtype is the one the
    model was trained in (the config's torch_dtype)."""
    cfg = _preset(name)
    arch = json.loads((CONF_DIR.parent / "data" / "arch" / f"{cfg.arch}.json").read_text())
    shape = shape_from_config(arch_config(cfg))
    s = cfg.shape
    assert s is not None
    assert (s.n_layers, s.d_model, s.n_heads, s.n_kv_heads, s.d_mlp, s.vocab_size, s.context) == (
        shape.n_layers, shape.d_model, shape.n_heads, shape.n_kv_heads, shape.d_mlp,
        shape.vocab_size, shape.n_ctx,
    )  # fmt: skip
    assert (s.head_dim or s.d_model // s.n_heads) == shape.head_size
    assert cfg.dtype == arch["torch_dtype"]


@pytest.mark.parametrize("name", PRESETS)
def test_the_metric_tokens_are_one_token_of_the_stand_in(name):
    cfg = _preset(name, weights="random")
    tok = standin_tokenizer(cfg)
    for word in (" yes", " maybe", " is", " might"):
        single_token_id(tok, cfg.token_spelling.get(word, word), "metric")


def _overhead(cfg: ModelCfg, text: str) -> int:
    tok = standin_tokenizer(cfg)
    rendered = tok.apply_chat_template(
        [{"role": "user", "content": text}], tokenize=False, add_generation_prompt=True
    )
    ids = tok(rendered, add_special_tokens=False)["input_ids"]
    return len(ids) - len(tok(text, add_special_tokens=False)["input_ids"])


def test_stand_in_template_lengths():
    """The template's own tokens do not depend on the text, and count as the real tokenizers do
    where the template is special tokens and short words: Gemma-2's "<bos><start_of_turn>user\\n
    ...<end_of_turn>\\n<start_of_turn>model\\n" is 9 tokens; Llama-2's "<s>[INST] ... [/INST]"
    is 9 in SentencePiece (<s>, [, INST, ] and [/, INST, ] with spaces) and 7 here (the
    underestimate the module's docstring describes)."""
    for name in PRESETS:
        cfg = _preset(name, weights="random")
        assert _overhead(cfg, "Is water wet?") == _overhead(cfg, "I am definitely sure it is.")
    assert _overhead(_preset("gemma2_9b_it", weights="random"), "Is water wet?") == 9
    assert _overhead(_preset("llama2_13b_chat", weights="random"), "Is water wet?") == 7


def test_random_weights_shrink_and_keep_the_family():
    cfg = _preset("gemma2_9b_it", weights="random", n_layers=2, d_model=64)
    model = build_random(cfg, dtype=__import__("torch").float32)
    c = model.config
    assert (c.model_type, c.num_hidden_layers, c.hidden_size, c.head_dim) == ("gemma2", 2, 64, 16)
    assert c.num_attention_heads == 4 and c.num_key_value_heads == 2  # Gemma's 2 query heads/kv
    assert c.layer_types == ["sliding_attention", "full_attention"]
    assert c.final_logit_softcapping == 30.0 and c.vocab_size == 256000


def test_rehearsal_settings_are_checked(run_cli):
    out = run_cli("model=llama2_13b_chat", "model.n_layers=2", "mode=plan")
    assert out.returncode == 2 and "Traceback" not in out.stderr
    assert "config key 'model.n_layers'" in out.stderr and "add model.weights=random" in out.stderr
    out = run_cli("model=llama2_13b_chat", "model.weights=random", "model.n_layers=99", "mode=plan")
    assert out.returncode == 2 and "model.n_layers=99" in out.stderr and "40 layers" in out.stderr
    sys_prompt = run_cli("model=gemma2_9b_it", "model.weights=random", "model.n_layers=1",
                         "prompts.system_prompt=Be brief.", "mode=plan")  # fmt: skip
    assert sys_prompt.returncode == 2 and "prompts.system_prompt=null" in sys_prompt.stderr


@pytest.mark.parametrize("name", NEW)
def test_plan_offline_for_each_new_preset(run_cli, name, monkeypatch):
    monkeypatch.setenv("HF_HUB_OFFLINE", "1")
    out = run_cli(f"model={name}", "mode=plan", "cluster.gpu=h100", "+sweep=full")
    assert out.returncode == 0, out.stderr[-2000:]
    assert "cost: $" in out.stdout and "fits: 1 x" in out.stdout


def test_plan_refuses_what_does_not_fit(run_cli):
    out = run_cli("model=qwen25_72b_instruct", "mode=plan", "cluster.gpu=h100")
    assert out.returncode == 2
    assert "cluster.resources.num_gpus=" in out.stderr and "per replica" in out.stderr


@pytest.mark.slow
def test_rehearsal_of_llama2_13b_runs_offline(run_cli, tmp_path, monkeypatch, calibration_file):
    """The 13b's true shapes and dtype, two layers: the debug sweep runs end to end, its report
    says rehearsal, and its measured rates time the next plan of the same (shrunk) model only."""
    monkeypatch.setenv("HF_HUB_OFFLINE", "1")
    args = ("model=llama2_13b_chat", "model.weights=random", "model.n_layers=2", "+sweep=debug")

    def planned(*more: str) -> str:
        plan = run_cli(*args, *more, "mode=plan")
        assert plan.returncode == 0, plan.stderr[-2000:]
        return re.search(r"^total: .*$", plan.stdout, re.M)[0]

    before = planned()
    out = run_cli(*args, "run_id=r13")
    assert out.returncode == 0, out.stderr[-2000:]
    runs = json.loads(calibration_file.read_text())["runs"]
    assert list(runs) == ["cpu|meta-llama/Llama-2-13b-chat-hf n_layers=2"]
    after = planned()
    assert after != before, (before, after)
    full = run_cli("model=llama2_13b_chat", "model.weights=random", "+sweep=debug", "mode=plan")
    assert full.returncode == 0 and "measured:" not in full.stdout  # 40 layers: not measured
    run = json.loads((tmp_path / "runs" / "r13" / "run.json").read_text())
    assert run["config"]["model"]["weights"] == "random"
    summary = (tmp_path / "runs" / "r13" / "summary.md").read_text()
    assert "REHEARSAL: random weights" in summary


def test_offline_lengths_count_each_templates_own_tokens():
    """Without a tokenizer the plan counts a shipped template's tokens: Mistral v0.3's is its
    three control tokens (<s>, [INST], [/INST]); Llama-3.1's adds a system header with dates."""
    from hallu.run.offline_plan import template_tokens

    assert template_tokens("mistral") == 3
    assert template_tokens("llama3") > template_tokens("gemma2") > template_tokens("mistral")


def test_plan_of_the_replication_prices_each_model_and_the_whole(run_cli, monkeypatch):
    monkeypatch.setenv("HF_HUB_OFFLINE", "1")
    out = run_cli("-m", "mode=plan", "model=" + ",".join(NEW), "cluster=lambda",
                  "cluster.gpu=h100", "+sweep=full", tiny=False)  # fmt: skip
    assert out.returncode == 0, out.stderr[-2000:]
    costs = [float(line.split("$")[1].split()[0].replace(",", ""))
             for line in out.stdout.splitlines() if line.startswith("cost: $")]  # fmt: skip
    assert len(costs) == 4 and all(c > 0 for c in costs)
    total = float(out.stdout.split("## all 4 studies:")[1].split("cost $")[1].split()[0])
    assert abs(total - sum(costs)) <= 0.005 * len(costs)  # each printed to the cent or finer
