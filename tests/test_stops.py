"""What a user or the world can do to a running launch ends with one line and the right exit code,
never a traceback (issue 24, item 6): Ctrl-C (130) and SIGTERM (143) say how to resume, a full
disk names the file and leaves no temp file, a damaged weights file fails its study only.

Each launch is a real `python -m hallu.launch` process on the shipped toy model.
"""

from __future__ import annotations

import json
import os
import resource
import shutil
import signal
import subprocess
import sys
import time
from pathlib import Path

import pytest

from hallu.engine.toy import TOY_DIR
from hallu.store import verify
from hallu.store.local import LocalStore

TOY = ["model=toy", "sweep.experiments=[patching]", "sweep.positions=last:3"]


def launch_cmd(root: Path, run_id: str, *args: str) -> list[str]:
    return [sys.executable, "-m", "hallu.launch", *TOY, *args, f"storage.root={root}",
            f"run_id={run_id}"]  # fmt: skip


def one_line(stderr: str) -> str:
    assert "Traceback" not in stderr, stderr[-3000:]
    lines = [ln for ln in stderr.splitlines() if ln.startswith("hallu: ") and "stopped" in ln
             or ln.startswith("hallu: error:")]  # fmt: skip
    assert len(lines) == 1, stderr[-3000:]
    return lines[0]


def no_temp_files(run: Path) -> None:
    assert not [p for p in run.rglob("*.tmp")], sorted(run.rglob("*.tmp"))


@pytest.mark.slow
@pytest.mark.parametrize(("sig", "code", "name"), [(signal.SIGINT, 130, "Ctrl-C"),
                                                   (signal.SIGTERM, 143, "SIGTERM")])  # fmt: skip
def test_a_signal_mid_run_is_one_line_saying_how_to_resume(tmp_path, sig, code, name):
    root, args = tmp_path / "runs", ["sweep.pairs=16", "sweep.pairs_per_shard=1"]
    cmd = launch_cmd(root, "s", *args)
    proc = subprocess.Popen(cmd, cwd=tmp_path, stdout=subprocess.PIPE, stderr=subprocess.PIPE,
                            text=True)  # fmt: skip
    done = root / "s" / "done"
    deadline = time.monotonic() + 300
    while not (done.is_dir() and any(done.iterdir())) and proc.poll() is None:
        assert time.monotonic() < deadline, "no shard stored in 300 s"
        time.sleep(0.02)
    os.kill(proc.pid, sig)
    out, err = proc.communicate(timeout=120)
    assert proc.returncode == code, err[-3000:]
    line = one_line(err)
    assert f"stopped by {name}" in line and "rerun with run_id=s to resume" in line, line
    no_temp_files(root / "s")
    assert not (root / "s" / ".lease").exists(), "the lease is released"
    kept = len(list(done.iterdir()))
    assert 0 < kept < 32

    again = subprocess.run(cmd, cwd=tmp_path, capture_output=True, text=True, timeout=600)
    assert again.returncode == 0, again.stderr[-3000:]
    assert f"{32 - kept} shard(s) run, {kept} already done" in again.stderr
    assert len(verify.verified(LocalStore(root, "s")).tables) == 32


def _small_files() -> None:
    """This process may write no file over 12 KiB (as a full disk would refuse): EFBIG."""
    signal.signal(signal.SIGXFSZ, signal.SIG_IGN)
    resource.setrlimit(resource.RLIMIT_FSIZE, (12 * 1024, 12 * 1024))


@pytest.mark.slow
def test_a_full_disk_names_the_file_leaves_no_temp_file_and_resumes(tmp_path):
    """RLIMIT_FSIZE stands in for a full disk: the same failed write (EFBIG instead of ENOSPC),
    without root or a mount. Shards of the toy are ~11 KB, its figures larger."""
    root = tmp_path / "runs"
    cmd = launch_cmd(root, "f", "sweep.pairs=4")
    full = subprocess.run(cmd, cwd=tmp_path, capture_output=True, text=True, timeout=600,
                          preexec_fn=_small_files)  # fmt: skip
    assert full.returncode == 2, full.stderr[-3000:]
    line = one_line(full.stderr)
    assert "cannot write " in line and "(File too large)" in line, line
    assert "the results stored so far are kept" in line and "rerun with run_id=f to resume" in line
    no_temp_files(root / "f")
    again = subprocess.run(cmd, cwd=tmp_path, capture_output=True, text=True, timeout=600)
    assert again.returncode == 0, again.stderr[-3000:]
    assert (root / "f" / "summary.md").is_file()


@pytest.mark.slow
def test_damaged_weights_fail_their_study_and_the_multirun_goes_on(tmp_path):
    bad = tmp_path / "bad"
    shutil.copytree(TOY_DIR, bad)
    weights = bad / "model.safetensors"
    os.truncate(weights, weights.stat().st_size // 2)
    root = tmp_path / "runs"
    cmd = [sys.executable, "-m", "hallu.launch", "-m", *TOY, "sweep.pairs=2",
           f"model.name_or_path={bad},{TOY_DIR}", f"storage.root={root}", "run_id=mr"]  # fmt: skip
    proc = subprocess.run(cmd, cwd=tmp_path, capture_output=True, text=True, timeout=600)
    assert proc.returncode == 2, proc.stderr[-3000:]
    line = one_line(proc.stderr)
    assert f"model.name_or_path={bad}: a weight file is damaged" in line, line
    index = json.loads((root / "mr" / "multirun.json").read_text())
    status = [s["status"] for s in index["studies"]]
    assert status[0].startswith("error: model.name_or_path=") and status[1] == "done", status
    good = index["studies"][1]["run_id"]
    assert (root / "mr" / good / "summary.md").is_file()
