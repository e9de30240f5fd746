"""End to end through `python -m hallu.launch`, in a temp directory."""

from __future__ import annotations

import json

import pyarrow.parquet as pq
import pytest

from hallu.config import TinySpec, compose
from hallu.engine.tiny import build_model, build_tokenizer
from hallu.run.prepare import prepare

pytestmark = pytest.mark.slow


def _only_run(tmp_path):
    runs = list((tmp_path / "runs").iterdir())
    assert len(runs) == 1
    return runs[0]


def test_default_run_is_the_toy_demo_with_parquet_figures_and_summary(run_cli, tmp_path):
    """The README's first line: the toy model, patching and behaviour, every pair and position."""
    proc = run_cli(tiny=False, in_subprocess=True)  # the command itself, as a user types it
    assert proc.returncode == 0, proc.stderr
    run = _only_run(tmp_path)
    meta = json.loads((run / "run.json").read_text())
    assert meta["config"]["model"]["name_or_path"] == "toy"
    assert meta["versions"]["torch"] and "plan" in meta
    for name in (
        "heatmap_restore_confidence.png",
        "heatmap_induce_tentativeness.png",
        "layers.png",
        "summary.md",
        "summary.json",
        "behavior/figure1.png",
        "behavior/summary.md",
    ):
        assert (run / name).stat().st_size > 0, name
    shards = sorted((run / "shards").glob("*.parquet"))
    rows = sum(pq.read_metadata(p).num_rows for p in shards)
    assert rows == prepare(compose([])).plan().n_cells > 48 * 4 * 2 * 10
    summary = json.loads((run / "summary.json").read_text())
    for s in summary["directions"].values():
        assert s["n_pairs"] == 48 and s["headline"] is not None and len(s["mean_restoration"]) == 4
        # The toy's planted bias: the certainty marker moves the metric by several logits.
        assert abs(s["gap_mean"]) > 1.0
    assert "band-mean restoration" in proc.stdout and "behavior (sampled answers)" in proc.stdout
    # Rerunning the same run id does nothing twice.
    again = run_cli(f"run_id={run.name}", tiny=False)
    assert again.returncode == 0, again.stderr
    assert "0 shard(s) run" in again.stderr and "0 behaviour chunk(s) run" in again.stderr
    assert sorted((run / "shards").glob("*.parquet")) == shards


def test_local_directory_model_gives_the_same_rows_as_tiny(run_cli, tmp_path):
    """A save_pretrained directory (model + tokenizer) loads through transformers."""
    tok = build_tokenizer()
    model = build_model(
        TinySpec(n_layers=4, d_model=64, n_heads=4, n_kv_heads=2, d_mlp=172), len(tok)
    )
    model.save_pretrained(tmp_path / "m")
    tok.save_pretrained(tmp_path / "m")
    common = ["+sweep=debug"]
    a = run_cli(*common, "run_id=a")
    b = run_cli(
        *common,
        "run_id=b",
        f"model.name_or_path={tmp_path / 'm'}",
        "model.tiny=null",
        "model.device=cpu",
    )
    assert a.returncode == 0 and b.returncode == 0, (a.stderr, b.stderr)
    ta = pq.read_table(tmp_path / "runs" / "a" / "shards").sort_by(
        [
            ("direction", "ascending"),
            ("pair_id", "ascending"),
            ("layer", "ascending"),
            ("position", "ascending"),
        ]
    )
    tb = pq.read_table(tmp_path / "runs" / "b" / "shards").sort_by(
        [
            ("direction", "ascending"),
            ("pair_id", "ascending"),
            ("layer", "ascending"),
            ("position", "ascending"),
        ]
    )
    assert ta.num_rows == tb.num_rows > 0
    assert ta["token"].to_pylist() == tb["token"].to_pylist()
    diff = max(
        abs(x - y)
        for x, y in zip(ta["patched"].to_pylist(), tb["patched"].to_pylist(), strict=True)
    )
    assert diff < 1e-5


def test_raw_text_mode_feeds_no_chat_template(run_cli, tmp_path):
    proc = run_cli("+sweep=debug", "prompts.chat_template=false", "run_id=raw")
    assert proc.returncode == 0, proc.stderr
    tokens = pq.read_table(tmp_path / "runs" / "raw" / "shards")["token"].to_pylist()
    assert "[/INST]" not in tokens and "?" in tokens
