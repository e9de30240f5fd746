"""Bad input: one clear message naming the key or file and the fix, exit code 2, no results."""

from __future__ import annotations

from pathlib import Path

import pytest

from hallu.run.launch import main

from .conftest import TINY


def _write(path: Path, text: str) -> Path:
    path.write_text(text, encoding="utf-8")
    return path


CSV_HEADER = "pair_id,condition,text\n"


@pytest.mark.parametrize(
    "args, expected",
    [
        (["model=gpt5"], ["model=gpt5", "tiny", "llama2_13b_chat", "model.name_or_path"]),
        (["sweep.layers=[0,7]"], ["sweep.layers", "layer 7", "3 layers", "0..2"]),
        (["sweep.layers=[-4]"], ["sweep.layers", "layer -4", "out of range"]),
        (["+sweep.layerz=[1]"], ["unknown config key 'sweep.layerz'"]),
        (["foo=1"], ["unknown config key 'foo'"]),
        (["sweep.batch_size=0"], ["sweep.batch_size", "greater than or equal to 1"]),
        (["sweep.positions=middle"], ["sweep.positions", "last:K"]),
        (["sweep.positions=[0,99]"], ["sweep.positions", "position 99", "outside pair"]),
        (["sweep.pairs=500"], ["sweep.pairs=500", "48 pairs"]),
        (["sweep.pairs=[nope]"], ["sweep.pairs", "unknown pair id", "nope"]),
        (["sweep.directions=[sideways]"], ["sweep.directions", "restore_confidence"]),
        (["metric.confident_tokens=[' zyzzyva']"], ["metric.confident_tokens", "zyzzyva"]),
        (["prompts.path=/no/such/file.csv"], ["prompts.path=/no/such/file.csv", "no such file"]),
        (["prompts=file"], ["prompts.path", "has no value"]),
        (["mode=fly"], ["mode", "mode=run or mode=plan"]),
        (
            ["model.name_or_path=/no/such/dir"],
            ["model.name_or_path=/no/such/dir", "local directory"],
        ),
    ],
)
def test_bad_config_is_one_clear_error(args, expected, capsys, tmp_path):
    root = tmp_path / "runs"
    code = main([*TINY, "model.tiny.n_layers=3", f"storage.root={root}", *args])
    err = capsys.readouterr().err
    assert code == 2
    assert err.startswith("hallu: error:") and "Traceback" not in err
    for piece in expected:
        assert piece in err, f"{piece!r} not in {err!r}"
    assert not root.exists(), "a rejected run must write nothing"


def _bad_prompt_files(tmp: Path) -> list[tuple[Path, list[str], list[str]]]:
    ok_rows = "a,certain,The sky is definitely blue\na,uncertain,The sky is probably blue\n"
    return [
        (_write(tmp / "empty.csv", ""), [], ["empty.csv", "no rows"]),
        (_write(tmp / "header_only.csv", CSV_HEADER), [], ["header_only.csv", "no rows"]),
        (
            _write(tmp / "nocol.csv", "pair,condition,text\n" + ok_rows),
            [],
            ["nocol.csv", "missing column", "pair_id", "prompts.columns.pair_id"],
        ),
        (
            _write(tmp / "label.csv", CSV_HEADER + "a,sure,x\n"),
            [],
            ["label.csv", "line 2", "'sure'", "prompts.conditions"],
        ),
        (
            _write(tmp / "lonely.csv", CSV_HEADER + "a,certain,The sky is definitely blue\n"),
            [],
            ["lonely.csv", "pair 'a'", "uncertain"],
        ),
        (
            _write(tmp / "dup.csv", CSV_HEADER + ok_rows + "a,certain,again\n"),
            [],
            ["dup.csv", "line 4", "second 'certain'"],
        ),
        (
            _write(
                tmp / "bad.jsonl", '{"pair_id": "a", "condition": "certain", "text": "x"}\n{oops\n'
            ),
            [],
            ["bad.jsonl", "line 2", "not valid JSON"],
        ),
        (
            _write(tmp / "commas.csv", CSV_HEADER + "a,certain,Yes, it is\n"),
            [],
            ["commas.csv", "line 2", "more fields"],
        ),
        (_write(tmp / "prompts.txt", CSV_HEADER + ok_rows), [], ["prompts.txt", "prompts.format"]),
        # "quite possibly" is two tokens where "definitely" is one: absolute positions can't align.
        (
            _write(
                tmp / "unaligned.csv",
                CSV_HEADER + "sky,certain,The sky is definitely blue\n"
                "sky,uncertain,The sky is quite possibly blue\n",
            ),
            ["sweep.positions=all"],
            ["pair 'sky'", "tokens", "last:K"],
        ),
    ]


def test_bad_prompt_files_are_one_clear_error(capsys, tmp_path):
    for path, extra, expected in _bad_prompt_files(tmp_path):
        root = tmp_path / "runs"
        code = main(
            [*TINY, f"prompts.path={path}", "sweep.pairs=all", f"storage.root={root}", *extra]
        )
        err = capsys.readouterr().err
        assert code == 2, (path.name, err)
        assert "Traceback" not in err
        for piece in expected:
            assert piece in err, f"{path.name}: {piece!r} not in {err!r}"
        assert not root.exists()


@pytest.mark.slow
def test_cli_exit_code_and_no_traceback(run_cli, tmp_path):
    proc = run_cli("sweep.layers=[0,99]", in_subprocess=True)  # the process's exit code
    assert proc.returncode == 2
    assert "sweep.layers" in proc.stderr and "layer 99" in proc.stderr
    assert "Traceback" not in proc.stderr
    assert not (tmp_path / "runs").exists()
