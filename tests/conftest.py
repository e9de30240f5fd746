"""Shared fixtures: tiny models built in code, a tmp storage root, and a CLI runner."""

from __future__ import annotations

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
