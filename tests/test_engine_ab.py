"""benchmarks/engine_ab.py compares like with like: against this very commit the two engines give
the same logits to the last bit (so a ratio it prints is the engines', not the harness's)."""

from __future__ import annotations

import re
import subprocess
import sys
from pathlib import Path

import pytest

REPO = Path(__file__).resolve().parents[1]


@pytest.mark.slow
def test_ab_against_this_commit_is_bit_identical():
    head = subprocess.run(["git", "rev-parse", "HEAD"], cwd=REPO, capture_output=True, text=True)
    if head.returncode != 0:
        pytest.skip("not a git checkout")
    dirty = subprocess.run(["git", "status", "--porcelain", "hallu"], cwd=REPO, capture_output=True)
    if dirty.stdout.strip():
        pytest.skip("hallu/ has uncommitted changes: HEAD is not this tree's engine")
    out = subprocess.run(
        [sys.executable, "benchmarks/engine_ab.py", "--old", "HEAD", "--repeats", "2",
         "--threads", "1", "--case", "c"],
        cwd=REPO, capture_output=True, text=True, timeout=600,
    )  # fmt: skip
    assert out.returncode == 0, out.stderr[-2000:]
    line = re.search(r"old/new median ([\d.]+); max \|logit diff\| (\S+)", out.stdout)
    assert line is not None, out.stdout
    assert float(line.group(2)) == 0.0 and float(line.group(1)) > 0
