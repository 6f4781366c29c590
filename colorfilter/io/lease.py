"""One writer per output dir: a lease object that a run holds while it writes there.

`OUTPUT/.colorfilter-lease.json` names its holder (host, pid, the process's start time, the
command, a random token) and an expiry. A CLI command that writes (each stage, `run`, the job
entry points; rank 0 only under torchrun) takes it at start, a daemon thread renews it every
third of its TTL (`lease_ttl_s`, default 60 s), and it is removed when the command ends, by an
error or a SIGTERM/SIGINT too. A second run finding a live lease is refused (exit 2), naming
the holder. A lease is stale, and taken over with one line saying so, when it expired or when
it names this host and its process is gone (or the pid now belongs to another process: the
start times differ), so a `kill -9` followed by the same command continues at once.

Local disk and buckets alike, through colorfilter.io.storage. Object stores (and fsspec) have no
atomic create-if-absent, so taking the lease is: read, write ours, wait `settle_s`, read back;
whoever's token is there then holds it. The race left: two runs whose read and write are
further apart than `settle_s` (a process paused between them) could both believe they hold it;
the renewal thread notices the loss at its next renewal and says so loudly, but does not stop
the run. Clocks: expiry compares this host's clock with the holder's, so hosts whose clocks
differ by more than the TTL may take over a live lease of another host (same host: never).
"""

from __future__ import annotations

import contextlib
import os
import secrets
import socket
import sys
import threading
import time
from collections.abc import Iterator
from dataclasses import asdict, dataclass
from datetime import datetime, timezone

import psutil

from colorfilter.errors import OutputDirBusyError
from colorfilter.io import storage
from colorfilter.io.location import Location

LEASE_NAME = ".colorfilter-lease.json"  # in the output dir: the running writer's lease
DEFAULT_TTL_S = 60.0
SETTLE_S = {"local": 0.2, "remote": 1.0}  # pause between writing the lease and reading it back


@dataclass(frozen=True)
class Holder:
    """Who holds a lease: enough to tell whether that run still lives."""

    host: str
    pid: int
    pid_started: float  # the process's start time (psutil): a reused pid is another process
    started_at: float  # when the run took the lease (unix time)
    expires_at: float
    token: str
    command: str

    def describe(self) -> str:
        started = datetime.fromtimestamp(self.started_at, timezone.utc)
        return (f"host {self.host}, pid {self.pid}, started {started:%Y-%m-%d %H:%M:%S} UTC "
                f"({self.command})")


def me(command: str, ttl_s: float, token: str | None = None) -> Holder:
    """This process as a holder, its lease running `ttl_s` from now."""
    now = time.time()
    return Holder(socket.gethostname(), os.getpid(), _process_start(os.getpid()) or 0.0, now,
                  now + ttl_s, token or secrets.token_hex(8), command)


def read_holder(root: Location) -> Holder | None:
    """The lease's holder, or None when there is no lease (or it is unreadable: a torn write)."""
    data = storage.read_json_object(root.join(LEASE_NAME))
    if data is None:
        return None
    try:
        return Holder(**{key: data[key] for key in Holder.__dataclass_fields__})
    except (KeyError, TypeError):
        return None


def stale_reason(holder: Holder, now: float | None = None) -> str | None:
    """Why `holder`'s lease no longer counts, or None while its run may still be live."""
    now = time.time() if now is None else now
    if holder.expires_at < now:
        ago = now - holder.expires_at
        return f"its lease expired {ago:.0f} s ago"
    if holder.host != socket.gethostname():
        return None  # another host: only the expiry can tell
    if holder.pid == os.getpid():
        return "it is this process"
    started = _process_start(holder.pid)
    if started is None:
        return "its process is gone"
    if holder.pid_started and abs(started - holder.pid_started) > 1.0:
        return "its pid now belongs to another process"
    return None


def _process_start(pid: int) -> float | None:
    """The start time of process `pid` on this host, or None when no such process runs."""
    try:
        process = psutil.Process(pid)
        if process.status() == psutil.STATUS_ZOMBIE:
            return None
        return process.create_time()
    except (psutil.NoSuchProcess, psutil.AccessDenied, ProcessLookupError):
        return None


class Lease:
    """The lease of one output dir, held from `acquire` to `release`."""

    def __init__(self, root: Location, ttl_s: float = DEFAULT_TTL_S, command: str = "",
                 settle_s: float | None = None):
        self.root, self.ttl_s, self.command = root, ttl_s, command or " ".join(sys.argv[:2])
        self.path = root.join(LEASE_NAME)
        self.settle_s = SETTLE_S["local" if root.is_local else "remote"] if settle_s is None \
            else settle_s
        self.holder = me(self.command, ttl_s)
        self._stop = threading.Event()
        self._thread: threading.Thread | None = None

    def acquire(self) -> None:
        """Take the lease, or raise OutputDirBusyError naming the live holder."""
        current = read_holder(self.root)
        if current is not None and current.token != self.holder.token:
            reason = stale_reason(current)
            if reason is None:
                raise self._busy(current)
            if reason != "it is this process":
                _say(f"taking over the lease of {self.root.url} from {current.describe()}: "
                     f"{reason}")
        storage.makedirs(self.root)
        self._write()
        time.sleep(self.settle_s)  # another run may have written at the same time: who won?
        winner = read_holder(self.root)
        if winner is None or winner.token != self.holder.token:
            raise self._busy(winner or current)
        self._thread = threading.Thread(target=self._renew, name="colorfilter-lease",
                                        daemon=True)
        self._thread.start()

    def release(self) -> None:
        """Stop renewing and remove the lease if it is still ours."""
        self._stop.set()
        if self._thread is not None:
            self._thread.join(timeout=5)
        with contextlib.suppress(Exception):  # releasing must never hide the run's own error
            current = read_holder(self.root)
            if current is not None and current.token == self.holder.token:
                storage.remove(self.path)

    def _write(self) -> None:
        now = time.time()
        self.holder = Holder(**{**asdict(self.holder), "expires_at": now + self.ttl_s})
        storage.write_json(self.path, asdict(self.holder))

    def _renew(self) -> None:
        """Every third of the TTL: still ours? then push the expiry on."""
        warned = False
        while not self._stop.wait(self.ttl_s / 3):
            try:
                current = read_holder(self.root)
                if current is not None and current.token != self.holder.token:
                    _say(f"warning: lost the lease of {self.root.url} to {current.describe()}; "
                         "two runs may now write there")
                    return
                self._write()
                warned = False
            except Exception as exc:  # noqa: BLE001 - a storage hiccup: try again next time
                if not warned:
                    _say(f"warning: could not renew the lease of {self.root.url} ({exc})")
                    warned = True

    def _busy(self, holder: Holder | None) -> OutputDirBusyError:
        if holder is None:
            who, until = "another run", ""
        else:
            expires = datetime.fromtimestamp(holder.expires_at, timezone.utc)
            who = holder.describe()
            until = f", renewed while it runs; expires {expires:%H:%M:%S} UTC"
        return OutputDirBusyError(
            f"{self.root.url} is in use by another run ({who}); wait for it to finish or stop "
            f"it, or use another output_dir (its lease: {self.path.url}{until})"
        )


@contextlib.contextmanager
def held(root: Location, ttl_s: float = DEFAULT_TTL_S, command: str = "") -> Iterator[Lease | None]:
    """Hold the output dir's lease for the block (nothing when `ttl_s` is 0: leases off)."""
    if ttl_s <= 0:
        yield None
        return
    lease = Lease(root, ttl_s, command)
    lease.acquire()
    try:
        yield lease
    finally:
        lease.release()


def _say(message: str) -> None:
    print(f"lease: {message}", file=sys.stderr, flush=True)
