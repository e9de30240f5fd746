"""benchmarks/driver_throughput.py runs (a tiny count): the production Ray driver stores every
synthetic shard to a local run directory and to moto's S3 server. No timing is asserted here;
the numbers live in docs/benchmarks.md."""

from __future__ import annotations

import os
import re
import subprocess
import sys

import pytest

from .cluster_fixtures import TEST_ENV
from .conftest import REPO

pytest.importorskip("ray")
pytest.importorskip("moto")


# The benchmark script starts its own local Ray and moto server, not the session's: it is run as
# the user runs it, and what it measures includes them.
@pytest.mark.slow
def test_driver_throughput_benchmark_stores_every_shard_in_both_stores():
    env = {**os.environ, **TEST_ENV, "PYTHONPATH": str(REPO)}
    proc = subprocess.run(
        [sys.executable, "benchmarks/driver_throughput.py", "--shards", "24", "--rows", "200"],
        cwd=REPO,
        env=env,
        capture_output=True,
        text=True,
        timeout=600,
    )
    assert proc.returncode == 0, proc.stderr[-3000:]
    rows = re.findall(r"^\| (local|moto) \| (\d+) \| ([\d.]+) \|", proc.stdout, re.M)
    assert [(k, n) for k, n, _ in rows] == [("local", "24"), ("moto", "24")], proc.stdout
    assert all(float(rate) > 0 for *_, rate in rows)
    assert "load average before" in proc.stdout and "200 rows" in proc.stdout
