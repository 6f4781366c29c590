"""The error policy: which failures are retried (transient, oom) and which fail at once."""

from __future__ import annotations

import errno
import urllib.error

import pytest

from colorfilter.errors import BadDataError, ConfigError
from colorfilter.pipeline.retry import backoff_s, classify_error, one_line


class FakeResponse:
    def __init__(self, status_code: int):
        self.status_code = status_code


def http_error(status: int) -> Exception:
    import requests

    return requests.HTTPError(f"{status} error", response=FakeResponse(status))


def ray_errors() -> list[Exception]:
    from ray import exceptions as rex

    return [
        rex.ActorUnavailableError("node gone", None),
        rex.ActorDiedError(),
        rex.NodeDiedError("node 1 died"),
        rex.WorkerCrashedError(),
        rex.ObjectLostError("ffff", b"", "call site"),
    ]


def remote(exc: Exception) -> Exception:
    """What ray.get raises for `exc` raised in a task: a RayTaskError that keeps `.cause`."""
    from ray.exceptions import RayTaskError

    return RayTaskError("run", "Traceback (most recent call last): ...", exc).as_instanceof_cause()


@pytest.mark.parametrize(
    "exc",
    [
        TimeoutError("read timed out"),
        ConnectionResetError("connection reset by peer"),
        OSError(errno.EIO, "input/output error"),
        OSError("AWS Error NETWORK_CONNECTION during GetObject"),  # pyarrow S3 style
        urllib.error.HTTPError("http://x", 503, "Service Unavailable", {}, None),
    ],
)
def test_storage_and_network_errors_are_transient(exc):
    assert classify_error(exc) == "transient"
    assert classify_error(remote(exc)) == "transient"


@pytest.mark.parametrize(
    "status, kind",
    [(500, "transient"), (502, "transient"), (429, "transient"), (404, "fatal"), (403, "fatal")],
)
def test_http_status_decides(status, kind):
    assert classify_error(http_error(status)) == kind


def test_lost_workers_and_nodes_are_transient():
    for exc in ray_errors():
        assert classify_error(exc) == "transient", type(exc)


def test_cuda_oom_is_its_own_kind():
    import torch

    oom = torch.cuda.OutOfMemoryError("CUDA out of memory. Tried to allocate 2.00 GiB")
    assert classify_error(oom) == "oom"
    assert classify_error(remote(oom)) == "oom"
    assert classify_error(RuntimeError("CUDA out of memory. Tried to allocate 1 GiB")) == "oom"


@pytest.mark.parametrize(
    "exc",
    [
        BadDataError("pool.jsonl:3: not JSON"),
        ConfigError("score.batch_size must be >= 1"),
        FileNotFoundError(errno.ENOENT, "no such file", "pool.jsonl"),
        PermissionError(errno.EACCES, "denied"),
        ValueError("a bug"),
        KeyError("text"),
    ],
)
def test_deterministic_errors_are_fatal(exc):
    assert classify_error(exc) == "fatal"
    assert classify_error(remote(exc)) == "fatal"


def test_one_line_is_the_remote_exceptions_own_message():
    line = one_line(remote(TimeoutError("read timed out\nmore detail")))
    assert line == "TimeoutError: read timed out"


def test_backoff_doubles_and_is_capped():
    assert [backoff_s(n, 2.0) for n in (1, 2, 3, 4)] == [2.0, 4.0, 8.0, 16.0]
    assert backoff_s(20, 2.0) == 60.0
