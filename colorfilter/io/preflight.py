"""Checks run before any work: can this input be read, can this output be written?

Each failure is ONE ConfigError (exit 2) naming the config key and the (redacted) URL, with the
cause in words: unknown scheme, missing bucket or repository, refused credentials, unreachable
endpoint, no such file, a pattern matching nothing. The checks use short timeouts and a single
attempt (`storage.preflight_timeout_s`), so a wrong endpoint fails in seconds, not after minutes
of retries. The stages keep the longer timeouts of colorfilter.io.config for the real work.
"""

from __future__ import annotations

import uuid
from typing import Any

from colorfilter.errors import ColorFilterError, ConfigError, MissingExtraError
from colorfilter.io.config import StorageConfig
from colorfilter.io.redact import redact
from colorfilter.io.storage import Location, as_location, endpoint_url, filesystem

CREDENTIAL_HINT = {
    "s3": "check AWS_ACCESS_KEY_ID / AWS_SECRET_ACCESS_KEY / AWS_PROFILE",
    "gs": "check GOOGLE_APPLICATION_CREDENTIALS",
    "hf": "check HF_TOKEN",
    "": "check the file permissions",
}


def check_readable(
    value: str | Location, key: str, storage: StorageConfig | None = None
) -> Location:
    """Raise one ConfigError unless `value` (a file, folder or glob) can be read."""
    loc = as_location(value, storage, key)
    with _errors(loc, key, "read"):
        fs = filesystem(loc, preflight=True)
        _probe_root(fs, loc)
        if loc.has_glob:
            matches = [p for p, i in fs.glob(loc.path, detail=True).items()
                       if i.get("type") == "file"]
            if not matches:
                raise ConfigError(f"{key}: the pattern '{redact(loc.url)}' matches no files")
            return loc
        info = fs.info(loc.path)
        if info.get("type") == "file":
            with fs.open(loc.path, "rb") as handle:
                handle.read(1)
    return loc


def check_writable(
    value: str | Location, key: str, storage: StorageConfig | None = None
) -> Location:
    """Raise one ConfigError unless objects can be created (and deleted) under `value`."""
    loc = as_location(value, storage, key)
    with _errors(loc, key, "write to"):
        fs = filesystem(loc, preflight=True)
        _probe_root(fs, loc)
        if loc.scheme == "hf":
            _check_hf_token(loc, key)
            return loc  # a probe write on the hub would be a commit: the token check must do
        if loc.is_local:
            fs.makedirs(loc.path, exist_ok=True)
        probe = f"{loc.path}/.colorfilter-write-probe-{uuid.uuid4().hex}"
        fs.pipe_file(probe, b"ok")
        fs.rm_file(probe)
    return loc


def _probe_root(fs: Any, loc: Location) -> None:
    """Reach the bucket/repository first, so its absence is told apart from a missing key.

    A refusal to list is not final: credentials may read and write objects without listing
    the bucket root, so the object-level check that follows gives the verdict then.
    """
    if loc.is_local:
        return
    root = loc.bucket if loc.scheme != "hf" else _hf_repo(loc.path)
    try:
        fs.ls(root, detail=False)
    except FileNotFoundError as exc:
        kind = "repository" if loc.scheme == "hf" else "bucket"
        raise _Missing(f"the {kind} '{loc.scheme}://{root}' does not exist") from exc
    except PermissionError:
        pass


def _hf_repo(path: str) -> str:
    parts = path.split("/")
    if parts[0] in ("datasets", "spaces", "models", "buckets"):
        return "/".join(parts[:3])
    return "/".join(parts[:2])


def _check_hf_token(loc: Location, key: str) -> None:
    from huggingface_hub import get_token

    if not get_token():
        raise ConfigError(
            f"{key}: cannot write to '{redact(loc.url)}': no Hugging Face token "
            "(set HF_TOKEN or run `hf auth login`)"
        )


class _Missing(Exception):
    """A bucket or repository that does not exist (already phrased)."""


class _errors:  # noqa: N801 - used as a context manager, reads like one
    """Turn any backend exception into one ConfigError naming the key and the URL."""

    def __init__(self, loc: Location, key: str, action: str) -> None:
        self.loc, self.key, self.action = loc, key, action

    def __enter__(self) -> None:
        return None

    def __exit__(self, exc_type: Any, exc: BaseException | None, tb: Any) -> bool:
        if isinstance(exc, MissingExtraError):  # e.g. gs:// without gcsfs: say where it is used
            raise MissingExtraError(
                f"{self.key}: cannot {self.action} '{self.loc.url}': {exc}") from None
        if exc is None or isinstance(exc, ColorFilterError) or not isinstance(exc, Exception):
            return False
        reason = describe(exc, self.loc)
        message = f"{self.key}: cannot {self.action} '{self.loc.url}': {reason}"
        raise ConfigError(redact(message)) from None


def describe(exc: BaseException, loc: Location) -> str:
    """A one-line cause for a storage exception (no traceback, no secrets)."""
    if isinstance(exc, _Missing):
        return str(exc)
    if isinstance(exc, PermissionError) or _status(exc) in (401, 403):
        detail = _first_line(exc)
        hint = CREDENTIAL_HINT.get(loc.scheme, "check the credentials")
        return f"access denied ({detail}); {hint}"
    if isinstance(exc, FileNotFoundError) or _status(exc) == 404:
        return "no such file, folder or object"
    if _is_connection_error(exc):
        where = endpoint_url(loc.storage) if loc.scheme == "s3" else ""
        where = f" {where}" if where else ""
        return f"cannot reach the storage endpoint{where} ({_first_line(exc)})"
    if isinstance(exc, NotADirectoryError | IsADirectoryError):
        return _first_line(exc)
    return f"{type(exc).__name__}: {_first_line(exc)}"


def _status(exc: BaseException) -> int | None:
    response = getattr(exc, "response", None)
    code = getattr(response, "status_code", None)  # requests / huggingface_hub
    return code if isinstance(code, int) else None


def _is_connection_error(exc: BaseException) -> bool:
    names = {cls.__name__ for cls in type(exc).__mro__}
    connection = {"ConnectionError", "EndpointConnectionError", "ConnectTimeoutError",
                  "ReadTimeoutError", "ClientConnectorError", "ConnectTimeout", "TimeoutError",
                  "FSTimeoutError", "ServerDisconnectedError", "ClientOSError"}
    return bool(names & connection) or "Could not connect" in str(exc)


def _first_line(exc: BaseException, limit: int = 300) -> str:
    """The exception's text on one line (botocore's validation errors span several)."""
    text = " ".join(line.strip() for line in str(exc).splitlines() if line.strip())
    return (text[:limit] + "...") if len(text) > limit else (text or type(exc).__name__)
