"""The report reads a run through the narrow projection (hallu/store/narrow.py), and that changes
no number: the same report, headline and scorecard as from every column of every row.

The memory check runs benchmarks/aggregate_memory.py at two small sizes, N and 4N pairs, and
compares the peak of Arrow's memory pool (the bytes Arrow allocated, counted exactly by the
pool, unlike RSS): its growth per added row must stay near the projection's size per row, well
under what holding every stored column costs (measured in the same test, so the check can fail).
No timing is asserted.
"""

from __future__ import annotations

import importlib.util
import json
import os
import re
import subprocess
import sys
from pathlib import Path

import numpy as np
import pyarrow as pa
import pytest

from hallu.analysis import behavior_check
from hallu.analysis.results import Options
from hallu.analysis.verdicts import scorecard_json
from hallu.report.sections import report_context
from hallu.store import narrow, verify
from hallu.store.reader import open_run

REPO = Path(__file__).resolve().parents[1]
SCRIPT = REPO / "benchmarks" / "aggregate_memory.py"


def _bench():
    spec = importlib.util.spec_from_file_location("aggregate_memory", SCRIPT)
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


@pytest.fixture(scope="module")
def run_dir(tmp_path_factory):
    root = tmp_path_factory.mktemp("agg")
    store, rows = _bench().synthesize(root, "syn", pairs=8, layers=6, positions=7, controls=2)
    assert rows == 8 * 6 * 7 * 2 * 3
    return store


def test_the_report_holds_only_the_narrow_columns_dictionary_encoded(run_dir):
    run = open_run(run_dir)
    assert run.table.column_names == list(narrow.COLUMNS)
    assert run.table.num_rows == 8 * 6 * 7 * 2 * 3
    for c in narrow.STRINGS:  # one dictionary per column, shared by every shard's chunk
        assert pa.types.is_dictionary(run.table.schema.field(c).type), c
        dicts = {tuple(ch.dictionary.to_pylist()) for ch in run.table[c].chunks}
        assert len(dicts) == 1, c
    full = verify.read_verified(run_dir)
    assert run.table.to_pylist() == full.select(list(narrow.COLUMNS)).to_pylist()


def _markdown(doc) -> str:
    return re.sub(r"Report made \S+", "Report made <t>", doc.markdown())


def test_the_narrow_projection_changes_no_number_of_the_report(run_dir):
    opts = Options(n_boot=200, n_perm=200)
    run = open_run(run_dir)
    narrow_ctx = report_context(run, opts)
    run.table = verify.read_verified(run_dir)  # every column, as before the projection
    full_ctx = report_context(run, opts)
    assert narrow_ctx.headline == full_ctx.headline
    assert _markdown(narrow_ctx.doc) == _markdown(full_ctx.doc)
    assert scorecard_json(narrow_ctx.card) == scorecard_json(full_ctx.card)
    assert len(narrow_ctx.headline) == 3


def _old_tracking_metric(table: pa.Table) -> dict:
    """The per-row loop metric_tracking used before: every experiment row, the last one wins."""
    real = table.filter(pa.compute.is_null(table["control"]))
    metric = {}
    for row in real.select(["direction", "pair_id", "clean", "corrupted"]).to_pylist():
        up = row["direction"] == "restore_confidence"
        src, tgt = ("certain", "uncertain") if up else ("uncertain", "certain")
        metric[(row["pair_id"], src)] = row["clean"]
        metric[(row["pair_id"], tgt)] = row["corrupted"]
    return metric


def test_metric_tracking_takes_each_pairs_last_row_as_the_row_loop_did(run_dir):
    table = verify.read_verified(run_dir)
    rng = np.random.default_rng(1)
    shuffled = table.take(rng.permutation(table.num_rows))  # directions interleaved at random
    clean = pa.array(rng.normal(size=table.num_rows).astype(np.float32))  # rows differ
    shuffled = shuffled.set_column(shuffled.schema.get_field_index("clean"), "clean", clean)
    metric = {}
    for row in behavior_check._last_per_pair(shuffled).to_pylist():
        up = row["direction"] == "restore_confidence"
        src, tgt = ("certain", "uncertain") if up else ("uncertain", "certain")
        metric[(row["pair_id"], src)] = row["clean"]
        metric[(row["pair_id"], tgt)] = row["corrupted"]
    assert metric == _old_tracking_metric(shuffled)
    assert len(metric) == 2 * 8


def _arrow_peak(pairs: int, root: Path, env: dict) -> dict:
    cmd = [sys.executable, str(SCRIPT), "--pairs", str(pairs), "--layers", "8", "--positions"]
    cmd += ["12", "--controls", "1", "--n-boot", "50", "--n-perm", "50", "--phases", "report"]
    cmd += ["--root", str(root)]
    proc = subprocess.run(cmd, capture_output=True, text=True, env=env, timeout=900)
    assert proc.returncode == 0, proc.stderr[-2000:]
    return json.loads(proc.stdout)


@pytest.mark.slow
def test_memory_grows_with_the_projection_not_with_every_column(tmp_path):
    env = {
        **os.environ,
        "PYTHONPATH": os.pathsep.join([str(REPO), os.environ.get("PYTHONPATH", "")]),
    }
    small, large = (_arrow_peak(p, tmp_path, env) for p in (16, 64))
    rows = large["rows"] - small["rows"]
    assert rows == (64 - 16) * 8 * 12 * 2 * 2
    per_row = (
        large["phases"][0]["arrow_peak_bytes"] - small["phases"][0]["arrow_peak_bytes"]
    ) / rows
    assert large["phases"][0]["columns_held"] == len(narrow.COLUMNS)
    # What every stored column of those rows costs in Arrow (the table before the projection).
    run = tmp_path / "synthetic-64x8x12x1"
    full = verify.read_verified(_store(run))
    full_per_row = full.nbytes / full.num_rows
    assert full_per_row > 150  # the stored schema is wide: ids, tokens, anchors, ...
    assert per_row < 0.6 * full_per_row, (per_row, full_per_row)


def _store(path: Path):
    from hallu.store.local import LocalStore

    return LocalStore(path.parent, path.name)
