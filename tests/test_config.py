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
    [f"+sweep={o}" if g == "sweep" else f"{g}={o}" for g in GROUPS for o in _options(g)],
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
    # ... and the same shards again for each of the 3 controls (sweep.controls).
    assert len({s.shard_id for s in plan.shards}) == len(plan.shards) == 2 * 12 * 4


def test_readme_documents_the_result_schema():
    from hallu.config import CONF_DIR
    from hallu.store.schema import describe

    readme = (CONF_DIR.parent / "README.md").read_text()
    assert describe() in readme, "README's schema table is out of date: paste schema.describe()"
