"""Ray processes die with their driver (`cluster=ray_local`).

`ray.init()` on this machine starts a GCS server, a raylet, agents and one process per worker
actor, all below the driver. If the driver is killed (SIGKILL, OOM), they outlive it for about a
minute, and the actors go on computing. `start()` launches this module as a small process in its
own session that notes every process below the driver twice a second, and when the driver is
gone SIGKILLs the ones it noted (each checked by its start time, so a reused pid is never hit).
What stops workers from *storing* anything once the driver is gone is the run's lease
(hallu/store/lease.py); this stops them from running at all.
"""

from __future__ import annotations

import os
import signal
import subprocess
import sys
import time

POLL_SECONDS = 0.5


def start_time(pid: int) -> int | None:
    """The process's start time in clock ticks since boot (/proc/PID/stat field 22), or None."""
    try:
        with open(f"/proc/{pid}/stat") as f:
            return int(f.read().rsplit(")", 1)[1].split()[19])
    except (OSError, IndexError, ValueError):
        return None


def running(pid: int, started: int | None) -> bool:
    """True while `pid` is the process that started at `started` and has not exited (a zombie
    waiting for its parent to reap it has)."""
    try:
        with open(f"/proc/{pid}/stat") as f:
            fields = f.read().rsplit(")", 1)[1].split()
    except OSError:
        return False
    return fields[0] != "Z" and started is not None and int(fields[19]) == started


def below(pid: int) -> dict[int, int]:
    """pid -> start time of every process below `pid` (Linux /proc)."""
    parent: dict[int, int] = {}
    for entry in os.listdir("/proc"):
        if entry.isdigit():
            try:
                with open(f"/proc/{entry}/stat") as f:
                    parent[int(entry)] = int(f.read().rsplit(")", 1)[1].split()[1])
            except (OSError, IndexError, ValueError):
                continue
    found: dict[int, int] = {}
    frontier = [pid]
    while frontier:
        p = frontier.pop()
        for child, ppid in parent.items():
            if ppid == p and child not in found and (t := start_time(child)) is not None:
                found[child] = t
                frontier.append(child)
    return found


class Watchdog:
    """The watchdog process of this driver; `stop()` it once Ray was shut down normally."""

    def __init__(self) -> None:
        self.proc: subprocess.Popen | None = None
        started = start_time(os.getpid())
        if started is None:
            return  # no /proc (not Linux): Ray's own cleanup only
        self.proc = subprocess.Popen(
            [sys.executable, "-m", "hallu.run.watchdog", str(os.getpid()), str(started)],
            start_new_session=True,  # not in the driver's process group: a kill of it spares this
            stdin=subprocess.DEVNULL,
            stdout=subprocess.DEVNULL,
            stderr=subprocess.DEVNULL,
        )

    def stop(self) -> None:
        if self.proc is not None and self.proc.poll() is None:
            self.proc.terminate()
            self.proc.wait(timeout=10)


def watch(driver: int, started: int | None) -> None:
    """Note the driver's descendants until it is gone, then SIGKILL them."""
    noted: dict[int, int] = {}
    me = os.getpid()
    while running(driver, started):
        noted.update({p: t for p, t in below(driver).items() if p != me})
        time.sleep(POLL_SECONDS)
    for pid, t in noted.items():
        if start_time(pid) == t:
            try:
                os.kill(pid, signal.SIGKILL)
            except (ProcessLookupError, PermissionError):
                pass


if __name__ == "__main__":
    signal.signal(signal.SIGTERM, lambda *_: sys.exit(0))  # stop(): the driver shut Ray down
    watch(int(sys.argv[1]), int(sys.argv[2]) if sys.argv[2] != "None" else None)
