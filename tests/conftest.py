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


@pytest.fixture
def run_cli(tmp_path: Path):
    """Run `python -m hallu.launch ARGS` in a subprocess, with results under tmp_path/runs."""

    def run(*args: str, root: bool = True, tiny: bool = True) -> subprocess.CompletedProcess:
        """tiny=True: on the tiny random model and the study's metric, unless args pick a model."""
        pick = tiny and not any(a.startswith("model=") for a in args)
        cmd = [sys.executable, "-m", "hallu.launch", *(TINY if pick else []), *args]
        if root:
            cmd.append(f"storage.root={tmp_path / 'runs'}")
        return subprocess.run(cmd, cwd=tmp_path, capture_output=True, text=True, timeout=300)

    return run


# One moto S3 server and one Ray cluster per pytest run, started on first use and shared by
# every test that can share them (tests/cluster_fixtures.py has the services themselves).


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


@pytest.fixture(scope="session")
def ray_cluster():
    """A 2-CPU Ray head on 127.0.0.1 for the whole run (`ray start --head`, no dashboard, no
    token auth), started with the fake AWS credentials so that its workers can reach moto.
    Tests join it with `cluster_fixtures.ray_connected` (in this process) or pass
    `cluster=ray cluster.address=<gcs_address>` to a launch. Tests that kill the cluster's own
    processes or need another kind of cluster start their own (and say why)."""
    pytest.importorskip("ray")
    from .cluster_fixtures import ray_head, service_env

    with contextlib.ExitStack() as stack:
        with service_env():  # the head (and so its workers) keeps a copy; this process not
            head = stack.enter_context(ray_head(num_cpus=2, token=False, dashboard=False))
        yield head
