"""Runs in S3 (or an S3-compatible store): the `Store` contract (base.py) over objects.

Layout of `s3://<bucket>/<prefix>/<run_id>/`:
  run.json                     written first, never replaced
  shards/<shard_id>.parquet    one PUT each, refused if the key exists (`IfNoneMatch="*"`)
  done/<shard_id>.json         success marker, written after its shard; `done_shards` lists these
  summary.md, summary.json, *.png   written by aggregate.py

A shard is written to a local temp file and uploaded in one request, so no partial object is ever
visible. If a shard object exists without its marker (a worker died between the two PUTs, or a
retried PUT had already landed), it is a complete result of the same deterministic shard: its
marker is written and the object kept. Credentials come from boto3's standard chain (environment,
profile, instance role) and are never stored here, so pickling a store (to send it to a Ray
worker) carries none; each process builds its own client.
"""

from __future__ import annotations

import json
import os
import socket
import tempfile
import time
import uuid
from collections.abc import Iterator
from typing import Any

import pyarrow as pa
import pyarrow.parquet as pq

from hallu.config import Config, StorageCfg
from hallu.errors import UserError
from hallu.store.local import run_metadata, same_study, schema


class S3Store:
    """A run under an S3 prefix; implements hallu.store.base.Store."""

    def __init__(self, cfg: StorageCfg, run_id: str):
        if not cfg.bucket:
            raise UserError(
                "storage=s3 needs a bucket: set storage.bucket=NAME (and storage.endpoint_url=URL "
                "for an S3-compatible store)"
            )
        self.cfg = cfg
        self.run_id = run_id
        self.bucket: str = cfg.bucket
        self.base = "/".join(p for p in (cfg.prefix.strip("/"), run_id) if p)
        self.dir = f"s3://{self.bucket}/{self.base}"  # for messages; not a local path
        self._client: Any = None

    @classmethod
    def open(cls, cfg: StorageCfg, run_id: str) -> S3Store:
        """A store whose bucket was checked reachable and writable (before any model loads)."""
        store = cls(cfg, run_id)
        store.preflight()
        return store

    # -- boto3 plumbing ------------------------------------------------------------------------

    def __getstate__(self) -> dict[str, Any]:
        return {**self.__dict__, "_client": None}  # a client is per process (and holds secrets)

    def _make_client(self, max_attempts: int, connect_timeout: float) -> Any:
        import boto3
        from botocore.config import Config as BotoConfig

        # botocore's "standard" mode retries timeouts, connection errors, 5xx and throttling
        # with exponential backoff and jitter, up to max_attempts per request.
        return boto3.session.Session().client(
            "s3",
            region_name=self.cfg.region,
            endpoint_url=self.cfg.endpoint_url,
            config=BotoConfig(
                retries={"mode": "standard", "max_attempts": max_attempts},
                connect_timeout=connect_timeout,
                read_timeout=120,
            ),
        )

    @property
    def client(self) -> Any:
        if self._client is None:
            self._client = self._make_client(self.cfg.max_attempts, connect_timeout=10)
        return self._client

    def _key(self, name: str) -> str:
        return f"{self.base}/{name}"

    def _put_new(self, key: str, body: bytes) -> bool:
        """PUT that never replaces: True if written, False if the key already existed."""
        from botocore.exceptions import ClientError

        for attempt in range(self.cfg.max_attempts):
            try:
                self.client.put_object(Bucket=self.bucket, Key=key, Body=body, IfNoneMatch="*")
                return True
            except ClientError as err:
                code = _code(err)
                if code in ("PreconditionFailed", "412"):
                    return False
                # 409: another upload of this key is in flight; it wins or fails, then retry.
                retry = attempt + 1 < self.cfg.max_attempts
                if code in ("ConditionalRequestConflict", "409") and retry:
                    time.sleep(min(2**attempt * 0.2, 5))
                    continue
                raise
        raise AssertionError("unreachable")

    def _exists(self, key: str) -> bool:
        from botocore.exceptions import ClientError

        try:
            self.client.head_object(Bucket=self.bucket, Key=key)
            return True
        except ClientError as err:
            if _code(err) in ("404", "NoSuchKey", "NotFound"):
                return False
            raise

    def _list(self, prefix: str) -> list[str]:
        pages = self.client.get_paginator("list_objects_v2").paginate(
            Bucket=self.bucket, Prefix=prefix
        )
        return [o["Key"] for page in pages for o in page.get("Contents", [])]

    # -- the store interface ---------------------------------------------------------------------

    def preflight(self) -> None:
        """Check the bucket is reachable and writable, or raise one UserError naming the key."""
        from botocore.exceptions import (
            ClientError,
            ConnectTimeoutError,
            EndpointConnectionError,
            NoCredentialsError,
            PartialCredentialsError,
        )

        where = self.cfg.endpoint_url or "AWS S3"
        # Few attempts and a short timeout: a wrong endpoint should fail in seconds, not minutes.
        client = self._make_client(max_attempts=2, connect_timeout=5)
        probe = "/".join(
            p for p in (self.cfg.prefix.strip("/"), f".preflight-{uuid.uuid4().hex}") if p
        )
        try:
            client.head_bucket(Bucket=self.bucket)
            client.put_object(Bucket=self.bucket, Key=probe, Body=b"hallu preflight")
            client.delete_object(Bucket=self.bucket, Key=probe)
        except (EndpointConnectionError, ConnectTimeoutError) as err:
            raise UserError(
                f"storage.endpoint_url={self.cfg.endpoint_url}: cannot reach the object store "
                f"({type(err).__name__}: {err}). Fix: check storage.endpoint_url (null for AWS) "
                "and that the store is running; nothing was started"
            ) from None
        except (NoCredentialsError, PartialCredentialsError):
            raise UserError(
                f"storage=s3: no AWS credentials found for storage.bucket={self.bucket}. Fix: set "
                "AWS_ACCESS_KEY_ID and AWS_SECRET_ACCESS_KEY, or AWS_PROFILE; nothing was started"
            ) from None
        except ClientError as err:
            code = _code(err)
            if code in ("404", "NoSuchBucket", "NotFound"):
                why = f"bucket does not exist at {where}; create it or fix storage.bucket"
            elif code in ("403", "AccessDenied", "InvalidAccessKeyId", "SignatureDoesNotMatch"):
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

    def _get(self, key: str) -> bytes | None:
        """An object's bytes, or None if there is no such key."""
        from botocore.exceptions import ClientError

        try:
            return self.client.get_object(Bucket=self.bucket, Key=key)["Body"].read()
        except ClientError as err:
            if _code(err) in ("404", "NoSuchKey", "NotFound"):
                return None
            raise

    def read_file(self, name: str) -> bytes | None:
        return self._get(self._key(name))

    def read_meta(self) -> dict[str, Any] | None:
        raw = self.read_file("run.json")
        return None if raw is None else json.loads(raw)

    def check_compatible(self, cfg: Config) -> bool:
        """True if this run exists with the same study (resume); UserError if it differs."""
        old = self.read_meta()
        if old is not None:
            return same_study(old, cfg, self.run_id, self.dir)
        if self._list(self.base + "/"):
            raise UserError(
                f"run_id={self.run_id}: {self.dir} holds objects but no run.json; "
                "choose another run_id or storage.prefix"
            )
        return False

    def create(self, cfg: Config, extra: dict[str, Any]) -> None:
        """Write run.json (before any shard) unless the run exists already."""
        if self.check_compatible(cfg):
            return
        meta = json.dumps(run_metadata(cfg, self.run_id, extra), indent=2).encode()
        if not self._put_new(self._key("run.json"), meta):
            self.check_compatible(cfg)  # another driver created it first: same study or error

    def done_shards(self) -> set[str]:
        keys = self._list(self._key("done/"))
        return {k.rsplit("/", 1)[1].removesuffix(".json") for k in keys if k.endswith(".json")}

    def write_shard(self, shard_id: str, table: pa.Table) -> str:
        key, marker = self._key(f"shards/{shard_id}.parquet"), self._key(f"done/{shard_id}.json")
        fd, tmp = tempfile.mkstemp(prefix=f"hallu-{shard_id}.", suffix=".parquet")
        os.close(fd)
        try:
            pq.write_table(table, tmp)
            with open(tmp, "rb") as f:
                body = f.read()
        finally:
            os.unlink(tmp)
        adopted = not self._put_new(key, body)
        if adopted and self._exists(marker):
            raise FileExistsError(f"s3://{self.bucket}/{key} exists; results are never replaced")
        note = {
            "shard_id": shard_id,
            "rows": table.num_rows,
            "bytes": len(body),
            "host": socket.gethostname(),
            "adopted_existing_object": adopted,
        }
        if not self._put_new(marker, json.dumps(note).encode()):
            raise FileExistsError(f"s3://{self.bucket}/{marker} exists; shard already stored")
        return f"s3://{self.bucket}/{key}"

    def read_shards(self) -> Iterator[tuple[str, pa.Table]]:
        """Every marked shard, each read with the explicit schema (older shards: nulls)."""
        for shard_id in sorted(self.done_shards()):
            key = self._key(f"shards/{shard_id}.parquet")
            data = self._get(key)
            if data is None:
                raise FileNotFoundError(f"s3://{self.bucket}/{key}: marked done but missing")
            yield shard_id, schema.read_parquet(data, schema.SCHEMA)

    def read_results(self) -> pa.Table:
        return schema.concat(t for _, t in self.read_shards())

    def write_table(self, name: str, table: pa.Table) -> str:
        """`<run>/<name>` in one conditional PUT: complete or absent, and never replaced."""
        sink = pa.BufferOutputStream()
        pq.write_table(table, sink)
        key = self._key(name)
        if not self._put_new(key, sink.getvalue().to_pybytes()):
            raise FileExistsError(f"s3://{self.bucket}/{key} exists; results are never replaced")
        return f"s3://{self.bucket}/{key}"

    def table_names(self, folder: str) -> set[str]:
        """Stems of the Parquet objects under `<run>/<folder>/`: the finished units of that work."""
        keys = self._list(self._key(f"{folder}/"))
        return {
            k.rsplit("/", 1)[1].removesuffix(".parquet") for k in keys if k.endswith(".parquet")
        }

    def read_tables(self, folder: str, table_schema: pa.Schema | None) -> pa.Table:
        tables = []
        for name in sorted(self.table_names(folder)):
            key = self._key(f"{folder}/{name}.parquet")
            data = self._get(key)
            if data is None:
                raise FileNotFoundError(f"s3://{self.bucket}/{key}: listed but missing")
            tables.append(schema.read_parquet(data, table_schema))
        return schema.concat(tables, table_schema)

    def write_file(self, name: str, data: bytes) -> str:
        """Derived files (summary, figures): replaced on every aggregation, like LocalStore's."""
        self.client.put_object(Bucket=self.bucket, Key=self._key(name), Body=data)
        return f"s3://{self.bucket}/{self._key(name)}"


def _code(err: Any) -> str:
    e = err.response.get("Error", {})
    return str(e.get("Code") or err.response.get("ResponseMetadata", {}).get("HTTPStatusCode"))
