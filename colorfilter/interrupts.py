"""Stop cleanly on SIGTERM or SIGINT (a spot reclaim, Ctrl-C, `ray job stop`).

The first signal raises `Interrupted` in the main thread: the stage stops submitting, the
executor's `finally` kills its actors, and the process exits 143 (SIGTERM) or 130 (SIGINT).
Every unit commits atomically with a completion record, so finished units stay finished and an
unfinished one leaves only temp files that the rerun removes; the same command continues. If the
unwinding takes longer than the grace period, or a second signal comes, the process exits at once.
"""

from __future__ import annotations

import os
import signal
import sys
import threading

GRACE_S = 20.0
SIGNALS = (signal.SIGTERM, signal.SIGINT)
_state: dict = {"defer": 0, "pending": None}  # inside deferred(): a stop waiting to be raised


class Interrupted(BaseException):
    """A stop request (BaseException: no `except Exception` in a stage swallows it)."""

    def __init__(self, signum: int):
        super().__init__(signal.Signals(signum).name)
        self.signum = signum
        self.exit_code = 128 + signum  # the shell's convention: 143 SIGTERM, 130 SIGINT
        self.watchdog: threading.Timer | None = None  # exits the process when the grace is up


def install(grace_s: float = GRACE_S) -> None:
    """Turn SIGTERM/SIGINT into `Interrupted` (main thread only; elsewhere this does nothing)."""
    if threading.current_thread() is not threading.main_thread():
        return
    state = {"signum": None}

    def handler(signum: int, _frame) -> None:
        if state["signum"] is not None:  # a second signal: no more waiting
            os._exit(128 + state["signum"])
        state["signum"] = signum
        watchdog = threading.Timer(grace_s, os._exit, args=(128 + signum,))
        watchdog.daemon = True
        watchdog.start()
        print(
            f"{signal.Signals(signum).name}: stopping (up to {grace_s:g} s); finished units are "
            "kept, rerun the same command to continue",
            file=sys.stderr, flush=True,
        )  # fmt: skip
        stop = Interrupted(signum)
        stop.watchdog = watchdog
        if _state["defer"]:  # inside a C extension call (ray.wait): raise right after it
            _state["pending"] = stop
            return
        raise stop

    handler.colorfilter_stop = True  # type: ignore[attr-defined]
    for signum in SIGNALS:
        signal.signal(signum, handler)


class deferred:  # noqa: N801 - used as a context manager, like contextlib's
    """Hold a stop back during calls that must not see an exception raised inside them (Ray's
    Cython `wait` turns one into a SystemError); it is raised when the block ends."""

    def __enter__(self) -> None:
        _state["defer"] += 1

    def __exit__(self, *_exc) -> None:
        _state["defer"] -= 1
        if not _state["defer"]:
            raise_if_stopped()


def raise_if_stopped() -> None:
    stop, _state["pending"] = _state["pending"], None
    if stop is not None:
        raise stop


def find(exc: BaseException | None) -> Interrupted | None:
    """The Interrupted behind `exc` (a library may have wrapped it), if any."""
    seen = set()
    while exc is not None and id(exc) not in seen:
        seen.add(id(exc))
        if isinstance(exc, Interrupted):
            return exc
        exc = exc.__cause__ or exc.__context__
    return None


def keep_handlers():
    """A context for code that replaces our handlers (`ray.init` sets its own SIGTERM one)."""
    return _KeepHandlers()


class _KeepHandlers:
    def __enter__(self) -> None:
        main = threading.current_thread() is threading.main_thread()
        self.saved = {s: signal.getsignal(s) for s in SIGNALS} if main else {}

    def __exit__(self, *_exc) -> None:
        for signum, saved in self.saved.items():
            if getattr(saved, "colorfilter_stop", False):
                signal.signal(signum, saved)
