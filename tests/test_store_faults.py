"""Store faults of issue 24, on real sockets: a lease write that lands but whose answer is lost
(an HTTP 500 in its place), an empty `.lease` on both backends, and an endpoint that accepts
requests and never answers. A fault proxy on 127.0.0.1 sits in front of moto's server."""

from __future__ import annotations

import json
import os
import socket
import threading
import time
from collections.abc import Callable, Iterator
from pathlib import Path

import pytest

from hallu.errors import UserError
from hallu.store.lease import RENEW_RETRY_S, TTL, stale, unreadable
from hallu.store.local import LocalStore
from hallu.store.s3 import S3Store

from .cluster_fixtures import BUCKET, moto_server, service_env
from .conftest import tiny_config

ERROR_500 = (
    b"<?xml version='1.0' encoding='UTF-8'?><Error><Code>InternalError</Code>"
    b"<Message>the fault proxy dropped the answer</Message></Error>"
)


@pytest.fixture(scope="module")
def moto():
    """A moto server of this module's own (the proxy sits in front of it)."""
    with service_env(), moto_server() as m:
        yield m


def _read_request(conn: socket.socket) -> bytes | None:
    """One HTTP request (head and body, Content-Length or chunked) as sent, or None at EOF."""
    data = b""
    while b"\r\n\r\n" not in data:
        chunk = conn.recv(65536)
        if not chunk:
            return None
        data += chunk
    head, body = data.split(b"\r\n\r\n", 1)
    fields = {
        k.strip().lower(): v.strip()
        for k, _, v in (ln.partition(b":") for ln in head.split(b"\r\n")[1:])
    }
    if fields.get(b"transfer-encoding", b"").lower() == b"chunked":
        while not body.endswith(b"0\r\n\r\n"):  # the last chunk, with no trailers
            body += conn.recv(65536)
    else:
        length = int(fields.get(b"content-length", b"0"))
        while len(body) < length:
            body += conn.recv(65536)
    return head + b"\r\n\r\n" + body


def _answer_500() -> bytes:
    return (
        b"HTTP/1.1 500 Internal Server Error\r\nContent-Type: application/xml\r\n"
        + f"Content-Length: {len(ERROR_500)}\r\nConnection: close\r\n\r\n".encode()
        + ERROR_500
    )


def _close_each(request: bytes) -> bytes:
    """The request with `Connection: close`, so upstream's answer ends at EOF."""
    head, body = request.split(b"\r\n\r\n", 1)
    lines = [ln for ln in head.split(b"\r\n") if not ln.lower().startswith(b"connection:")]
    return b"\r\n".join([*lines, b"Connection: close"]) + b"\r\n\r\n" + body


class FaultProxy:
    """An HTTP proxy on 127.0.0.1, one request per connection: forwards each request to moto
    and its answer back, except that it can hang (read requests, never answer) or, for requests
    that `lose` picks, forward the request and answer 500 in place of moto's answer."""

    def __init__(self, target: str, hang: bool = False):
        host, port = target.removeprefix("http://").split(":")
        self.target = (host, int(port))
        self.hang = hang
        self.lose: Callable[[bytes], bool] = lambda _request: False
        self.refuse: Callable[[bytes], bool] = lambda _request: False  # 500, not forwarded
        self.refused: list[bytes] = []
        self.lost: list[bytes] = []  # request lines whose answers were replaced
        self.sock = socket.create_server(("127.0.0.1", 0))
        self.url = f"http://127.0.0.1:{self.sock.getsockname()[1]}"
        self.conns: list[socket.socket] = []
        threading.Thread(target=self._accept, daemon=True).start()

    def lose_next(self, method: str, key_suffix: str, n: int = 1) -> None:
        """Replace the answers of the next `n` requests `METHOD .../<key_suffix>` with a 500."""
        left = [n]

        def pick(request: bytes) -> bool:
            line = request.split(b"\r\n", 1)[0].decode()
            verb, target = line.split(" ")[:2]
            if verb == method and target.split("?")[0].endswith(key_suffix) and left[0] > 0:
                left[0] -= 1
                return True
            return False

        self.lose = pick

    def _accept(self) -> None:
        while True:
            try:
                conn, _ = self.sock.accept()
            except OSError:
                return
            self.conns.append(conn)
            threading.Thread(target=self._serve, args=(conn,), daemon=True).start()

    def _serve(self, conn: socket.socket) -> None:
        try:
            request = _read_request(conn)
            if request is None or self.hang:
                while conn.recv(65536):  # never answer; wait for the client to give up
                    pass
                return
            if self.refuse(request):
                self.refused.append(request.split(b"\r\n", 1)[0])
                conn.sendall(_answer_500())
                return
            answer = self._forward(_close_each(request))
            if self.lose(request):
                self.lost.append(request.split(b"\r\n", 1)[0])
                answer = _answer_500()
            conn.sendall(answer)
        except OSError:
            pass
        finally:
            conn.close()

    def _forward(self, request: bytes) -> bytes:
        with socket.create_connection(self.target) as up:
            up.sendall(request)
            answer = b""
            while chunk := up.recv(65536):
                answer += chunk
        return answer

    def close(self) -> None:
        self.sock.close()
        for c in self.conns:
            try:
                c.shutdown(socket.SHUT_RDWR)
            except OSError:
                pass


@pytest.fixture
def proxy(moto) -> Iterator[FaultProxy]:
    p = FaultProxy(moto.url)
    yield p
    p.close()


def _store(url: str, prefix: str, run_id: str, *more: str) -> S3Store:
    cfg = tiny_config(
        "storage=s3",
        f"storage.bucket={BUCKET}",
        f"storage.prefix={prefix}",
        f"storage.endpoint_url={url}",
        "storage.region=us-east-1",
        *more,
    )
    return S3Store(cfg.storage, run_id)


def _note(moto, key: str) -> dict:
    return json.loads(moto.client().get_object(Bucket=BUCKET, Key=key)["Body"].read())


def test_lease_creation_whose_answer_is_lost_is_recognised_as_ours(moto, proxy):
    """The create lands, its answer is a 500, the retried create is refused (the key exists):
    before, the launch refused itself as 'being written by another launch (pid <its own>)'."""
    store = _store(proxy.url, "lost-create", "c")
    proxy.lose_next("PUT", "/.lease")
    store.lease.acquire("c")
    try:
        assert len(proxy.lost) == 1, "the fault happened"
        assert _note(moto, "lost-create/c/.lease")["token"] == store.lease.token
        store.lease.check_writer()
        with pytest.raises(UserError, match="being written by another launch"):
            _store(moto.url, "lost-create", "c").lease.acquire("c")  # still one writer
    finally:
        store.lease.release()
    assert moto.keys("lost-create/c/") == [], "released"


def test_lease_renewal_whose_answer_is_lost_is_recognised_as_ours(moto, proxy):
    """The renewal lands, its answer is a 500, the retry's If-Match (old ETag) is refused:
    before, the renewer stopped quietly and the run ended ~150 s later, 'the driver has not
    renewed the lease for 122 s'."""
    store = _store(proxy.url, "lost-renew", "r")
    store.lease.acquire("r")
    try:
        before = _note(moto, "lost-renew/r/.lease")["renewed"]
        time.sleep(0.05)
        proxy.lose_next("PUT", "/.lease")
        assert store.lease.renew(), "the renewal is ours, not a takeover"
        assert len(proxy.lost) == 1, "the fault happened"
        assert _note(moto, "lost-renew/r/.lease")["renewed"] > before
        assert store.lease.renew(), "the next renewal uses the ETag the lost one wrote"
        store.lease.check_writer()
    finally:
        store.lease.release()
    assert moto.keys("lost-renew/r/") == [], "released with the current ETag"


@pytest.mark.slow
def test_failed_renewal_is_tried_again_within_the_ttl(moto, proxy):
    """The store answers the renewal due at ttl/4 with 500s for longer than retry_seconds, so
    that renewal fails: the renewer tries again RENEW_RETRY_S later (before: a quarter ttl
    later), and the lease stays this driver's."""
    retry_s = 3.0
    store = _store(
        proxy.url,
        "renew-retry",
        "t",
        f"storage.retry_seconds={retry_s:g}",
        "storage.max_attempts=1",
    )
    store.lease.acquire("t")
    try:
        start = time.time()
        first = _note(moto, "renew-retry/t/.lease")["renewed"]
        window: list[float] = []  # when the first lease PUT was refused

        def refuse(request: bytes) -> bool:  # lease PUTs, for retry_seconds and a margin
            if b"/.lease" not in request.split(b"\r\n", 1)[0]:
                return False
            window[:] = window or [time.time()]
            return time.time() < window[0] + retry_s + 1.5

        proxy.refuse = refuse
        while _note(moto, "renew-retry/t/.lease")["renewed"] == first:
            assert time.time() - start < TTL / 4 + retry_s + 4 * RENEW_RETRY_S, "renewed again"
            time.sleep(0.5)
        assert proxy.refused and window[0] - start >= TTL / 4 - 1, "the due renewal failed"
        assert time.time() - window[0] < retry_s + 3 * RENEW_RETRY_S, "not a quarter ttl later"
        store.lease.check_writer()
    finally:
        store.lease.release()


def test_empty_s3_lease_is_one_line_while_fresh_and_stale_after_its_ttl(moto):
    """Before: json.JSONDecodeError, a traceback, on every launch of the run."""
    moto.client().put_object(Bucket=BUCKET, Key="empty/e/.lease", Body=b"")
    store = _store(moto.url, "empty", "e")
    with pytest.raises(UserError) as err:
        store.lease.acquire("e")
    msg = str(err.value)
    assert "\n" not in msg and "empty/e/.lease is empty or unreadable" in msg
    assert f"taken over once it is {TTL:.0f} s old" in msg
    held = store.lease._read()
    assert held is not None and abs(held[0]["renewed"] - time.time()) < 30, "its LastModified"
    # The same rule as the local backend's: stale ttl after it was written. (moto's clock
    # cannot be turned back, so the age is checked on the note the read gives.)
    assert stale(held[0]) is None
    assert "empty or unreadable" in (stale(unreadable(time.time() - TTL - 1)) or "")


@pytest.mark.parametrize(
    "content",
    [b"", b'{"token": "t", "renew', b'{"renewed": "soon"}', b"\xff\xfe"],
    ids=["empty", "cut", "no-hallu-note", "not-utf8"],
)
def test_empty_local_lease_is_one_line_while_fresh_and_taken_over_after_its_ttl(
    tmp_path: Path, capsys, content: bytes
):
    """Before: an empty one taken over at once, even if a launch had just written it; a note
    with a non-number `renewed` a ValueError traceback."""
    path = tmp_path / "runs" / "e" / ".lease"
    path.parent.mkdir(parents=True)
    path.write_bytes(content)
    store = LocalStore(tmp_path / "runs", "e")
    with pytest.raises(UserError, match=r"e/\.lease is empty or unreadable .* in 1[12]\d s"):
        store.lease.acquire("e")
    old = time.time() - TTL - 5
    os.utime(path, (old, old))
    store.lease.acquire("e")
    try:
        assert "its lease is stale (empty or unreadable" in capsys.readouterr().err
        assert json.loads(path.read_bytes())["token"] == store.lease.token
    finally:
        store.lease.release()


@pytest.mark.slow
def test_hung_endpoint_ends_within_retry_seconds_with_one_line(moto):
    """Before: with retry_seconds=5 a request that never gets an answer waited for botocore's
    120 s read timeout, retried, and the message said 'failed for 5 s' after 367 s."""
    hung = FaultProxy(moto.url, hang=True)
    retry_s = 3.0
    store = _store(hung.url, "hung", "h", f"storage.retry_seconds={retry_s:g}")
    bound = 3 * retry_s + 2  # retry_seconds, one cut-off attempt, slack: a deadline, not speed
    try:
        for call in (
            lambda: store.read_file("run.json"),
            lambda: store.write_file("summary.md", b"x"),
            lambda: S3Store.open(store.cfg, "h2"),  # the preflight
        ):
            start = time.monotonic()
            with pytest.raises(UserError) as err:
                call()
            elapsed = time.monotonic() - start
            msg = str(err.value)
            assert elapsed < bound, (elapsed, msg)
            assert "\n" not in msg and f"storage.endpoint_url={hung.url}" in msg, msg
            assert "storage.retry_seconds" in msg, msg
            print(f"{elapsed:.1f} s: {msg}")
    finally:
        hung.close()


def test_hung_endpoint_message_says_how_long_it_waited(moto):
    hung = FaultProxy(moto.url, hang=True)
    store = _store(hung.url, "hung", "m", "storage.retry_seconds=2")
    try:
        start = time.monotonic()
        with pytest.raises(UserError) as err:
            store.read_file("run.json")
        waited = round(time.monotonic() - start)
        msg = str(err.value)
        assert f"failed for {waited} s (storage.retry_seconds=2;" in msg, msg
        assert "raise storage.retry_seconds" in msg
    finally:
        hung.close()
