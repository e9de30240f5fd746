"""Every file under conf/ composes and validates; plan mode works on the tiny model."""

from __future__ import annotations

import pytest

from hallu.config import CONF_DIR, Config, compose
from hallu.run.launch import main

GROUPS = sorted(p.name for p in CONF_DIR.iterdir() if p.is_dir())


def _options(group: str) -> list[str]:
    return sorted(p.stem for p in (CONF_DIR / group).glob("*.yaml"))


def test_conf_has_the_documented_groups():
    assert set(GROUPS) >= {"model", "prompts", "metric", "cluster", "storage", "sweep"}
    assert {"tiny", "llama2_7b_chat", "llama2_13b_chat", "llama2_70b_chat"} <= set(
        _options("model")
    )
    assert {"full", "debug"} <= set(_options("sweep"))


@pytest.mark.parametrize(
    "override",
    [
        f"+{g}={o}" if g in ("sweep", "protocol") else f"{g}={o}"
        for g in GROUPS
        for o in _options(g)
    ],
)
def test_every_config_file_composes_and_validates(override):
    extra = ["prompts.path=builtin"] if override == "prompts=file" else []
    cfg = compose([override, *extra])
    assert isinstance(cfg, Config)


def test_default_sweep_is_small_and_full_sweeps_everything():
    default, full = compose([]).sweep, compose(["+sweep=full"]).sweep
    assert default.name == "default" and default.pairs == "all" and default.positions == "all"
    assert default.experiments == ["patching", "behavior"] and default.controls == []
    assert (full.layers, full.positions, full.pairs) == ("all", "all", "all")
    assert set(full.directions) == {"restore_confidence", "induce_tentativeness"}


@pytest.mark.parametrize("sweep", ["", "+sweep=debug", "+sweep=full"])
def test_plan_mode_prints_config_and_plan_without_a_model(sweep, capsys, tmp_path):
    args = ["mode=plan", f"storage.root={tmp_path}"] + ([sweep] if sweep else [])
    assert main(args) == 0
    out = capsys.readouterr().out
    assert "# resolved config" in out and "# work plan" in out and "FLOP" in out
    assert not any(tmp_path.iterdir()), "plan mode must not write results"


def test_full_plan_counts_every_cell(capsys):
    from hallu.run.prepare import prepare

    prep = prepare(compose(["+sweep=full"]))
    plan = prep.plan()
    lengths = [len(ids["uncertain"]) for ids in prep.token_ids.values()]
    real = [s for s in plan.shards if s.control is None]
    # 48 pairs x 4 layers x every position, for each of the 2 directions.
    assert sum(s.n_cells for s in real) == 2 * 4 * sum(lengths)
    # ... and the same shards again for each of the 4 controls (sweep.controls).
    assert len({s.shard_id for s in plan.shards}) == len(plan.shards) == 2 * 12 * 5


def test_readme_documents_the_result_schema():
    from hallu.config import CONF_DIR
    from hallu.store.schema import describe

    readme = (CONF_DIR.parent.parent / "README.md").read_text()
    assert describe() in readme, "README's schema table is out of date: paste schema.describe()"


def test_protocol_seed_sets_the_seeds_choices():
    cfg = compose(["+protocol=seed"])
    assert cfg.protocol == "seed" and cfg.prompts.chat_template is False
    assert cfg.sweep.positions == "last:1"
    assert (cfg.metric.confident_tokens, cfg.metric.tentative_tokens) == ([" is"], [" might"])
    assert cfg.model.dtype == "bfloat16" and cfg.metric.dtype == "bfloat16"
    assert compose([]).protocol == "default" and compose([]).metric.dtype == "float32"


@pytest.mark.parametrize(
    ("override", "named"),
    [
        ("analysis.min_pairs=1", "analysis.min_pairs"),
        ("analysis.max_excluded_share=1.5", "analysis.max_excluded_share"),
        ("analysis.locus_margin_layers=0", "analysis.locus_margin_layers"),
        ("analysis.equivalence_margin=0", "analysis.equivalence_margin"),
    ],
)
def test_bad_analysis_keys_exit_2_naming_the_key(override, named, capsys, tmp_path):
    assert main(["mode=plan", f"storage.root={tmp_path}", override]) == 2
    err = capsys.readouterr().err
    assert f"config key '{named}'" in err and "Traceback" not in err


def test_analysis_keys_reach_the_report_options():
    cfg = compose(["analysis.min_pairs=4", "analysis.locus_margin_layers=3"])
    from hallu.analysis.results import Options

    opts = Options().configured(cfg.analysis.model_dump())
    assert (opts.min_pairs, opts.locus_margin_layers, opts.max_excluded_share) == (4, 3, 0.2)
    assert opts.equivalence_margin == 0.05
