"""Which task failures are worth a retry: plain functions, no Ray, so the policy is testable.

transient: storage and network trouble (OSError, ConnectionError, TimeoutError, botocore's and
httpx's connection errors, HTTP 5xx/429) and a lost worker or node; retried with exponential
backoff up to `ray.max_task_attempts`.
oom: CUDA out of memory; retried too (the score worker also halves its batch for that shard).
fatal: everything else: our own ColorFilterError, damaged data (a truncated or corrupt parquet,
safetensors, zstd, gzip or JSON file: colorfilter.io.faults.damage_reason), a write out of
space/quota/file size, config errors, bugs; fails at once.
"""

from __future__ import annotations

import dataclasses
import errno
import os
import re
from typing import Any

from colorfilter.errors import ColorFilterError, DamagedDataError, OutOfSpaceError
from colorfilter.io.faults import CONNECTION_ERRORS, damage_reason, http_status, out_of_space
from colorfilter.io.location import Location
from colorfilter.io.redact import redact

__all__ = [
    "FATAL", "OOM", "TRANSIENT", "backoff_s", "classify_error", "describe_task", "http_status",
    "is_cuda_oom", "is_lost_worker", "named_fault", "one_line",
]  # fmt: skip

TRANSIENT, OOM, FATAL = "transient", "oom", "fatal"

# OSErrors that say something about the input or the machine, not the moment: retrying cannot
# help (out of space, over quota or the file size limit included).
DETERMINISTIC_ERRNOS = {
    errno.ENOENT, errno.EACCES, errno.EPERM, errno.EISDIR, errno.ENOTDIR, errno.EROFS,
    errno.ENAMETOOLONG, errno.EEXIST, errno.ENOTEMPTY, errno.EINVAL, errno.ENOSPC,
    errno.EDQUOT, errno.EFBIG,
}  # fmt: skip
DETERMINISTIC_OSERRORS = (FileNotFoundError, PermissionError, IsADirectoryError, NotADirectoryError)
# Ray's own "the worker, its node or an object's owner went away": the task itself is fine.
RAY_LOST_WORKER = {
    "RayActorError", "ActorDiedError", "ActorUnavailableError", "WorkerCrashedError",
    "NodeDiedError", "LocalRayletDiedError", "ObjectLostError", "OwnerDiedError",
    "ObjectReconstructionFailedError", "ObjectFetchTimedOutError", "ActorUnschedulableError",
    "TaskUnschedulableError", "RaySystemError", "RpcError",
}  # fmt: skip
MAX_BACKOFF_S = 60.0


def classify_error(exc: BaseException) -> str:
    """ "transient", "oom" or "fatal" for an exception raised by (or around) a task."""
    cause = getattr(exc, "cause", None)  # RayTaskError: judge the remote exception
    if cause is not None and cause is not exc and type(exc).__name__.startswith("RayTaskError"):
        return classify_error(cause)
    if isinstance(exc, ColorFilterError):
        return FATAL
    if is_cuda_oom(exc):
        return OOM
    if is_lost_worker(exc):
        return TRANSIENT
    if damage_reason(exc) is not None or out_of_space(exc) is not None:
        return FATAL
    status = http_status(exc)
    if status is not None:
        return TRANSIENT if status >= 500 or status in (408, 429) else FATAL
    if isinstance(exc, (ConnectionError, TimeoutError)) or _is_connection_error(exc):
        return TRANSIENT
    if isinstance(exc, OSError):
        if isinstance(exc, DETERMINISTIC_OSERRORS) or exc.errno in DETERMINISTIC_ERRNOS:
            return FATAL
        return TRANSIENT
    return FATAL


def is_lost_worker(exc: BaseException) -> bool:
    """A Ray system failure: the actor, its node or an object owner is gone (not the task)."""
    return any(
        cls.__name__ in RAY_LOST_WORKER and cls.__module__.startswith("ray")
        for cls in type(exc).__mro__
    )


def is_cuda_oom(exc: BaseException) -> bool:
    """torch.cuda.OutOfMemoryError (or older torch's RuntimeError), without importing torch."""
    names = {(cls.__module__, cls.__name__) for cls in type(exc).__mro__}
    if ("torch.cuda", "OutOfMemoryError") in names or ("torch", "OutOfMemoryError") in names:
        return True
    return isinstance(exc, RuntimeError) and "CUDA out of memory" in str(exc)


def _is_connection_error(exc: BaseException) -> bool:
    """A client library's own "could not connect / timed out" (botocore, httpx, aiohttp),
    which is not a builtin ConnectionError."""
    return any(cls.__name__ in CONNECTION_ERRORS for cls in type(exc).__mro__)


def backoff_s(attempt: int, base_s: float) -> float:
    """Delay before retry number `attempt` (1, 2, ...): base, 2 x base, 4 x base ... capped."""
    return min(base_s * 2 ** max(0, attempt - 1), MAX_BACKOFF_S)


def one_line(exc: BaseException, limit: int = 300) -> str:
    """The exception's own first line (a remote task's message without its stack trace)."""
    cause = getattr(exc, "cause", None)
    if cause is not None and type(exc).__name__.startswith("RayTaskError"):
        exc = cause
    text = str(exc).strip().splitlines()
    line = text[0] if text else ""
    line = f"{type(exc).__name__}: {line}" if line else type(exc).__name__
    return line if len(line) <= limit else line[: limit - 3] + "..."


def describe_task(task: Any) -> str:
    """A task named by the files it works on, as the user wrote them (paths or URLs), never
    its repr (which would print storage options): e.g. "score task on s3://b/out/tokens/pool/
    00003.parquet". A task may say it itself with a `describe()` method."""
    method = getattr(task, "describe", None)
    if callable(method):
        return str(method())
    kind = re.sub(r"(?<!^)(?=[A-Z])", " ", type(task).__name__).lower()
    files = _task_files(task)
    return f"{kind} on {', '.join(files[:2])}" if files else kind


def _task_files(value: Any, depth: int = 0) -> list[str]:
    """The Locations and paths in a task's fields (one level into nested dataclasses)."""
    if isinstance(value, Location):
        return [value.url]
    if isinstance(value, os.PathLike):
        return [os.fspath(value)]
    if isinstance(value, str) and (value.startswith("/") or "://" in value):
        return [redact(value)]
    if not dataclasses.is_dataclass(value) or isinstance(value, type) or depth > 1:
        return []
    found: list[str] = []
    for item in dataclasses.fields(value):
        found += _task_files(getattr(value, item.name), depth + 1)
    return found


def named_fault(exc: BaseException, task: Any) -> ColorFilterError | None:
    """A raw out-of-space or damaged-data error (from a writer or reader that did not name its
    file) as one error naming the task's files; None for anything else."""
    cause = getattr(exc, "cause", None)
    remote = cause if isinstance(cause, BaseException) else exc
    where = f"the {describe_task(task)}" if task is not None else "a worker"
    space, damage = out_of_space(remote), damage_reason(remote)
    if space is not None:
        return OutOfSpaceError(redact(
            f"a write by {where} failed ({space}: {one_line(remote)}); free space (or raise "
            "the quota or file size limit) and rerun the same command to continue"
        ))
    if damage is not None:
        return DamagedDataError(redact(
            f"{where} read damaged data ({damage}); rerun the stage that wrote its inputs"
        ))
    return None
