"""Which store a run uses: `store_for` picks one for a config, `store_at` opens an existing run
from its location (a directory, or `s3://bucket/prefix/run_id`) for reading.

Apart from hallu/store/base.py because both stores import base (`ReadsShards`, the contract):
the factory, which imports both stores, sits above them.
"""

from __future__ import annotations

from pathlib import Path

from hallu.config import StorageCfg
from hallu.store.base import Store

READ_RETRY_S = 20.0


def store_for(storage: StorageCfg, run_id: str) -> Store:
    """The store a run's config asks for; an S3 bucket is checked reachable and writable first."""
    if storage.kind == "s3":
        from hallu.store.s3 import S3Store

        return S3Store.open(storage, run_id)
    from hallu.store.local import LocalStore

    return LocalStore(storage.root, run_id)


def store_at(location: str | Path, check: bool = True) -> Store:
    """An existing run, for reading: a run directory or `s3://bucket/prefix/run_id`.

    For S3 the endpoint, region and credentials come from boto3's standard chain (e.g.
    AWS_ENDPOINT_URL for an S3-compatible store), as for any other boto3 client; the bucket is
    checked first (`check`), and every request waits out at most READ_RETRY_S of outage.
    """
    text = str(location)
    if text.startswith("s3://"):
        from hallu.store.s3 import S3Store

        bucket, _, key = text.removeprefix("s3://").strip("/").partition("/")
        prefix, _, run_id = key.rpartition("/")
        # A reader waits out a short outage, not a launch's storage.retry_seconds (300 s).
        cfg = StorageCfg(kind="s3", bucket=bucket, prefix=prefix, retry_seconds=READ_RETRY_S)
        store = S3Store(cfg, run_id)
        if check:  # a wrong bucket or endpoint: one line, in seconds
            store.check_readable()
        return store
    from hallu.store.local import LocalStore

    path = Path(text).expanduser().resolve()
    return LocalStore(path.parent, path.name)
