"""--help is generated from the config directories; typos get a "did you mean" or nothing."""

from __future__ import annotations

import pytest

from hallu.cli import closest, edit_distance, key_docs
from hallu.config import CONF_DIR
from hallu.run.launch import main

GROUPS = sorted(p.name for p in CONF_DIR.iterdir() if p.is_dir() and not p.name.startswith("_"))


@pytest.mark.parametrize("flag", ["--help", "-h", "help"])
def test_help_lists_every_group_option_and_main_key(flag, capsys):
    assert main([flag]) == 0
    out = capsys.readouterr().out
    for g in GROUPS:
        line = next(ln for ln in out.splitlines() if ln.strip().startswith((f"{g}=", f"+{g}=")))
        for option in sorted(p.stem for p in (CONF_DIR / g).glob("*.yaml")):
            assert option in line, f"{g}={option} missing from --help"
    for default in ("toy*", "builtin*", "yes_vs_maybe*", "local*"):
        assert default in out
    assert "+sweep=NAME" in out and "-m/--multirun" in out and "--config-dir" in out
    for key, doc in key_docs(CONF_DIR / "config.yaml").items():
        if key not in ("defaults", "sweep", "behavior"):
            assert f"  {key} " in out and doc[:40] in out, key


def test_help_shows_a_users_own_options(tmp_path, capsys):
    (tmp_path / "model").mkdir()
    (tmp_path / "model" / "mine.yaml").write_text("name_or_path: tiny\n")
    assert main(["--config-dir", str(tmp_path), "--help"]) == 0
    line = next(ln for ln in capsys.readouterr().out.splitlines() if "model=NAME" in ln)
    assert "mine" in line and "toy*" in line


@pytest.mark.parametrize(
    "typo, advice",
    [
        ("modle=toy", "did you mean model=toy?"),
        ("sweep.postions=last:4", "did you mean sweep.positions=last:4?"),
        ("model=tyny", "did you mean model=tiny?"),
        ("swep=full", "did you mean +sweep=full?"),
        ("model.dtype=fp16", "did you mean model.dtype=float16?"),
        ("cluster.gpu=h10", "did you mean cluster.gpu=h100?"),
    ],
)
def test_typos_get_did_you_mean(typo, advice, capsys):
    assert main(["mode=plan", typo]) == 2
    err = capsys.readouterr().err
    assert advice in err and "+modle" not in err
    assert "choose model=" not in err  # advice about another key does not apply


def test_nothing_close_gets_no_suggestion(capsys):
    assert main(["mode=plan", "zzzzzz=1"]) == 2
    err = capsys.readouterr().err
    assert "did you mean" not in err and "--help" in err


def test_a_value_error_states_its_help_once(capsys):
    assert main(["mode=plan", "sweep.positions=last:0"]) == 2
    assert capsys.readouterr().err.count("aligned from the end") == 1


def test_edit_distance():
    assert edit_distance("modle", "model") == 2 and edit_distance("", "abc") == 3
    assert closest("tyny", ["tiny", "toy"]) == "tiny" and closest("xyzzy", ["tiny"]) is None
