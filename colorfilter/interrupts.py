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


class Interrupted(BaseException):
    """A stop request (BaseException: no `except Exception` in a stage swallows it)."""

    def __init__(self, signum: int):
        super().__init__(signal.Signals(signum).name)
        self.signum = signum
        self.exit_code = 128 + signum  # the shell's convention: 143 SIGTERM, 130 SIGINT


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
        raise Interrupted(signum)

    handler.colorfilter_stop = True  # type: ignore[attr-defined]
    for signum in SIGNALS:
        signal.signal(signum, handler)


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
