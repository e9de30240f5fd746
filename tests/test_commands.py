"""`hallu COMMAND ...`: one command line over the launcher, report, status, bench and jobs.

Run as `python -m hallu`, the same function the `hallu` console script calls (the editable
install's script may point at another checkout, so the test does not rely on it).
"""

from __future__ import annotations

import json
import os
import re
import subprocess
import sys
from pathlib import Path

import pyarrow.parquet as pq
import pytest
import yaml

from hallu import commands

from .cluster_fixtures import free_port

REPO = Path(__file__).resolve().parents[1]
SUBCOMMANDS = ["run", "plan", "report", "status", "bench", "jobs"]
SMALL = ["+sweep=debug", "model=tiny"]


def hallu(*args: str, module: str = "hallu") -> subprocess.CompletedProcess:
    path = os.pathsep.join([str(REPO), os.environ.get("PYTHONPATH", "")])
    return subprocess.run(
        [sys.executable, "-m", module, *args],
        capture_output=True, text=True, timeout=600, env={**os.environ, "PYTHONPATH": path},
    )  # fmt: skip


def test_help_lists_every_subcommand_and_the_script_is_this_entry():
    proc = hallu("--help")
    assert proc.returncode == 0, proc.stderr
    for name in SUBCOMMANDS:
        line = next(ln for ln in proc.stdout.splitlines() if ln.strip().startswith(name + " "))
        assert len(line.split(None, 1)[1]) > 10, f"{name} has no one-line description"
    # [project.scripts] (tomllib is 3.11+; the project supports 3.10)
    script = re.search(r'^hallu = "([^"]+)"', (REPO / "pyproject.toml").read_text(), re.M)
    assert script and script.group(1) == "hallu.commands:cli"
    assert "from hallu.commands import cli" in (REPO / "hallu" / "__main__.py").read_text()


def test_unknown_command_and_bare_overrides_say_what_to_type(capsys):
    assert commands.main(["rn", "+sweep=debug"]) == 2
    assert "did you mean: hallu run +sweep=debug" in capsys.readouterr().err
    assert commands.main(["+sweep=debug"]) == 2
    assert "did you mean: hallu run +sweep=debug" in capsys.readouterr().err
    assert commands.main([]) == 2 and "usage: hallu COMMAND" in capsys.readouterr().err


def _rows(run_dir: Path):
    """A run's result rows, without the run id and the timing metadata (when it was computed)."""
    tables = [pq.read_table(p) for p in sorted((run_dir / "shards").glob("*.parquet"))]
    assert tables, f"no shards in {run_dir}"
    rows = [t.drop_columns(["run_id"]).replace_schema_metadata(None) for t in tables]
    return sorted(str(r) for t in rows for r in t.to_pylist())


@pytest.mark.slow
def test_hallu_run_is_python_m_hallu_launch_and_status_reads_it(tmp_path):
    root = tmp_path / "runs"
    new = hallu("run", *SMALL, "run_id=new", f"storage.root={root}")
    old = hallu(*SMALL, "run_id=old", f"storage.root={root}", module="hallu.launch")
    assert new.returncode == 0 and old.returncode == 0, new.stderr[-2000:] + old.stderr[-2000:]
    assert _rows(root / "new") == _rows(root / "old")
    # The console's lines are kept beside run.json.
    log = (root / "new" / "console.log").read_text()
    assert "hallu: run new ->" in log and "shard(s) run, 0 already done" in log
    status = hallu("status", str(root / "new"))
    assert status.returncode == 0, status.stderr
    assert "patching shards" in status.stdout and "4/4 done (100%)" in status.stdout
    # A shard whose done marker is gone is not done: status counts markers, as resume does.
    next((root / "new" / "done").glob("*.json")).unlink()
    assert "3/4 done (75%)" in hallu("status", str(root / "new")).stdout
    # A multirun's folder: each study of its index (hallu/run/multirun.py), started or not.
    index = {"version": 1, "argv": [], "studies": [
        {"run_id": d, "overrides": [], "dir": d, "status": "pending"} for d in ("old", "later")
    ]}  # fmt: skip
    (root / "multirun.json").write_text(json.dumps(index))
    both = hallu("status", str(root))
    assert both.returncode == 0, both.stderr
    assert "run old" in both.stdout and "4/4 done (100%)" in both.stdout
    assert "run later" in both.stdout and "not started" in both.stdout


def test_status_of_a_missing_run_is_one_line(tmp_path, capsys):
    assert commands.main(["status", str(tmp_path / "nope")]) == 2
    err = capsys.readouterr().err
    assert err.count("\n") == 1 and "no run.json there" in err and "Traceback" not in err


def test_cfg_job_prints_the_plans_config_and_hydras_other_flags_name_the_fix(capsys):
    assert commands.main(["run", "--cfg", "job", *SMALL, "seed=7"]) == 0
    printed = capsys.readouterr().out
    cfg = yaml.safe_load(printed.split("# resolved config", 1)[1])
    assert cfg["seed"] == 7 and cfg["sweep"]["name"] == "debug" and cfg["model"]["tiny"]
    hydras = (["--cfg", "hydra"], ["--cfg=all"], ["--info"], ["--shell-completion"], ["-cn", "x"])
    for flag in hydras:
        assert commands.main(["run", *flag, *SMALL]) == 2, flag
        err = capsys.readouterr().err
        assert err.startswith("hallu: error: ") and err.count("\n") == 1, err
        assert "--cfg job" in err or "--help" in err or "--config-dir" in err, err


def test_plan_is_run_with_mode_plan(capsys):
    assert commands.main(["plan", *SMALL]) == 0
    out = capsys.readouterr().out
    assert "mode: plan" in out and "# work plan" in out


def test_jobs_without_a_job_server_is_one_clear_error():
    dead = f"http://127.0.0.1:{free_port()}"
    proc = hallu("jobs", "list", "--address", dead)
    assert proc.returncode == 2 and "no Ray job server answers" in proc.stderr, proc.stderr
    assert "Traceback" not in proc.stderr
    refused = hallu("jobs", "submit", *SMALL)
    assert refused.returncode == 2 and "cluster=lambda or cluster=runpod" in refused.stderr
    assert not (REPO / "jobs").exists(), "hallu jobs replaces the jobs/ scripts"


def test_console_copy_keeps_each_lines_last_drawing(capsys):
    from hallu.run.console import clean, tee

    with tee() as copy:
        print("bar 1/2\rbar 2/2")
        print("\x1b[31mhallu: red\x1b[0m", file=sys.stderr)
    assert clean(copy.getvalue()) == "bar 2/2\nhallu: red\n"
    assert "bar 1/2" in capsys.readouterr().out  # the terminal still got every drawing
