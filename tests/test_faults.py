"""Faults on a local run directory (issue 11): each ends with the undisturbed run's rows (exit 0)
or one line naming the problem and the fix (exit 2), never a traceback or a different headline.

Every launch and report runs as a subprocess (`python -m hallu.launch`, `python -m hallu.report`),
as a user would; the rows are compared with an undisturbed run's, cell for cell.
"""

from __future__ import annotations

import json
import os
import shutil
import subprocess
import sys
import time
from pathlib import Path

import pyarrow as pa
import pyarrow.parquet as pq
import pytest

from hallu.errors import UserError
from hallu.prompts import builtin_path
from hallu.store import integrity, verify
from hallu.store.files import create_new
from hallu.store.local import LocalStore

from .cluster_fixtures import sorted_rows
from .conftest import TINY, tiny_config

SMALL = [
    *TINY,
    "model.tiny.n_layers=3",
    "model.tiny.d_model=32",
    "model.tiny.d_mlp=64",
    "sweep.experiments=[patching]",
    "sweep.positions=last:2",
    "sweep.pairs=4",
    "sweep.pairs_per_shard=2",
]


def launch(root: Path, run_id: str, *args: str, prompts: Path | None = None, **kw):
    cmd = [sys.executable, "-m", "hallu.launch", *SMALL, f"storage.root={root}", f"run_id={run_id}"]
    if prompts is not None:
        cmd += ["prompts=file", f"prompts.path={prompts}"]
    return subprocess.run(
        [*cmd, *args], cwd=root.parent, capture_output=True, text=True, timeout=600, **kw
    )


def report(run_dir: Path):
    cmd = [sys.executable, "-m", "hallu.report", str(run_dir), "--n-boot", "100", "--n-perm", "100"]
    return subprocess.run(cmd, capture_output=True, text=True, timeout=600)


def one_line_error(proc, *needles: str) -> str:
    """The run ended with exit 2 and exactly one error line, naming each needle; no traceback."""
    assert proc.returncode == 2, proc.stderr[-3000:]
    assert "Traceback" not in proc.stderr, proc.stderr[-3000:]
    errors = [ln for ln in proc.stderr.splitlines() if ln.startswith("hallu: error:")]
    assert len(errors) == 1, proc.stderr[-3000:]
    for n in needles:
        assert n in errors[0], errors[0]
    return errors[0]


def rows(root: Path, run_id: str):
    return sorted_rows(verify.read_verified(LocalStore(root, run_id)))


def headline(run_dir: Path) -> dict:
    s = json.loads((run_dir / "summary.json").read_text())
    return {d: v["headline"] for d, v in s["directions"].items()}


@pytest.fixture(scope="module")
def ref(tmp_path_factory):
    """An undisturbed run (root, run id, its rows); tests copy its directory and break the copy."""
    root = tmp_path_factory.mktemp("faults") / "runs"
    root.mkdir()
    proc = launch(root, "ref")
    assert proc.returncode == 0, proc.stderr[-3000:]
    return root, rows(root, "ref")


def copy_of(ref, run_id: str) -> Path:
    root, _ = ref
    shutil.copytree(root / "ref", root / run_id)
    return root / run_id


def a_shard(run_dir: Path) -> Path:
    return sorted((run_dir / "shards").glob("*.parquet"))[0]


@pytest.mark.slow
def test_stray_copy_of_a_shard_is_ignored_with_a_warning_naming_it(ref):
    root, expected = ref
    run = copy_of(ref, "stray")
    shard = a_shard(run)
    shutil.copy(shard, shard.with_name(f"{shard.stem} (copy).parquet"))
    proc = launch(root, "stray")
    assert proc.returncode == 0, proc.stderr[-3000:]
    assert "(copy).parquet" in proc.stderr and "0 shard(s) run, 4 already done" in proc.stderr
    rep = report(run)
    assert rep.returncode == 0, rep.stderr[-3000:]
    assert f"ignored 1 file(s) that are no planned shard: shards/{shard.stem} (copy)" in rep.stderr
    assert rows(root, "stray").equals(expected)
    assert headline(run) == headline(root / "ref")


@pytest.mark.slow
@pytest.mark.parametrize("fault", ["deleted", "flipped", "truncated"])
def test_damaged_shard_is_named_by_the_report_and_recomputed_on_resume(ref, fault):
    root, expected = ref
    run = copy_of(ref, fault)
    shard = a_shard(run)
    if fault == "deleted":
        shard.unlink()
    elif fault == "flipped":
        # 64 bytes inside the first data page of the `patched` column: values change, the file
        # still parses without its checks.
        meta = pq.ParquetFile(shard).metadata.row_group(0)
        col = next(
            meta.column(i)
            for i in range(meta.num_columns)
            if meta.column(i).path_in_schema == "patched"
        )
        data = bytearray(shard.read_bytes())
        start = col.data_page_offset + 24
        data[start : start + 64] = bytes(b ^ 0xFF for b in data[start : start + 64])
        shard.write_bytes(bytes(data))
    else:
        data = shard.read_bytes()
        shard.write_bytes(data[: len(data) // 2])
    one_line_error(report(run), shard.stem, f"run_id={fault}")
    proc = launch(root, fault)
    assert proc.returncode == 0, proc.stderr[-3000:]
    assert "1 shard(s) run, 3 already done" in proc.stderr
    assert rows(root, fault).equals(expected)
    kept = {p.suffix for p in (run / "quarantine").iterdir()}
    assert ".json" in kept and (fault == "deleted" or ".parquet" in kept), "damaged files kept"
    assert report(run).returncode == 0


def test_flipped_bytes_fail_the_page_checksums_even_without_a_marker(tmp_path):
    """A run from before markers has only the Parquet page checksums; they catch flipped bytes."""
    from .test_store import _table

    data = bytearray(integrity.encode(_table(50)))
    meta = pq.ParquetFile(pa.BufferReader(bytes(data))).metadata
    col = meta.row_group(0).column(meta.schema.names.index("patched"))
    start = col.data_page_offset + 24
    data[start : start + 16] = bytes(b ^ 0xFF for b in data[start : start + 16])
    with pytest.raises(integrity.ShardUnreadable, match="not readable Parquet"):
        integrity.decode("s", bytes(data), None, None)


@pytest.mark.slow
def test_edited_prompt_file_refuses_the_resume_naming_what_changed(tmp_path):
    root = tmp_path / "runs"
    prompts = tmp_path / "prompts.csv"
    shutil.copy(builtin_path(), prompts)
    assert launch(root, "p", prompts=prompts).returncode == 0
    before = rows(root, "p")
    text = prompts.read_text()
    prompts.write_text(text.replace("definitely", "certainly", 1))
    line = one_line_error(launch(root, "p", prompts=prompts), "prompts (", "token_ids (")
    assert "run_id=p" in line and "Fix:" in line
    assert rows(root, "p").equals(before), "the stored results are kept, unchanged"
    prompts.write_text(text)
    proc = launch(root, "p", prompts=prompts)
    assert proc.returncode == 0 and "0 shard(s) run, 4 already done" in proc.stderr


@pytest.mark.slow
def test_swapped_weights_directory_refuses_the_resume(tmp_path):
    """The shipped toy model copied to a directory; its weights then replaced by others of the
    same names, shapes and size."""
    from safetensors.torch import load_file, save_file

    from hallu.engine.toy import TOY_DIR

    model = tmp_path / "model"
    shutil.copytree(TOY_DIR, model)
    args = ["model=toy", f"model.name_or_path={model}", "metric=yes_vs_maybe"]
    root = tmp_path / "runs"
    cmd = [a for a in SMALL if not a.startswith(("model", "metric"))]
    run = [sys.executable, "-m", "hallu.launch", *cmd, *args, f"storage.root={root}", "run_id=w"]
    first = subprocess.run(run, capture_output=True, text=True, timeout=600)
    assert first.returncode == 0, first.stderr[-3000:]
    tensors = load_file(model / "model.safetensors")
    name = sorted(tensors)[0]
    tensors[name] = tensors[name] * 1.01
    save_file(tensors, model / "model.safetensors", metadata={"format": "pt"})
    one_line_error(
        subprocess.run(run, capture_output=True, text=True, timeout=600), "weights (dir:"
    )


def _lease_note(run: Path, pid: int) -> None:
    """The note a launch holding `run` writes (hallu/store/lease.py), with `pid` as its owner."""
    note = {"token": "other", "pid": pid, "host": os.uname().nodename, "started": 0}
    (run / ".lease").write_text(json.dumps({**note, "renewed": time.time(), "ttl": 120}))


@pytest.mark.slow
def test_second_launch_on_a_held_run_is_refused_and_a_stale_lease_taken_over(ref):
    root, expected = ref
    # Held: the owner is alive on this host and renewed just now. This test process stands in
    # for the first launch (a real concurrent pair races with how fast the first one finishes;
    # test_faults_ray.py runs two real launches).
    held = copy_of(ref, "held")
    _lease_note(held, os.getpid())
    second = launch(root, "held")
    one_line_error(second, "run_id=held is being written by another launch", f"pid {os.getpid()}")
    assert json.loads((held / ".lease").read_text())["token"] == "other", "the lease is kept"
    assert rows(root, "held").equals(expected), "nothing was written"

    # A lease left by a launch that died (its pid is gone) is taken over.
    stale = copy_of(ref, "stale")
    dead = subprocess.run(
        [sys.executable, "-c", "import os; print(os.getpid())"], capture_output=True, text=True
    ).stdout.strip()
    _lease_note(stale, int(dead))
    proc = launch(root, "stale")
    assert proc.returncode == 0, proc.stderr[-3000:]
    assert f"its lease is stale (its process {dead} on this host is gone)" in proc.stderr
    assert rows(root, "stale").equals(expected)
    assert not (stale / ".lease").exists(), "released at the end"


def test_run_json_is_created_exclusively_and_never_replaced(tmp_path):
    store = LocalStore(tmp_path, "r")
    store.create(tiny_config(root=tmp_path), {})
    before = (store.dir / "run.json").read_bytes()
    with pytest.raises(UserError, match="different config .*sweep.pairs"):
        store.create(tiny_config("sweep.pairs=3", root=tmp_path), {})
    with pytest.raises(FileExistsError):
        create_new(store.dir / "run.json", b"{}")
    assert (store.dir / "run.json").read_bytes() == before


@pytest.mark.parametrize("umask", [0o022, 0o027])
def test_result_files_get_the_process_umask(tmp_path, umask):
    root = tmp_path / "runs"
    proc = launch(root, "m", preexec_fn=lambda: os.umask(umask))
    assert proc.returncode == 0, proc.stderr[-3000:]
    files = [p for p in (root / "m").rglob("*") if p.is_file()]
    assert len(files) >= 10  # run.json, 4 shards, 4 markers, summary, figures
    modes = {p.relative_to(root).as_posix(): oct(p.stat().st_mode & 0o777) for p in files}
    assert set(modes.values()) == {oct(0o666 & ~umask)}, modes


@pytest.mark.slow
def test_prompt_longer_than_the_context_is_refused_at_plan_time(tmp_path):
    import csv

    with open(builtin_path()) as f:
        rows = list(csv.DictReader(f))
    rows[0]["text"] = " ".join(["definitely"] * 3000)
    prompts = tmp_path / "long.csv"
    with open(prompts, "w", newline="") as f:
        w = csv.DictWriter(f, fieldnames=list(rows[0]))
        w.writeheader()
        w.writerows(rows)
    root = tmp_path / "runs"
    for mode in ("mode=plan", "mode=run"):
        proc = launch(root, "long", mode, prompts=prompts)
        line = one_line_error(proc, f"pair {rows[0]['pair_id']!r} (certain) is", "context of 512")
        assert "3003 tokens" in line, line
    assert not root.exists(), "nothing written"


def test_released_lease_leaves_no_empty_run_directory(tmp_path):
    """A launch that took the lease but stopped before run.json (a model that failed to load)
    leaves nothing; a run that has run.json keeps its directory."""
    store = LocalStore(tmp_path, "gone")
    store.lease.acquire("gone")
    assert (store.dir / ".lease").exists()
    store.lease.release()
    assert not store.dir.exists()
    store.lease.acquire("gone")
    store.create(tiny_config(root=tmp_path), {})
    store.lease.release()
    assert sorted(p.name for p in store.dir.iterdir()) == ["done", "run.json", "shards"]
