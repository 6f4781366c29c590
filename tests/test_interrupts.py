"""SIGTERM/SIGINT become `Interrupted` with the documented exit codes, and survive ray.init."""

from __future__ import annotations

import os
import signal

import pytest

from colorfilter import interrupts
from colorfilter.errors import EXIT_INTERRUPTED, EXIT_TERMINATED


@pytest.fixture
def our_handlers():
    saved = {s: signal.getsignal(s) for s in interrupts.SIGNALS}
    interrupts.install(grace_s=30)
    yield
    for signum, handler in saved.items():
        signal.signal(signum, handler)


@pytest.mark.parametrize("signum, code", [(signal.SIGTERM, EXIT_TERMINATED),
                                          (signal.SIGINT, EXIT_INTERRUPTED)])  # fmt: skip
def test_a_signal_raises_interrupted_with_its_exit_code(our_handlers, signum, code):
    with pytest.raises(interrupts.Interrupted) as caught:
        os.kill(os.getpid(), signum)
        signal.sigtimedwait([], 0.1)  # let the handler run
    caught.value.watchdog.cancel()  # else it ends this process when the grace period is up
    assert caught.value.exit_code == code == 128 + signum
    assert not isinstance(caught.value, Exception)  # no `except Exception` swallows it


def test_keep_handlers_restores_ours_after_another_library_replaces_them(our_handlers):
    ours = signal.getsignal(signal.SIGTERM)
    with interrupts.keep_handlers():
        signal.signal(signal.SIGTERM, lambda *_: None)  # what ray.init does
    assert signal.getsignal(signal.SIGTERM) is ours


def test_a_stop_inside_deferred_is_raised_when_the_block_ends(our_handlers):
    reached_end_of_block = False
    with pytest.raises(interrupts.Interrupted) as caught:
        with interrupts.deferred():
            os.kill(os.getpid(), signal.SIGTERM)
            signal.sigtimedwait([], 0.1)  # the handler runs here, and must not raise here
            reached_end_of_block = True
    caught.value.watchdog.cancel()
    assert reached_end_of_block and caught.value.exit_code == EXIT_TERMINATED


def test_find_sees_a_stop_that_a_library_wrapped():
    try:
        try:
            raise interrupts.Interrupted(signal.SIGTERM)
        except interrupts.Interrupted as stop:
            raise SystemError("returned a result with an exception set") from stop
    except SystemError as wrapped:
        assert interrupts.find(wrapped).exit_code == EXIT_TERMINATED
    assert interrupts.find(ValueError("x")) is None
