"""A resume accepts the keys that change how a run works, not what it computes (issue 24, item 7):
sweep.batch_size and sweep.memory_gb (what a user lowers after running out of memory), cluster.*
and verbose; it refuses the others, naming the changed keys and the ones it accepts."""

from __future__ import annotations

import shutil

from hallu.store import verify
from hallu.store.local import LocalStore

SMALL = [
    "model.tiny.n_layers=2",
    "sweep.experiments=[patching]",
    "sweep.positions=last:1",
    "sweep.pairs=2",
    "sweep.pairs_per_shard=1",
    "run_id=r",
]


def test_resume_accepts_lowered_batch_size_and_memory_and_refuses_a_result_key(run_cli, tmp_path):
    first = run_cli(*SMALL, "sweep.batch_size=64")
    assert first.returncode == 0, first.stderr[-3000:]
    store = LocalStore(tmp_path / "runs", "r")
    expected = verify.read_verified(store).num_rows
    lost = sorted(store.done_shards())[0]
    (store.done_dir / f"{lost}.json").unlink()  # as if the run had stopped before this shard
    (store.shard_dir / f"{lost}.parquet").unlink()

    again = run_cli(*SMALL, "sweep.batch_size=2", "sweep.memory_gb=0.5", "verbose=true")
    assert again.returncode == 0, again.stderr[-3000:]
    assert "resuming with sweep.batch_size (64 -> 2), sweep.memory_gb (None -> 0.5)" in (
        again.stderr
    )
    assert "1 shard(s) run, 3 already done" in again.stderr
    assert verify.read_verified(store).num_rows == expected

    before = sorted(p.name for p in store.shard_dir.iterdir())
    refused = run_cli(*SMALL, "sweep.batch_size=2", "sweep.pairs_per_shard=2")
    assert refused.returncode == 2, refused.stderr[-3000:]
    (line,) = [ln for ln in refused.stderr.splitlines() if ln.startswith("hallu: error:")]
    assert "changed: sweep.pairs_per_shard (1 -> 2)" in line, line
    assert "sweep.batch_size (" not in line, "an accepted key is not named as refused"
    assert "a resume may change only sweep.batch_size, sweep.memory_gb, cluster.*, verbose" in line
    assert sorted(p.name for p in store.shard_dir.iterdir()) == before
    shutil.rmtree(store.dir)


def test_a_run_from_an_older_hallu_resumes_when_only_newer_keys_at_their_defaults_differ(
    run_cli, tmp_path
):
    """A key a newer hallu added (absent from the older run.json) at its default changes nothing
    that run computed; the same key at another value is a change and is refused."""
    import json

    first = run_cli(*SMALL)
    assert first.returncode == 0, first.stderr[-3000:]
    store = LocalStore(tmp_path / "runs", "r")
    meta_path = store.dir / "run.json"
    meta = json.loads(meta_path.read_text())
    del meta["config"]["model"]["weights"]  # as an older hallu wrote it: no such key yet
    meta["study_hash"] = "0123456789ab"  # and its hash, over fewer keys, differs
    meta_path.write_text(json.dumps(meta))
    lost = sorted(store.done_shards())[0]
    (store.done_dir / f"{lost}.json").unlink()
    (store.shard_dir / f"{lost}.parquet").unlink()

    again = run_cli(*SMALL)
    assert again.returncode == 0, again.stderr[-3000:]
    assert "keys added since, at their defaults: model.weights" in again.stderr
    assert "1 shard(s) run, 3 already done" in again.stderr

    del meta["config"]["sweep"]["positions"]  # absent, and this launch's value is no default
    meta_path.write_text(json.dumps(meta))
    refused = run_cli(*SMALL)
    assert refused.returncode == 2, refused.stderr[-3000:]
    assert "changed: sweep.positions (None -> 'last:1')" in refused.stderr
