"""Who holds a running sweep trial, and whether that worker is still there.

A worker writes a lease on the trial it runs: its host, process and a heartbeat renewed every
HEARTBEAT_S seconds. The heartbeat is a time on the *storage's* clock (the database server's, or
the file system's that holds the journal), and so is the time a judge compares it with: workers
on machines whose clocks are minutes apart agree on how old a heartbeat is. A storage that
fails for a moment is retried with backoff; the heartbeat stops only when its trial is finished,
which is how a worker learns that its trial was taken from it.
"""

from __future__ import annotations

import os
import socket
import threading
import time
from pathlib import Path

LEASE = "stancerun:lease"
HEARTBEAT_S = 30
STALE_AFTER_S = 300
#: A trial moved to RUNNING gets its lease a moment later; one still without a lease after this is orphaned.
UNLEASED_GRACE_S = 5


def storage_now(storage) -> float:
    """Seconds since the epoch by the storage's clock."""
    backend = getattr(storage, "_backend", storage)  # RDB storages sit behind Optuna's cache
    if hasattr(backend, "engine"):
        import sqlalchemy

        query = {"postgresql": "SELECT EXTRACT(EPOCH FROM clock_timestamp())",
                 "sqlite": "SELECT (julianday('now') - 2440587.5) * 86400.0",
                 "mysql": "SELECT UNIX_TIMESTAMP(NOW(6))"}.get(backend.engine.dialect.name)
        if query is not None:
            with backend.engine.connect() as connection:
                return float(connection.execute(sqlalchemy.text(query)).scalar())
    path = getattr(backend, "_file_path", None)  # JournalFileBackend: the journal's file system stamps it
    if path is not None:
        os.utime(path)  # no times given: the file's server sets "now" (NFS too), not this machine
        return os.stat(path).st_mtime
    return time.time()


def process_start(pid: int) -> str | None:
    """When a process started (Linux), so a reused process id is not taken for the worker."""
    try:
        return Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()[19]
    except (OSError, IndexError):
        return None


def lease(storage) -> dict:
    return {"host": socket.gethostname(), "pid": os.getpid(), "start": process_start(os.getpid()),
            "beat": storage_now(storage)}


def why_abandoned(held: dict | None, now: float) -> str | None:
    """Why the worker that wrote lease ``held`` no longer runs its trial, or None while it does;
    ``now`` on the storage's clock."""
    if held is None:
        return "its worker stopped before writing its lease"
    who = f"its worker ({held['host']} pid {held['pid']}) stopped without finishing it"
    if held["host"] == socket.gethostname():  # this host: ask the kernel, no clock needed
        try:
            os.kill(held["pid"], 0)
        except ProcessLookupError:
            return who
        except PermissionError:
            pass  # exists, another user's
        return None if held.get("start") is None or process_start(held["pid"]) in (None, held["start"]) else who
    age = now - held["beat"]
    return f"{who}: no heartbeat for {age:.0f} s" if age >= STALE_AFTER_S else None


def write_lease(storage, trial_id: int, name: str, stop: threading.Event | None = None, say=print,
                give_up_after: float | None = None) -> bool:
    """Write this worker's lease on a trial, retrying a failing storage with backoff (1 s, 2 s, ... up to
    HEARTBEAT_S) until it is written (True), the trial turns out finished by someone else (False), ``stop``
    is set (True), or ``give_up_after`` seconds have failed (the last error is raised)."""
    from optuna.exceptions import UpdateFinishedTrialError

    stop = stop or threading.Event()  # never set: wait() is a sleep
    delay, failures, first_failure = 1.0, 0, time.monotonic()
    while not stop.is_set():
        try:
            storage.set_trial_system_attr(trial_id, LEASE, lease(storage))
            if failures:
                say(f"{name}: lease written again after {failures} failed tries")
            return True
        except UpdateFinishedTrialError:
            return False
        except Exception as error:  # a dropped connection, a locked database: the storage may come back
            failures += 1
            if give_up_after is not None and time.monotonic() - first_failure > give_up_after:
                raise
            if failures == 1:
                say(f"{name}: cannot write its lease ({type(error).__name__}: {first_line(error)}); retrying")
            stop.wait(delay)
            delay = min(delay * 2, HEARTBEAT_S)
    return True


def first_line(error: BaseException) -> str:
    return (str(error).splitlines() or [""])[0]


class Heartbeat:
    """Renews the lease on a running trial every HEARTBEAT_S seconds, in a daemon thread; a storage
    that fails is retried and the beat goes on. ``taken`` is set when the trial turns out finished
    by someone else (another worker judged this one gone): the trial's callbacks read it to stop."""

    def __init__(self, storage, trial_id: int, name: str, say=print):
        self.storage, self.trial_id, self.name, self.say = storage, trial_id, name, say
        self.stop, self.taken = threading.Event(), threading.Event()
        self.thread = threading.Thread(target=self.beat, daemon=True)

    def beat(self) -> None:
        while not self.stop.wait(HEARTBEAT_S):
            if not write_lease(self.storage, self.trial_id, self.name, self.stop, self.say):
                self.taken.set()
                return

    def __enter__(self):
        self.thread.start()
        return self

    def __exit__(self, *exc):
        self.stop.set()
