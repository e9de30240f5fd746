"""storage=s3 against moto's server mode on 127.0.0.1: the guarantees of a local run directory."""

from __future__ import annotations

import json
import pickle
import socket
import threading

import pytest

from hallu.errors import UserError
from hallu.run.launch import main
from hallu.run.local import run_local
from hallu.run.prepare import prepare
from hallu.store import schema
from hallu.store.local import LocalStore
from hallu.store.s3 import S3Store

from .cluster_fixtures import (
    BUCKET,
    TEST_ENV,
    free_port,
    pipe,
    service_env,
    sorted_rows,
)
from .conftest import TINY, tiny_config
from .test_store import _table


def _store(moto, prefix: str, run_id: str = "r", endpoint: str | None = None) -> S3Store:
    cfg = tiny_config(*moto.overrides(prefix))
    if endpoint:
        cfg = cfg.model_copy(
            update={"storage": cfg.storage.model_copy(update={"endpoint_url": endpoint})}
        )
    return S3Store(cfg.storage, run_id)


def test_run_json_first_shards_never_replaced_and_read_back_with_the_schema(moto):
    cfg = tiny_config(*moto.overrides("unit"))
    store = S3Store.open(cfg.storage, "r")
    store.create(cfg, {"note": "first"})
    store.write_shard("s1", _table(3))
    with pytest.raises(FileExistsError, match="never replaced"):
        store.write_shard("s1", _table(5))
    # The refusal is the server's: a second conditional PUT of the same key gets 412.
    with pytest.raises(Exception, match="PreconditionFailed"):
        moto.client().put_object(
            Bucket=moto.bucket, Key="unit/r/shards/s1.parquet", Body=b"x", IfNoneMatch="*"
        )
    back = store.read_results()
    assert back.schema == schema.SCHEMA and back["layer"].to_pylist() == [0, 1, 2]
    assert store.done_shards() == {"s1"}
    assert moto.keys("unit/r/") == [
        "unit/r/done/s1.json",
        "unit/r/run.json",
        "unit/r/shards/s1.parquet",
    ]
    meta = moto.client().get_object(Bucket=moto.bucket, Key="unit/r/run.json")["Body"].read()
    assert json.loads(meta)["study_hash"] == cfg.study_hash()
    for secret in (TEST_ENV["AWS_ACCESS_KEY_ID"], TEST_ENV["AWS_SECRET_ACCESS_KEY"]):
        assert secret.encode() not in meta
        assert secret.encode() not in pickle.dumps(store), "a pickled store carries no secrets"
    # A rerun with another config under the same run id is refused, and nothing is lost.
    with pytest.raises(UserError, match="run_id=r.*different config"):
        S3Store(tiny_config("sweep.pairs=3", *moto.overrides("unit")).storage, "r").create(
            tiny_config("sweep.pairs=3"), {}
        )
    assert store.done_shards() == {"s1"}


def test_shard_object_without_marker_is_adopted_not_replaced(moto):
    """A worker died between its shard PUT and its marker PUT: the object is complete (one PUT),
    so the retry keeps it and adds the marker. An object that does not read back whole is moved
    to quarantine/ (kept) and replaced by the retry's."""
    from hallu.store import integrity

    store = _store(moto, "adopt")
    store.create(tiny_config(), {})
    earlier = integrity.encode(_table(2))
    moto.client().put_object(Bucket=moto.bucket, Key="adopt/r/shards/s9.parquet", Body=earlier)
    store.write_shard("s9", _table(2))
    body = moto.client().get_object(Bucket=moto.bucket, Key="adopt/r/shards/s9.parquet")["Body"]
    assert body.read() == earlier
    marker = json.loads(
        moto.client().get_object(Bucket=moto.bucket, Key="adopt/r/done/s9.json")["Body"].read()
    )
    assert marker["adopted_existing_object"] is True
    assert store.done_shards() == {"s9"}

    moto.client().put_object(
        Bucket=moto.bucket, Key="adopt/r/shards/s8.parquet", Body=b"half a shar"
    )
    store.write_shard("s8", _table(3))
    assert store.read_shard("s8")["layer"].to_pylist() == [0, 1, 2]
    kept = [k for k in moto.keys("adopt/r/quarantine/") if k.endswith(".parquet")]
    assert len(kept) == 1 and "s8." in kept[0]
    assert (
        moto.client().get_object(Bucket=moto.bucket, Key=kept[0])["Body"].read() == b"half a shar"
    )


def test_transient_connection_failures_are_retried(moto):
    """The first two connections are dropped by a proxy in front of moto; the write succeeds."""
    with _FlakyProxy(moto.url, drop_first=2) as proxy:
        store = _store(moto, "flaky", endpoint=proxy.url)
        store.write_shard("s1", _table(2))
    assert proxy.dropped == 2 and proxy.forwarded >= 1
    assert _store(moto, "flaky").done_shards() == {"s1"}


def test_cli_run_to_s3_matches_the_local_run_and_logs_no_secret(moto, tmp_path, capsys):
    args = [
        *TINY,
        "model.tiny.n_layers=3",
        "model.tiny.d_model=32",
        "model.tiny.d_mlp=64",
        "+sweep=debug",
        "run_id=cli",
        *moto.overrides("cli"),
    ]
    assert main(args) == 0
    out = capsys.readouterr()
    keys = moto.keys("cli/cli/")
    for name in ("run.json", "summary.md", "summary.json", "layers.png"):
        assert f"cli/cli/{name}" in keys
    assert any(k.endswith("heatmap_restore_confidence.png") for k in keys)
    cfg = tiny_config("+sweep=debug", *moto.overrides("cli"))
    plan = prepare(cfg).plan()
    got = S3Store(cfg.storage, "cli").read_results()
    ref = LocalStore(tmp_path, "ref")
    run_local(cfg, plan, ref, {})
    assert sorted_rows(got).equals(sorted_rows(ref.read_results()))
    for secret in (TEST_ENV["AWS_ACCESS_KEY_ID"], TEST_ENV["AWS_SECRET_ACCESS_KEY"]):
        assert secret not in out.out + out.err
    # Rerun: everything is done, nothing is written twice.
    assert main(args) == 0
    assert f"0 shard(s) run, {len(plan.shards)} already done" in capsys.readouterr().err


def test_missing_bucket_is_one_clear_error(moto, tmp_path, capsys):
    args = ["+sweep=debug", *moto.overrides("x"), "storage.bucket=no-such-bucket"]
    assert main(args) == 2
    err = capsys.readouterr().err
    assert err.startswith("hallu: error: storage.bucket=no-such-bucket: bucket does not exist")
    assert "Traceback" not in err


def test_unreachable_endpoint_stops_before_anything_starts(tmp_path, capsys, monkeypatch):
    """Exit 2 and one message naming storage.endpoint_url, before Ray or any model starts."""
    import ray

    monkeypatch.chdir(tmp_path)
    dead = f"http://127.0.0.1:{free_port()}"
    args = [
        "+sweep=debug",
        "cluster=ray_local",
        "storage=s3",
        f"storage.bucket={BUCKET}",
        f"storage.endpoint_url={dead}",
        f"storage.root={tmp_path / 'runs'}",
    ]
    with service_env():
        assert main(args) == 2
    err = capsys.readouterr().err
    assert err.startswith(f"hallu: error: storage.endpoint_url={dead}: cannot reach")
    assert "nothing was started" in err and "Traceback" not in err
    assert not ray.is_initialized() and "patching" not in err, "no Ray, no model"
    assert list(tmp_path.iterdir()) == [], "no files written"


class _FlakyProxy:
    """A TCP proxy on 127.0.0.1 that closes its first `drop_first` connections unanswered."""

    def __init__(self, target: str, drop_first: int):
        host, port = target.removeprefix("http://").split(":")
        self.target = (host, int(port))
        self.drop_first, self.dropped, self.forwarded = drop_first, 0, 0
        self.sock = socket.create_server(("127.0.0.1", 0))
        self.url = f"http://127.0.0.1:{self.sock.getsockname()[1]}"
        self.open = True

    def __enter__(self):
        threading.Thread(target=self._accept, daemon=True).start()
        return self

    def __exit__(self, *exc):
        self.open = False
        self.sock.close()

    def _accept(self):
        while self.open:
            try:
                conn, _ = self.sock.accept()
            except OSError:
                return
            if self.dropped < self.drop_first:
                self.dropped += 1
                conn.close()
                continue
            self.forwarded += 1
            upstream = socket.create_connection(self.target)
            for a, b in ((conn, upstream), (upstream, conn)):
                threading.Thread(target=pipe, args=(a, b), daemon=True).start()


def test_behaviour_chunks_and_figures_land_in_s3_and_resume(moto, capsys):
    args = [
        *moto.overrides("beh"),
        "+sweep=behavior",
        "sweep.pairs=2",
        "run_id=b",
        "behavior.decoding=[greedy]",
        "behavior.max_new_tokens=4",
        *TINY,
        "model.tiny.n_layers=2",
    ]
    assert main(args) == 0, capsys.readouterr().err
    keys = moto.keys("beh/b/")
    chunks = [k for k in keys if k.startswith("beh/b/behavior/responses/")]
    assert chunks and "beh/b/run.json" in keys
    for name in ("figure1.png", "metric_check.png", "summary.json", "summary.md"):
        assert f"beh/b/behavior/{name}" in keys, name
    assert main(args) == 0
    assert "0 behaviour chunk(s) run" in capsys.readouterr().err
    assert [k for k in moto.keys("beh/b/") if "/responses/" in k] == chunks
