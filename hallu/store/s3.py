"""Runs in S3 (or an S3-compatible store): the `Store` contract (base.py) over objects.

Layout of `s3://<bucket>/<prefix>/<run_id>/`:
  run.json                     written first, never replaced
  .lease                       the driver that owns the run (hallu/store/lease.py)
  shards/<shard_id>.parquet    one PUT each, refused if the key exists (`IfNoneMatch="*"`)
  done/<shard_id>.json         its done marker (rows, bytes, SHA-256), written after the shard;
                               `done_shards` lists these
  quarantine/                  shards that failed their checks, moved aside on resume (kept)
  summary.md, summary.json, *.png   written by the summary

A shard is uploaded in one request, so no partial object is ever visible. If a shard object exists
without its marker (a worker died between the two PUTs, or a retried PUT had already landed), it
is kept if it reads back whole (it is a result of the same deterministic shard), else moved to
quarantine/ and replaced by ours. Every request is retried on transient errors (connection
refused or reset, timeouts, 5xx, throttling) for up to `storage.retry_seconds`, so a store that is
down for a while stalls the run instead of ending it. Credentials come from boto3's standard chain
(environment, profile, instance role) and are never stored here, so pickling a store (to send it
to a Ray worker) carries none; each process builds its own client.
"""

from __future__ import annotations

import json
import sys
import threading
import time
import uuid
from collections.abc import Callable
from datetime import datetime, timezone
from typing import Any, TypeVar

import pyarrow as pa

from hallu.config import Config, StorageCfg
from hallu.errors import UserError
from hallu.store import integrity
from hallu.store.base import ReadsShards
from hallu.store.lease import Lease, parse_note, unreadable
from hallu.store.study import run_metadata, same_study

T = TypeVar("T")
# Answers the callers act on (absent key, condition failed, concurrent write): not failures.
EXPECTED = ("404", "NoSuchKey", "NotFound", "PreconditionFailed", "412")
CONFLICT = ("ConditionalRequestConflict", "409")
THROTTLED = (
    "Throttling",
    "ThrottlingException",
    "SlowDown",
    "RequestTimeout",
    "RequestLimitExceeded",
)


class S3Store(ReadsShards):
    """A run under an S3 prefix; implements hallu.store.base.Store."""

    def __init__(self, cfg: StorageCfg, run_id: str):
        if not cfg.bucket:
            raise UserError(
                "storage=s3 needs a bucket: set storage.bucket=NAME (and storage.endpoint_url=URL "
                "for an S3-compatible store)"
            )
        if not run_id:
            raise UserError("an s3:// run location needs its run id: s3://BUCKET/PREFIX/RUN_ID")
        self.cfg = cfg
        self.run_id = run_id
        self.bucket: str = cfg.bucket
        self.base = "/".join(p for p in (cfg.prefix.strip("/"), run_id) if p)
        self.dir = f"s3://{self.bucket}/{self.base}"  # for messages; not a local path
        self._client: Any = None
        self.lease = S3Lease(self)

    @classmethod
    def open(cls, cfg: StorageCfg, run_id: str) -> S3Store:
        """A store whose bucket was checked reachable and writable (before any model loads)."""
        store = cls(cfg, run_id)
        store.preflight()
        return store

    # -- boto3 plumbing ------------------------------------------------------------------------

    def __getstate__(self) -> dict[str, Any]:
        return {**self.__dict__, "_client": None}  # a client is per process (and holds secrets)

    @property
    def attempt_s(self) -> float:
        """The socket timeout of one request, and how far past storage.retry_seconds a call may
        run: derived from retry_seconds (5 to 60 s) so a short deadline is not outlived by
        botocore's 120 s default read timeout, while a healthy transfer never idles that long
        (and retry_seconds=0, no waiting out outages, still lets a shard upload finish)."""
        return min(max(self.cfg.retry_seconds, 5.0), 60.0)

    def _make_client(self, max_attempts: int, connect_timeout: float) -> Any:
        import boto3
        from botocore.config import Config as BotoConfig
        from botocore.exceptions import BotoCoreError

        # botocore's "standard" mode retries each request a few times with backoff; `_retry`
        # keeps retrying transient failures for storage.retry_seconds on top of that, and cuts
        # both off at its deadline.
        try:
            return boto3.session.Session().client(
                "s3",
                region_name=self.cfg.region,
                endpoint_url=self.cfg.endpoint_url,
                config=BotoConfig(
                    retries={"mode": "standard", "max_attempts": max_attempts},
                    connect_timeout=min(connect_timeout, self.attempt_s),
                    read_timeout=self.attempt_s,
                ),
            )
        except (BotoCoreError, ValueError) as err:
            raise UserError(_config_error(err, self.cfg)) from None

    @property
    def client(self) -> Any:
        if self._client is None:
            self._client = self._make_client(self.cfg.max_attempts, connect_timeout=10)
        return self._client

    def _retry(self, what: str, call: Callable[[], T]) -> T:
        """`call()`, retried with backoff while the failure is transient, for retry_seconds;
        every attempt is cut off at the deadline (plus one attempt's timeout), so a hung
        endpoint ends the call in about retry_seconds too."""
        start = time.monotonic()
        deadline = start + self.cfg.retry_seconds
        delay, warned = 0.5, False
        while True:
            try:
                return bounded(call, max(deadline - time.monotonic(), 0) + self.attempt_s)
            except Exception as err:  # noqa: BLE001 - sorted into transient or not below
                if not _transient(err):
                    raise _final(err, what, self.cfg) from None
                left = deadline - time.monotonic()
                if left <= 0:
                    raise UserError(
                        f"storage.endpoint_url={self.cfg.endpoint_url}: {what} failed for "
                        f"{time.monotonic() - start:.0f} s (storage.retry_seconds="
                        f"{self.cfg.retry_seconds:g}; {type(err).__name__}: {err}). Fix: bring "
                        f"the store back and rerun with run_id={self.run_id} (finished shards "
                        "are kept), or raise storage.retry_seconds"
                    ) from None
                if not warned:
                    print(f"hallu: {what}: {type(err).__name__}; retrying", file=sys.stderr)
                    warned = True
                time.sleep(min(delay, left))
                delay = min(delay * 2, 10)

    def _key(self, name: str) -> str:
        return f"{self.base}/{name}"

    def _url(self, key: str) -> str:
        return f"s3://{self.bucket}/{key}"

    def _put_new(self, key: str, body: bytes) -> bool:
        """PUT that never replaces: True if written, False if the key already existed."""
        from botocore.exceptions import ClientError

        for attempt in range(self.cfg.max_attempts):
            try:
                self._retry(
                    f"PUT {self._url(key)}",
                    lambda: self.client.put_object(
                        Bucket=self.bucket, Key=key, Body=body, IfNoneMatch="*"
                    ),
                )
                return True
            except ClientError as err:
                code = _code(err)
                if code in ("PreconditionFailed", "412"):
                    return False
                # 409: another upload of this key is in flight; it wins or fails, then retry.
                if code in CONFLICT and attempt + 1 < self.cfg.max_attempts:
                    time.sleep(min(2**attempt * 0.2, 5))
                    continue
                raise
        raise AssertionError("unreachable")

    def _get(self, key: str) -> bytes | None:
        """An object's bytes, or None if there is no such key."""
        from botocore.exceptions import ClientError

        try:
            return self._retry(
                f"GET {self._url(key)}",
                lambda: self.client.get_object(Bucket=self.bucket, Key=key)["Body"].read(),
            )
        except ClientError as err:
            if _code(err) in ("404", "NoSuchKey", "NotFound"):
                return None
            raise

    def _list(self, prefix: str) -> list[str]:
        def run() -> list[str]:
            pages = self.client.get_paginator("list_objects_v2").paginate(
                Bucket=self.bucket, Prefix=prefix
            )
            return [o["Key"] for page in pages for o in page.get("Contents", [])]

        return self._retry(f"LIST {self._url(prefix)}", run)

    # -- the store interface ---------------------------------------------------------------------

    def preflight(self) -> None:
        """Check the bucket is reachable and writable, or raise one UserError naming the key."""
        from botocore.exceptions import (
            ClientError,
            ConnectTimeoutError,
            EndpointConnectionError,
            ReadTimeoutError,
        )

        where = self.cfg.endpoint_url or "AWS S3"
        # Few attempts and a short timeout: a wrong endpoint should fail in seconds, not minutes.
        client = self._make_client(max_attempts=2, connect_timeout=5)
        probe = "/".join(
            p for p in (self.cfg.prefix.strip("/"), f".preflight-{uuid.uuid4().hex}") if p
        )

        def probe_bucket() -> None:
            client.head_bucket(Bucket=self.bucket)
            client.put_object(Bucket=self.bucket, Key=probe, Body=b"hallu preflight")
            client.delete_object(Bucket=self.bucket, Key=probe)

        start = time.monotonic()
        try:
            # Cut off as every call is (retry_seconds and one attempt), however it hangs.
            bounded(probe_bucket, self.cfg.retry_seconds + self.attempt_s)
        except (EndpointConnectionError, ConnectTimeoutError, ReadTimeoutError, NoAnswer) as err:
            raise UserError(
                f"storage.endpoint_url={self.cfg.endpoint_url}: cannot reach the object store "
                f"in {time.monotonic() - start:.0f} s ({type(err).__name__}: {err}). Fix: check "
                "storage.endpoint_url (null for AWS) and that the store is running, or raise "
                "storage.retry_seconds for a slow one; nothing was started"
            ) from None
        except ClientError as err:
            code = _code(err)
            if _bucket_problem(code) == "missing":
                why = f"bucket does not exist at {where}; create it or fix storage.bucket"
            elif _bucket_problem(code) == "denied":
                why = (
                    f"access denied at {where} ({code}); the credentials cannot read and write "
                    "it: check them, the bucket policy and storage.region"
                )
            else:
                why = f"{code} at {where}: {err}"
            raise UserError(
                f"storage.bucket={self.bucket}: {why} (storage.endpoint_url="
                f"{self.cfg.endpoint_url}); nothing was started"
            ) from None
        except Exception as err:  # noqa: BLE001 - credentials and the like: one line
            raise _final(err, f"reach s3://{self.bucket}", self.cfg) from None

    def check_readable(self) -> None:
        """For a reader given an s3:// URL (the report, status): the bucket answers, or one
        UserError in seconds naming what to fix there (the URL, AWS_ENDPOINT_URL, credentials:
        a reader has no storage.* keys)."""
        from botocore.exceptions import ClientError

        client = self._make_client(max_attempts=2, connect_timeout=5)
        where = client.meta.endpoint_url
        start = time.monotonic()
        try:
            bounded(lambda: client.head_bucket(Bucket=self.bucket), self.attempt_s)
        except ClientError as err:
            code = _code(err)
            if _bucket_problem(code) == "missing":
                why = f"no bucket {self.bucket!r} at {where}. Fix: check the bucket in the URL"
            elif _bucket_problem(code) == "denied":
                why = (
                    f"access denied at {where} ({code}). Fix: check the AWS credentials "
                    "(AWS_PROFILE, or AWS_ACCESS_KEY_ID and AWS_SECRET_ACCESS_KEY)"
                )
            else:
                why = f"{code} at {where} ({err}). Fix: check the URL and AWS_ENDPOINT_URL"
            raise UserError(f"{self.dir}: {why}") from None
        except Exception as err:  # noqa: BLE001 - refused, unresolvable, hung: one line
            raise UserError(
                f"{self.dir}: cannot reach the object store at {where} in "
                f"{time.monotonic() - start:.0f} s ({type(err).__name__}). Fix: check "
                "AWS_ENDPOINT_URL (unset for AWS S3) and that the store is running"
            ) from None

    def read_file(self, name: str) -> bytes | None:
        return self._get(self._key(name))

    def read_meta(self) -> dict[str, Any] | None:
        raw = self.read_file("run.json")
        return None if raw is None else json.loads(raw)

    def check_compatible(self, cfg: Config, identity: dict[str, str] | None = None) -> bool:
        """True if this run exists with the same study (resume); UserError if it differs."""
        old = self.read_meta()
        if old is not None:
            return same_study(old, cfg, self.run_id, self.dir, identity)
        if [k for k in self._list(self.base + "/") if not k.endswith("/.lease")]:
            raise UserError(
                f"run_id={self.run_id}: {self.dir} holds objects but no run.json; "
                "choose another run_id or storage.prefix"
            )
        return False

    def create(self, cfg: Config, extra: dict[str, Any]) -> None:
        """Write run.json (before any shard) unless the run exists already."""
        if self.check_compatible(cfg, extra.get("identity")):
            return
        meta = json.dumps(run_metadata(cfg, self.run_id, extra), indent=2).encode()
        if not self._put_new(self._key("run.json"), meta):
            self.check_compatible(cfg, extra.get("identity"))  # another driver created it first

    # -- units: shards and tables, each with a done marker ------------------------------------

    def _names(self, folder: str, stem: str) -> tuple[str, str]:
        """A unit's object and its done marker, relative to the run: shards/ keeps its markers
        in done/ (the run's first layout), every other folder in its own _done/."""
        marks = "done" if folder == "shards" else f"{folder}/_done"
        return f"{folder}/{stem}.parquet", f"{marks}/{stem}.json"

    def _done(self, folder: str) -> set[str]:
        marks = self._key(self._names(folder, "x")[1].rsplit("/", 1)[0] + "/")
        return {
            k.removeprefix(marks).removesuffix(".json")
            for k in self._list(marks)
            if k.endswith(".json") and "/" not in k.removeprefix(marks)
        }

    def _note(self, folder: str, stem: str) -> dict[str, Any] | None:
        raw = self._get(self._key(self._names(folder, stem)[1]))
        return None if raw is None else integrity.read_marker(stem, raw)

    def _write(self, folder: str, stem: str, table: pa.Table) -> str:
        """Store a unit and then its marker; FileExistsError if it is already stored."""
        self.lease.check_writer()  # a worker whose driver is gone writes nothing
        name, mark = self._names(folder, stem)
        key, marker = self._key(name), self._key(mark)
        body = integrity.encode(table)
        adopted = False
        if not self._put_new(key, body):
            if self._get(marker) is not None:
                raise FileExistsError(f"{self._url(key)} exists; results are never replaced")
            body, adopted = self._adopt(folder, stem, body)
        note = integrity.marker(stem, body, table.num_rows, adopted_existing_object=adopted)
        # A marker equal to ours is this call's own, from a retried PUT whose answer was lost
        # (a connection cut during an outage): the unit is stored once, as intended.
        if not self._put_new(marker, note) and self._get(marker) != note:
            raise FileExistsError(f"{self._url(marker)} exists; unit already stored")
        return self._url(key)

    def _adopt(self, folder: str, stem: str, body: bytes) -> tuple[bytes, bool]:
        """An object without a marker: keep it if it reads back whole, else move it aside."""
        key = self._key(self._names(folder, stem)[0])
        old = self._get(key)
        if old is not None:
            try:
                integrity.decode(stem, old, None, None)
                return old, True
            except integrity.ShardUnreadable as err:
                self._quarantine(folder, stem, err.why)
        if not self._put_new(key, body):
            raise FileExistsError(f"{self._url(key)} exists; results are never replaced")
        return body, False

    def _read(self, folder: str, stem: str, table_schema: pa.Schema | None) -> pa.Table:
        data = self._get(self._key(self._names(folder, stem)[0]))
        if data is None:
            raise integrity.ShardUnreadable(stem, "marked done, but its object is missing")
        return integrity.decode(stem, data, self._note(folder, stem), table_schema)

    def _strays(self, folder: str) -> list[str]:
        """Objects in a unit folder (and its markers' folder) that are no done unit's."""
        done = self._done(folder)
        name, mark = self._names(folder, "x")
        files, marks = name.rsplit("/", 1)[0], mark.rsplit("/", 1)[0]
        out = []
        for d, suffix in ((files, ".parquet"), (marks, ".json")):
            inside = self._key(f"{d}/")
            for k in self._list(inside):
                rest = k.removeprefix(inside)
                if d == files and f"{d}/{rest}".startswith(f"{marks}/"):
                    continue  # a marker: listed with its own folder
                if not (rest.endswith(suffix) and rest.removesuffix(suffix) in done):
                    out.append(f"{d}/{rest}")
        return sorted(out)

    def _quarantine(self, folder: str, stem: str, why: str) -> None:
        """Copy a unit and its marker to quarantine/ (kept, not read), then delete them there."""
        stamp = datetime.now(timezone.utc).strftime("%Y%m%dT%H%M%S%f")
        name, mark = self._names(folder, stem)
        for src, suffix in ((mark, ".json"), (name, ".parquet")):  # marker first
            data = self._get(self._key(src))
            if data is None:
                continue
            self._put_new(self._key(f"quarantine/{stem}.{stamp}{suffix}"), data)
            self._retry(
                f"DELETE {self._url(self._key(src))}",
                lambda s=src: self.client.delete_object(Bucket=self.bucket, Key=self._key(s)),
            )
        self._put_new(self._key(f"quarantine/{stem}.{stamp}.why"), why.encode())

    def write_file(self, name: str, data: bytes) -> str:
        """Derived files (summary, figures): replaced on every aggregation, like LocalStore's."""
        key = self._key(name)
        self._retry(
            f"PUT {self._url(key)}",
            lambda: self.client.put_object(Bucket=self.bucket, Key=key, Body=data),
        )
        return self._url(key)


class S3Lease(Lease):
    """`<run>/.lease` as an object: created with If-None-Match, swapped and deleted with If-Match
    on its ETag, so two drivers can never both believe they hold it."""

    def __init__(self, store: S3Store):
        super().__init__()
        self.store = store
        self.key = store._key(".lease")
        self.where = store._url(self.key)

    def _read(self) -> tuple[dict[str, Any], Any] | None:
        from botocore.exceptions import ClientError

        s = self.store

        def get() -> tuple[bytes, Any, float]:
            got = s.client.get_object(Bucket=s.bucket, Key=self.key)
            return got["Body"].read(), got["ETag"], got["LastModified"].timestamp()

        try:
            raw, etag, written = s._retry(f"GET {self.where}", get)
        except ClientError as err:
            if _code(err) in ("404", "NoSuchKey", "NotFound"):
                return None
            raise
        note = parse_note(raw)
        if note is None:  # an empty object (a client that died mid-upload, a manual touch)
            return unreadable(written), etag
        return note, etag

    def _conditional(self, **kw: Any) -> Any:
        from botocore.exceptions import ClientError

        s = self.store
        try:
            return s._retry(
                f"PUT {self.where}",
                lambda: s.client.put_object(Bucket=s.bucket, Key=self.key, **kw),
            )["ETag"]
        except ClientError as err:
            if _code(err) in ("PreconditionFailed", "412", *CONFLICT):
                return None
            raise

    def _create(self, note: dict[str, Any]) -> Any:
        return self._conditional(Body=json.dumps(note).encode(), IfNoneMatch="*")

    def _swap(self, note: dict[str, Any], version: Any) -> Any:
        return self._conditional(Body=json.dumps(note).encode(), IfMatch=version)

    def _delete(self, version: Any) -> None:
        from botocore.exceptions import ClientError

        s = self.store
        try:  # no long retry: release runs last, also after the store went away
            bounded(
                lambda: s.client.delete_object(Bucket=s.bucket, Key=self.key, IfMatch=version),
                s.attempt_s,
            )
        except ClientError as err:
            if _code(err) not in ("PreconditionFailed", "412", "404", "NoSuchKey"):
                raise


class NoAnswer(Exception):
    """A storage call that did not end within its time (a hung endpoint): transient."""


def bounded(call: Callable[[], T], seconds: float) -> T:
    """`call()` in a helper thread, given up after `seconds`. Socket timeouts alone do not bound
    a request: botocore retries a timed-out one up to max_attempts times with backoff, and an
    endpoint that sends a byte now and then never times out. A call given up on ends in its
    thread at its own socket timeout; its write may still land, which every writer here
    tolerates (conditional PUTs, markers compared on read)."""
    box: dict[str, Any] = {}

    def run() -> None:
        try:
            box["value"] = call()
        except BaseException as err:  # noqa: BLE001 - re-raised in the caller's thread
            box["error"] = err

    worker = threading.Thread(target=run, daemon=True, name="hallu-s3-call")
    worker.start()
    worker.join(seconds)
    if worker.is_alive():
        raise NoAnswer(f"no answer within {seconds:.0f} s")
    if "error" in box:
        raise box["error"]
    return box["value"]


def _bucket_problem(code: str) -> str | None:
    """ "missing" or "denied" for the S3 error codes a bucket check answers with, else None; the
    writer's and the reader's messages differ only in the fix they name."""
    if code in ("404", "NoSuchBucket", "NotFound"):
        return "missing"
    if code in ("403", "AccessDenied", "InvalidAccessKeyId", "SignatureDoesNotMatch"):
        return "denied"
    return None


def _code(err: Any) -> str:
    e = err.response.get("Error", {})
    return str(e.get("Code") or err.response.get("ResponseMetadata", {}).get("HTTPStatusCode"))


def _transient(err: Exception) -> bool:
    """Connection refused or reset, timeouts, 5xx, throttling: worth waiting out."""
    from botocore.exceptions import ClientError, ConnectionError, HTTPClientError

    if isinstance(err, ClientError):
        status = err.response.get("ResponseMetadata", {}).get("HTTPStatusCode") or 0
        return _code(err) in THROTTLED or int(status) >= 500
    return isinstance(err, ConnectionError | HTTPClientError | NoAnswer)


def _final(err: Exception, what: str, cfg: StorageCfg) -> Exception:
    """A failure that waiting will not fix: one UserError naming it, or the error itself when a
    caller acts on it (absent key, failed condition, concurrent write)."""
    from botocore.exceptions import BotoCoreError, ClientError

    if isinstance(err, ClientError):
        code = _code(err)
        if code in EXPECTED or code in CONFLICT:
            return err
        if code in ("403", "AccessDenied", "InvalidAccessKeyId", "SignatureDoesNotMatch"):
            return UserError(
                f"storage.bucket={cfg.bucket}: {what}: access denied ({code}). Fix: check the AWS "
                "credentials, the bucket policy and storage.region"
            )
        if code in ("NoSuchBucket",):
            return UserError(f"storage.bucket={cfg.bucket}: {what}: the bucket does not exist")
        return UserError(f"storage.bucket={cfg.bucket}: {what}: {code} ({err})")
    if isinstance(err, BotoCoreError):
        return UserError(_config_error(err, cfg))
    return err


def _config_error(err: Exception, cfg: StorageCfg) -> str:
    from botocore.exceptions import NoCredentialsError, PartialCredentialsError

    if isinstance(err, PartialCredentialsError | NoCredentialsError):
        return (
            f"storage=s3: incomplete AWS credentials for storage.bucket={cfg.bucket} ({err}). Fix: "
            "set both AWS_ACCESS_KEY_ID and AWS_SECRET_ACCESS_KEY (or neither, and AWS_PROFILE)"
        )
    return (
        f"storage=s3 (storage.endpoint_url={cfg.endpoint_url}): {type(err).__name__}: {err}. "
        "Fix: check storage.endpoint_url (http(s)://host:port, or null for AWS), storage.region "
        "and the AWS credentials"
    )
