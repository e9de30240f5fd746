"""One writer per run: the launch that drives a run holds its lease; a second one is refused.

The lease is a small JSON note `{token, pid, host, started, renewed, ttl}` at `<run>/.lease`
(local: a lock file created with O_EXCL; S3: an object created with `If-None-Match: *`, renewed
and released with `If-Match` on its ETag). The driver renews it every `ttl / 4` seconds (a failed
renewal is tried again every few seconds). A lease is stale, and taken over with a warning, when
its owner's process is gone (same host) or it has not been renewed for `ttl` seconds (any host);
an empty or unreadable lease counts as renewed when it was last written. A create or renewal that
landed but whose answer was lost is refused on its retry; reading the lease back and finding our
own token tells it apart from another launch's. Workers check it before storing a shard
(`check_writer`): a worker whose driver is gone, or whose run was taken over, stores nothing.
"""

from __future__ import annotations

import json
import os
import socket
import sys
import threading
import time
import uuid
from pathlib import Path
from typing import Any

from hallu.errors import UserError
from hallu.store.files import create_new, write_atomic

TTL = 120.0  # seconds without renewal after which another host may take the run over
RENEW_RETRY_S = 5.0  # after a failed renewal, the next try (the ttl leaves room for ~20)


class LeaseLost(UserError):
    """This process's driver no longer holds the run's lease: store nothing."""


def pid_alive(pid: int) -> bool:
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    except PermissionError:  # someone else's live process
        return True
    return True


class Lease:
    """The protocol over four primitives a backend supplies (`_read`, `_create`, `_swap`,
    `_delete`); `version` is whatever makes a conditional write conditional (an ETag, a token)."""

    where: str = ""

    def __init__(self) -> None:
        self.token: str | None = None  # set while this process (or its driver) holds the lease
        self.owner_pid: int | None = None
        self.owner_host: str | None = None
        self._version: Any = None
        self._stop: threading.Event | None = None
        self._note_held: dict[str, Any] = {}

    def __getstate__(self) -> dict[str, Any]:
        return {**self.__dict__, "_stop": None}  # a worker gets the token, not the renewer

    # -- backend primitives ------------------------------------------------------------------
    def _read(self) -> tuple[dict[str, Any], Any] | None: ...
    def _create(self, note: dict[str, Any]) -> Any: ...  # version, or None if one exists
    def _swap(self, note: dict[str, Any], version: Any) -> Any: ...  # None if it changed
    def _delete(self, version: Any) -> None: ...

    def _note(self, token: str) -> dict[str, Any]:
        now = time.time()
        return {
            "token": token,
            "pid": os.getpid(),
            "host": socket.gethostname(),
            "started": now,
            "renewed": now,
            "ttl": TTL,
        }

    def acquire(self, run_id: str) -> None:
        """Hold the lease, taking over a stale one; UserError if a live launch holds it."""
        note = self._note(uuid.uuid4().hex)
        for _ in range(5):
            version = self._create(note)
            if version is None:
                held = self._read()
                if held is None:
                    continue  # released meanwhile: try again
                if held[0].get("token") == note["token"]:
                    # Our own create landed but its answer was lost (a 500 after the write)
                    # and the retry was refused: the note is ours.
                    version = held[1]
                    break
                why = stale(held[0])
                if why is None:
                    raise UserError(_held_message(run_id, held[0], self.where))
                print(
                    f"hallu: taking over run_id={run_id}: its lease is stale ({why})",
                    file=sys.stderr,
                )
                version = self._swap_ours(note, held[1])
                if version is None:
                    continue  # someone else took it over first
            break
        else:
            raise UserError(f"run_id={run_id}: could not take its lease at {self.where}; try again")
        self.token, self._version = note["token"], version
        self.owner_pid, self.owner_host = note["pid"], note["host"]
        self._start_renewing(note)

    def _swap_ours(self, note: dict[str, Any], version: Any) -> Any:
        """`_swap`, and when it is refused, the version of the lease if it holds this very note:
        a swap that landed but whose answer was lost is retried (by botocore or by us) against
        the old version and refused, though the lease is ours."""
        got = self._swap(note, version)
        if got is not None:
            return got
        held = self._read()
        if held is not None and held[0].get("token") == note["token"]:
            return held[1]
        return None

    def _start_renewing(self, note: dict[str, Any]) -> None:
        self._stop, self._note_held = threading.Event(), note

        def renew(stop: threading.Event) -> None:
            wait = TTL / 4
            while not stop.wait(wait):
                try:
                    if not self.renew():
                        return  # taken over: workers will see it and stop
                    wait = TTL / 4
                except Exception:  # noqa: BLE001 - store down: the run's own requests say so
                    # Try again soon rather than a quarter ttl later: the lease only lapses
                    # if every try within its ttl fails.
                    wait = RENEW_RETRY_S

        threading.Thread(target=renew, args=(self._stop,), daemon=True, name="hallu-lease").start()

    def renew(self) -> bool:
        """Write the lease again with a fresh `renewed`; False if another launch took it over.
        A renewal that landed but whose answer was lost counts as done (the note is ours)."""
        note = {**self._note_held, "renewed": time.time()}
        version = self._swap_ours(note, self._version)
        if version is None:
            return False
        self._version = version
        return True

    def release(self) -> None:
        """Give the run up (best effort: a lease left behind goes stale and is taken over)."""
        if self._stop is not None:
            self._stop.set()
        if self.token is not None and self._version is not None:
            try:
                self._delete(self._version)
            except Exception:  # noqa: BLE001 - e.g. the store is down: the error that ended
                pass  # the run is the one to report
        self.token = self._version = None

    def holder(self) -> str | None:
        """The live launch holding the run ('pid P on H, since T'), or None: no lease, or a
        stale or unreadable one. For readers, who may find the run half written."""
        held = self._read()
        if held is None or held[0].get("unreadable") or stale(held[0]) is not None:
            return None
        note = held[0]
        since = time.strftime("%Y-%m-%d %H:%M:%S UTC", time.gmtime(float(note.get("started", 0))))
        return f"pid {note.get('pid')} on {note.get('host')}, since {since}"

    def check_writer(self) -> None:
        """Raise LeaseLost unless the lease this store was handed is still its driver's."""
        if self.token is None:
            return  # no lease in effect (a store used directly, e.g. by a test)
        held = self._read()
        if held is None or held[0].get("token") != self.token:
            raise LeaseLost(f"{self.where}: the run's lease is no longer this driver's")
        age = time.time() - float(held[0].get("renewed", 0))
        if age > float(held[0].get("ttl", TTL)):
            raise LeaseLost(f"{self.where}: the driver has not renewed the lease for {age:.0f} s")
        if (
            self.owner_host == socket.gethostname()
            and self.owner_pid is not None
            and not pid_alive(self.owner_pid)
        ):
            raise LeaseLost(f"{self.where}: the driver (pid {self.owner_pid}) is gone")


def unreadable(written: float) -> dict[str, Any]:
    """The note an empty or unreadable lease stands for: no owner, renewed when it was last
    written, so it is stale `ttl` after that, on every backend (an owner that is alive rewrites
    it within a quarter ttl)."""
    return {"token": None, "unreadable": True, "renewed": written, "started": written, "ttl": TTL}


def stale(note: dict[str, Any]) -> str | None:
    """Why a lease may be taken over, or None while its owner is alive."""
    if note.get("host") == socket.gethostname() and not pid_alive(int(note.get("pid", -1))):
        return f"its process {note.get('pid')} on this host is gone"
    age = time.time() - float(note.get("renewed", 0))
    if age > float(note.get("ttl", TTL)):
        if note.get("unreadable"):
            return f"empty or unreadable, last written {age:.0f} s ago"
        return f"not renewed for {age:.0f} s"
    return None


def _held_message(run_id: str, note: dict[str, Any], where: str) -> str:
    since = time.strftime("%Y-%m-%d %H:%M:%S UTC", time.gmtime(float(note.get("started", 0))))
    if note.get("unreadable"):
        left = float(note["ttl"]) - (time.time() - float(note["renewed"]))
        return (
            f"run_id={run_id}: its lease {where} is empty or unreadable (written {since}); it is "
            f"taken over once it is {note['ttl']:.0f} s old, in {max(left, 0):.0f} s. Fix: rerun "
            "then, or delete it now if no launch is writing this run, or use another run_id"
        )
    return (
        f"run_id={run_id} is being written by another launch (pid {note.get('pid')} on "
        f"{note.get('host')}, since {since}; lease {where}). Fix: wait for it to finish, or use "
        "another run_id; a lease whose owner died is taken over automatically"
    )


def parse_note(raw: bytes) -> dict[str, Any] | None:
    """A lease's note, or None when the bytes are no JSON object (empty, cut short, garbage)."""
    try:
        note = json.loads(raw)
    except ValueError:  # JSONDecodeError and UnicodeDecodeError alike
        return None
    numbers = ("renewed", "started", "ttl")
    if not isinstance(note, dict) or not isinstance(note.get("pid", -1), int):
        return None
    if not all(isinstance(note.get(k, 0), int | float) for k in numbers):
        return None  # a note no hallu wrote: the ages it implies would be nonsense
    return note


class LocalLease(Lease):
    """`<run>/.lease`, created with O_EXCL; the version is the note's token."""

    def __init__(self, path: Path):
        super().__init__()
        self.path = path
        self.where = str(path)

    def _read(self) -> tuple[dict[str, Any], Any] | None:
        try:
            raw, written = self.path.read_bytes(), self.path.stat().st_mtime
        except FileNotFoundError:
            return None
        note = parse_note(raw)
        if note is None:  # e.g. emptied by a full disk or a crash before its data reached it
            return unreadable(written), None
        return note, note.get("token")

    def _create(self, note: dict[str, Any]) -> Any:
        try:
            create_new(self.path, json.dumps(note).encode())
        except FileExistsError:
            return None
        return note["token"]

    def _swap(self, note: dict[str, Any], version: Any) -> Any:
        held = self._read()
        if held is None or held[1] != version:
            return None
        # Between that read and this write another taker could swap too; a stale lease is rare
        # enough, and both would then see the other's token and the loser's workers stop.
        write_atomic(self.path, json.dumps(note).encode())
        return note["token"]

    def _delete(self, version: Any) -> None:
        held = self._read()
        if held is not None and held[1] == version:
            self.path.unlink(missing_ok=True)
            try:  # a run that never got its run.json (e.g. the model failed to load) leaves no dir
                self.path.parent.rmdir()
            except OSError:
                pass  # not empty: a run
