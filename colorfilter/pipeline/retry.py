"""Which task failures are worth a retry: plain functions, no Ray, so the policy is testable.

transient: storage and network trouble (OSError, ConnectionError, TimeoutError, HTTP 5xx/429)
and a lost worker or node; retried with exponential backoff up to `ray.max_task_attempts`.
oom: CUDA out of memory; retried too (the score worker also halves its batch for that shard).
fatal: everything else (our own ColorFilterError, bad data, config, bugs); fails at once.
"""

from __future__ import annotations

import errno

TRANSIENT, OOM, FATAL = "transient", "oom", "fatal"

# OSErrors that say something about the input, not the moment: retrying cannot help.
DETERMINISTIC_ERRNOS = {
    errno.ENOENT, errno.EACCES, errno.EPERM, errno.EISDIR, errno.ENOTDIR, errno.EROFS,
    errno.ENAMETOOLONG, errno.EEXIST, errno.ENOTEMPTY, errno.EINVAL,
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
    from colorfilter.errors import ColorFilterError

    cause = getattr(exc, "cause", None)  # RayTaskError: judge the remote exception
    if cause is not None and cause is not exc and type(exc).__name__.startswith("RayTaskError"):
        return classify_error(cause)
    if isinstance(exc, ColorFilterError):
        return FATAL
    if is_cuda_oom(exc):
        return OOM
    if is_lost_worker(exc):
        return TRANSIENT
    status = http_status(exc)
    if status is not None:
        return TRANSIENT if status >= 500 or status in (408, 429) else FATAL
    if isinstance(exc, (ConnectionError, TimeoutError)):
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


def http_status(exc: BaseException) -> int | None:
    """The HTTP status an HTTP client error carries (requests, urllib, aiohttp, botocore)."""
    response = getattr(exc, "response", None)
    for holder, attr in ((response, "status_code"), (exc, "status"), (exc, "status_code")):
        value = getattr(holder, attr, None) if holder is not None else None
        if isinstance(value, int) and 100 <= value < 600:
            return value
    if isinstance(response, dict):  # botocore ClientError
        value = response.get("ResponseMetadata", {}).get("HTTPStatusCode")
        if isinstance(value, int):
            return value
    code = getattr(exc, "code", None)  # urllib.error.HTTPError
    if type(exc).__name__ == "HTTPError" and isinstance(code, int):
        return code
    return None


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
