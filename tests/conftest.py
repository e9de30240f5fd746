"""Shared fixtures: tiny models built in code, a tmp storage root, and a CLI runner."""

from __future__ import annotations

import contextlib
import subprocess
import sys
from pathlib import Path

import pytest

from hallu.config import Config, compose

REPO = Path(__file__).resolve().parent.parent


# The tests' baseline: the tiny random model with the study's metric, and a small patching-only
# sweep (the default sweep is the toy model's demo, with behaviour, every pair and position).
TINY = ["model=tiny", "metric=is_vs_might"]
SMALL_SWEEP = ["sweep.experiments=[patching]", "sweep.positions=last:8", "sweep.pairs=12"]


def tiny_config(*overrides: str, root: Path | None = None) -> Config:
    """A smaller tiny model, the small sweep unless +sweep=NAME is given, results in `root`."""
    base = [*TINY, "model.tiny.n_layers=3", "model.tiny.d_model=32", "model.tiny.d_mlp=64"]
    if not any(o.startswith("+sweep=") for o in overrides):
        base += SMALL_SWEEP
    if root is not None:
        base.append(f"storage.root={root}")
    return compose(base + list(overrides))


@pytest.fixture(autouse=True)
def calibration_file(tmp_path_factory, monkeypatch) -> Path:
    """Each test's own calibration file: every finished run writes its rates there
    (hallu/run/progress.py), never to the user's cache."""
    path = tmp_path_factory.mktemp("calibration") / "calibration.json"
    monkeypatch.setenv("HALLU_CALIBRATION", str(path))
    return path


@pytest.fixture
def run_cli(tmp_path: Path, capsys: pytest.CaptureFixture, monkeypatch: pytest.MonkeyPatch):
    """Run `python -m hallu.launch ARGS` with results under tmp_path/runs, in tmp_path.

    By default in this process: `hallu.run.launch.main`, which the module's `cli()` passes to
    sys.exit, with sys.argv as the command would set it and stdout/stderr captured; an uncaught
    exception is printed as the interpreter would and gives exit code 1. The same exit code and
    output as the subprocess, without its 3-5 s of interpreter start and imports per call.
    in_subprocess=True runs the real `python -m hallu.launch`, for tests about the command itself.
    """

    def run(
        *args: str, root: bool = True, tiny: bool = True, in_subprocess: bool = False
    ) -> subprocess.CompletedProcess:
        """tiny=True: on the tiny random model and the study's metric, unless args pick a model."""
        pick = tiny and not any(a.startswith("model=") for a in args)
        argv = [*(TINY if pick else []), *args]
        if root:
            argv.append(f"storage.root={tmp_path / 'runs'}")
        cmd = [sys.executable, "-m", "hallu.launch", *argv]
        if in_subprocess:
            return subprocess.run(cmd, cwd=tmp_path, capture_output=True, text=True, timeout=300)
        return _in_process(cmd, tmp_path, capsys, monkeypatch)

    return run


def exit_code(call) -> int:
    """What the interpreter would exit with after `call()`: its return value (0 for None), a
    SystemExit's code, or 1 with the traceback printed for an uncaught exception."""
    import traceback

    try:
        code = call()
    except SystemExit as exit_:
        code = exit_.code
        if code is not None and not isinstance(code, int):
            print(code, file=sys.stderr)
            return 1
    except Exception:
        traceback.print_exc()
        return 1
    return 0 if code is None else code


def _in_process(cmd: list[str], cwd: Path, capsys, monkeypatch) -> subprocess.CompletedProcess:
    """`cmd` (python -m hallu.launch ARGS) as hallu.launch's cli() runs it, in this process."""
    from hallu.run.launch import main

    before = capsys.readouterr()  # the test's own output so far is put back after the run
    with monkeypatch.context() as m:
        m.chdir(cwd)
        m.setattr(sys, "argv", [str(REPO / "hallu" / "launch.py"), *cmd[3:]])
        code = exit_code(lambda: main(cmd[3:]))
    out, err = capsys.readouterr()
    sys.stdout.write(before.out)
    sys.stderr.write(before.err)
    return subprocess.CompletedProcess(cmd, code, out, err)


# One moto S3 server per pytest run, started on first use and shared by every test that can
# share it (tests/cluster_fixtures.py has the services themselves).


@pytest.fixture(scope="session")
def moto_session():
    """moto's S3 server on 127.0.0.1 for the whole run; tests take `moto` (a bucket each)."""
    from .cluster_fixtures import moto_server, service_env

    with contextlib.ExitStack() as stack:
        with service_env():  # only while it starts: the environment is not the session's
            m = stack.enter_context(moto_server())
        yield m


@pytest.fixture
def moto(moto_session):
    """The session's moto server with a new bucket of this test's own (unique name, so tests
    stay independent of each other and of their order), the fake credentials set meanwhile."""
    from .cluster_fixtures import service_env

    with service_env():
        yield moto_session.with_new_bucket()


def run_module(module: str, *args: str) -> subprocess.CompletedProcess:
    """`python -m MODULE ARGS` in this process: runpy runs the module's __main__ as `-m` does
    (sys.argv set), stdout/stderr captured; an uncaught exception is printed and gives exit 1.
    For tests about what the command does, not about the interpreter it starts."""
    import io
    import runpy

    out, err = io.StringIO(), io.StringIO()
    argv = sys.argv
    sys.argv = [module, *args]
    try:

        def as_main() -> None:
            runpy.run_module(module, run_name="__main__", alter_sys=True)

        with contextlib.redirect_stdout(out), contextlib.redirect_stderr(err):
            code = exit_code(as_main)
    finally:
        sys.argv = argv
    cmd = [sys.executable, "-m", module, *args]
    return subprocess.CompletedProcess(cmd, code, out.getvalue(), err.getvalue())
