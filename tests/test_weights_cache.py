"""The node-local weights cache (hallu/engine/weights.py): one download per node, whatever the
number of workers asking at once; a failed download leaves nothing that looks finished."""

from __future__ import annotations

import multiprocessing as mp
import time
from pathlib import Path

import pytest

from hallu.engine.weights import node_cached


def _fetch_into(cache: str) -> str:
    """A download that takes a while and leaves a trace of every time it ran."""
    out = Path(cache) / "snapshot"
    with open(Path(cache) / "downloads.log", "a") as f:
        f.write("x\n")
    time.sleep(0.5)
    out.mkdir(exist_ok=True)
    (out / "model.safetensors").write_bytes(b"weights")
    return str(out)


def _worker(cache: str, results) -> None:
    results.put(node_cached(cache, "org/model@main", lambda: _fetch_into(cache)))


def test_four_workers_on_a_node_download_once(tmp_path):
    cache = str(tmp_path / "cache")
    ctx = mp.get_context("spawn")
    results = ctx.Queue()
    procs = [ctx.Process(target=_worker, args=(cache, results)) for _ in range(4)]
    for p in procs:
        p.start()
    for p in procs:
        p.join(60)
        assert p.exitcode == 0
    paths = {results.get(timeout=5) for _ in procs}
    assert paths == {str(Path(cache) / "snapshot")}
    assert (Path(cache) / "downloads.log").read_text() == "x\n"  # one download, not four
    assert (Path(cache) / "snapshot" / "model.safetensors").read_bytes() == b"weights"


def test_a_failed_download_is_retried(tmp_path):
    cache = str(tmp_path)

    def broken() -> str:
        raise OSError("connection reset")

    with pytest.raises(OSError, match="connection reset"):
        node_cached(cache, "org/model@main", broken)
    assert not list(tmp_path.glob("*.done"))
    assert node_cached(cache, "org/model@main", lambda: _fetch_into(cache)).endswith("snapshot")
    # Finished: later calls read the marker and never fetch.
    assert node_cached(cache, "org/model@main", broken).endswith("snapshot")


def test_cache_dir_is_a_model_setting():
    from .conftest import tiny_config

    assert tiny_config("model.cache_dir=/tmp/x").model.cache_dir == "/tmp/x"
    assert tiny_config().model.cache_dir is None
