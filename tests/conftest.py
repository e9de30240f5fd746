"""Shared fixtures: tiny models built in code, a tmp storage root, and a CLI runner."""

from __future__ import annotations

import subprocess
import sys
from pathlib import Path

import pytest

from hallu.config import Config, compose

REPO = Path(__file__).resolve().parent.parent


def tiny_config(*overrides: str, root: Path | None = None) -> Config:
    """The default config with a smaller tiny model (fast) and results under `root`."""
    base = ["model.tiny.n_layers=3", "model.tiny.d_model=32", "model.tiny.d_mlp=64"]
    if root is not None:
        base.append(f"storage.root={root}")
    return compose(base + list(overrides))


@pytest.fixture
def run_cli(tmp_path: Path):
    """Run `python -m hallu.launch ARGS` in a subprocess, with results under tmp_path/runs."""

    def run(*args: str, root: bool = True) -> subprocess.CompletedProcess:
        cmd = [sys.executable, "-m", "hallu.launch", *args]
        if root:
            cmd.append(f"storage.root={tmp_path / 'runs'}")
        return subprocess.run(cmd, cwd=tmp_path, capture_output=True, text=True, timeout=300)

    return run
