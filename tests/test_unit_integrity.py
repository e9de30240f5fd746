"""Behaviour answers and mechanism units under the contract of patching shards (issue 24, item 2):
planned ids, done markers with SHA-256, stray files ignored with a warning, missing ones exit 2,
damaged ones (truncated, 0-byte marker) named by the report and computed again on resume.

The store tests run on both stores (a directory, moto's S3 server on 127.0.0.1); the end-to-end
tests launch the toy model's behaviour experiment as a user would and break its run directory.
"""

from __future__ import annotations

import shutil
import subprocess
import sys
from pathlib import Path

import pyarrow as pa
import pytest

from hallu.behavior.schema import FOLDER as BEHAVIOR
from hallu.errors import UserError
from hallu.mechanism.schema import Unit
from hallu.run.units import repair, store_result, unfinished
from hallu.store.local import LocalStore
from hallu.store.s3 import S3Store

from .conftest import run_module, tiny_config

# --- the store layer, both stores -----------------------------------------------------------


@pytest.fixture(params=["local", "s3"])
def store(request, tmp_path):
    if request.param == "local":
        return LocalStore(tmp_path, "r")
    moto = request.getfixturevalue("moto")
    return S3Store(tiny_config(*moto.overrides("units")).storage, "r")


def _units() -> list[Unit]:
    return [Unit("capture", f"u{i}", ("c",), (0,)) for i in range(3)]


def _table(i: int) -> pa.Table:
    return pa.table({"unit_id": [f"u{i}"] * 50, "value": [float(i * 100 + k) for k in range(50)]})


def _stored(store) -> list[Unit]:
    units = _units()
    for i, u in enumerate(units):
        assert store_result(store, u, _table(i)) is False
    assert unfinished(store, units) == []
    return units


def _put(store, name: str, data: bytes | None) -> None:
    """Replace (bytes) or delete (None) `<run>/<name>` behind the store's back."""
    if isinstance(store, LocalStore):
        path = store.dir / name
        path.unlink() if data is None else path.write_bytes(data)
        return
    if data is None:
        store.client.delete_object(Bucket=store.bucket, Key=store._key(name))
    else:
        store.client.put_object(Bucket=store.bucket, Key=store._key(name), Body=data)


def test_a_stray_copy_is_ignored_with_a_warning_naming_it(store, capsys):
    _stored(store)
    folder = "mechanism/capture"
    whole = store.read_tables(folder, None)
    _put(store, f"{folder}/u1 (copy).parquet", store.read_file(f"{folder}/u1.parquet"))
    capsys.readouterr()
    again = store.read_tables(folder, None)
    assert again.num_rows == whole.num_rows == 150  # not 200: the copy is not read
    assert "ignored 1 file(s) that are no planned unit: mechanism/capture/u1 (copy).parquet" in (
        capsys.readouterr().err
    )


@pytest.mark.parametrize("fault", ["truncated", "empty marker", "file deleted"])
def test_a_damaged_unit_is_named_and_repaired(store, capsys, fault):
    units = _stored(store)
    folder = "mechanism/capture"
    data = store.read_file(f"{folder}/u1.parquet")
    if fault == "truncated":
        _put(store, f"{folder}/u1.parquet", data[: len(data) // 2])
    elif fault == "empty marker":
        _put(store, f"{folder}/_done/u1.json", b"")
    else:
        _put(store, f"{folder}/u1.parquet", None)
    with pytest.raises(UserError) as err:
        store.read_tables(folder, None)
    assert "u1: " in str(err.value) and "Fix: rerun the launch with run_id=r" in str(err.value)
    assert repair(store, units) == ["u1"]  # moved aside, so that the run computes it again
    assert "mechanism/capture/u1 failed its checks" in capsys.readouterr().err
    assert [u.unit_id for u in unfinished(store, units)] == ["u1"]
    assert store_result(store, units[1], _table(1)) is False
    assert store.read_tables(folder, None).num_rows == 150
    assert repair(store, units) == []


def test_a_planned_unit_missing_is_named(store):
    _stored(store)
    with pytest.raises(UserError, match=r"1 missing \(u9\)"):
        store.read_tables("mechanism/capture", None, ["u0", "u1", "u2", "u9"])
    assert store.read_tables("mechanism/capture", None, ["u0", "u2"]).num_rows == 100


# --- the behaviour experiment, end to end ---------------------------------------------------

ARGS = [
    "model=toy",
    "+sweep=behavior",
    "sweep.pairs=4",
    "behavior.n_samples=2",
    "behavior.max_new_tokens=6",
    "behavior.prompts_per_chunk=4",
]


def launch(root: Path, run_id: str) -> subprocess.CompletedProcess:
    cmd = [sys.executable, "-m", "hallu.launch", *ARGS, f"storage.root={root}", f"run_id={run_id}"]
    return subprocess.run(cmd, cwd=root.parent, capture_output=True, text=True, timeout=600)


def answers(run: Path) -> list[dict]:
    store = LocalStore(run.parent, run.name)
    cols = ["pair_id", "condition", "decoding", "sample_index", "response", "style_label"]
    return sorted(store.read_tables(BEHAVIOR, None).select(cols).to_pylist(), key=str)


def rate_line(proc: subprocess.CompletedProcess) -> str:
    return next(ln for ln in proc.stdout.splitlines() if ln.startswith("behavior (sampled"))


@pytest.fixture(scope="module")
def ref(tmp_path_factory):
    root = tmp_path_factory.mktemp("units") / "runs"
    root.mkdir()
    proc = launch(root, "ref")
    assert proc.returncode == 0, proc.stderr[-3000:]
    return root, answers(root / "ref"), rate_line(proc)


def copy_of(ref, run_id: str) -> Path:
    shutil.copytree(ref[0] / "ref", ref[0] / run_id)
    return ref[0] / run_id


def a_chunk(run: Path) -> Path:
    return sorted((run / BEHAVIOR).glob("*.parquet"))[0]


def report(run: Path) -> subprocess.CompletedProcess:
    return run_module("hallu.report", str(run), "--n-boot", "100", "--n-perm", "100")


@pytest.mark.slow
def test_copied_answer_file_is_ignored_and_changes_no_count(ref):
    run = copy_of(ref, "copy")
    chunk = a_chunk(run)
    shutil.copy(chunk, chunk.with_name(f"{chunk.stem} (copy).parquet"))
    proc = report(run)
    assert proc.returncode == 0, proc.stderr[-3000:]
    assert f"ignored 1 file(s) that are no planned unit: {BEHAVIOR}/{chunk.stem} (copy)" in (
        proc.stderr
    )
    assert answers(run) == ref[1]  # 36 answers, not 42
    rerun = launch(run.parent, "copy")
    assert rerun.returncode == 0, rerun.stderr[-3000:]
    assert rate_line(rerun) == ref[2]


@pytest.mark.slow
@pytest.mark.parametrize("fault", ["deleted", "truncated", "empty marker", "both deleted"])
def test_damaged_answers_are_named_by_the_report_and_rerun_on_resume(ref, fault):
    run = copy_of(ref, fault.replace(" ", "-"))
    chunk = a_chunk(run)
    marker = chunk.parent / "_done" / f"{chunk.stem}.json"
    if fault == "deleted":
        chunk.unlink()
    elif fault == "truncated":
        chunk.write_bytes(chunk.read_bytes()[:200])
    elif fault == "empty marker":
        marker.write_bytes(b"")
    else:
        chunk.unlink()
        marker.unlink()
    proc = report(run)
    assert proc.returncode == 2, proc.stderr[-3000:]
    assert "Traceback" not in proc.stderr
    (line,) = [ln for ln in proc.stderr.splitlines() if ln.startswith("hallu: error:")]
    assert chunk.stem in line and f"rerun the launch with run_id={run.name}" in line, line
    rerun = launch(run.parent, run.name)
    assert rerun.returncode == 0, rerun.stderr[-3000:]
    assert "1 behaviour chunk(s) run, 5 already done" in rerun.stderr
    assert answers(run) == ref[1]
    assert rate_line(rerun) == ref[2]
    assert report(run).returncode == 0
