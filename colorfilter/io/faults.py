"""Damage versus weather: which failures say a file is broken, and how the user hears of it.

A truncated or corrupt file (parquet, safetensors, zstd, gzip, JSON) and a write that fails for
lack of space (ENOSPC, EDQUOT, EFBIG) are deterministic: a retry cannot help, so they fail at
once with one line naming the file as the user wrote it (its path or URL, never an object's
repr) and the stage that makes it. Only network and storage trouble, HTTP 5xx and lost nodes
are retried (colorfilter.pipeline.retry). Plain functions over exceptions, testable without I/O.

The common readers wrap their reads in `reading(where)`: parquet (colorfilter.io.transfer),
JSON (colorfilter.io.storage.read_json) and model weights (scoring.torch_backend,
models.stages); writers wrap theirs in `writing(where)` (colorfilter.io.storage.open_write).
A network error raised inside such a block stays what it was (transient): pyarrow reports both
decoding errors and S3 trouble as a bare OSError, so its messages are told apart here.
"""

from __future__ import annotations

import contextlib
import errno
import gzip
import json
import lzma
import os
import re
import zlib
from collections.abc import Iterator
from pathlib import Path
from typing import Any

from colorfilter.errors import ColorFilterError, DamagedDataError, OutOfSpaceError, ServiceError
from colorfilter.io.location import Location
from colorfilter.io.redact import redact

# Words of network or storage-service trouble in an exception's text: never damage.
NETWORK_WORDS = re.compile(
    r"AWS Error|curlCode|[Cc]onnect|[Tt]imed? ?out|[Rr]eset by peer|[Bb]roken pipe|"
    r"[Ss]ervice [Uu]navailable|SlowDown|Throttl|HTTP|[Ee]ndpoint|[Nn]etwork"
)
# What pyarrow says of a corrupt or truncated parquet file (it raises a bare OSError or an
# ArrowInvalid for these); used when the traceback is gone (an error that came back from Ray).
PARQUET_DAMAGE = re.compile(
    r"Parquet magic bytes|Parquet file size is|deserialize thrift|decompression failed|"
    r"Unexpected end of stream|[Cc]orrupt|flatbuffers|bit_width|Dictionary page must|"
    r"invalid number of bytes|Invalid UTF8|Invalid base64|[Ss]nappy|LZ4|[Bb]rotli|"
    r"Page was smaller|Couldn't deserialize|Invalid column metadata|not a parquet file"
)
# serde_json's messages, which the Rust tokenizers library raises as a bare Exception
SERDE_JSON = re.compile(
    r"(EOF while parsing|expected|trailing characters|invalid type|key must be a string|"
    r"control character).* at line \d+ column \d+"
)
SAFETENSORS_ERRORS = {"SafetensorError", "HeaderTooLarge", "HeaderTooSmall", "InvalidHeader"}
NO_SPACE = {
    errno.ENOSPC: "no space left on device",
    errno.EDQUOT: "disk quota exceeded",
    errno.EFBIG: "file too large for this file system or the file size limit",
}
NO_SPACE_WORDS = re.compile(
    r"No space left on device|Disk quota exceeded|File too large|EntityTooLarge|QuotaExceeded"
)
MISSING_WEIGHTS = re.compile(r"no file named .*(safetensors|\.bin)", re.IGNORECASE)


def damage_reason(exc: BaseException) -> str | None:
    """Why `exc` says the data it read is damaged (one short line), or None when it does not
    (a network error, a bug, anything else)."""
    text = first_line(exc)
    if isinstance(exc, json.JSONDecodeError):
        return f"not valid JSON: {exc.msg} at line {exc.lineno} column {exc.colno}"
    if isinstance(exc, UnicodeDecodeError):
        return f"not valid UTF-8 text at byte {exc.start}"
    if isinstance(exc, DamagedDataError):
        return text
    names = {cls.__name__ for cls in type(exc).__mro__}
    module = type(exc).__module__
    if names & SAFETENSORS_ERRORS and module.startswith("safetensors"):
        return f"not a whole safetensors file: {text}"
    if "ZstdError" in names and module.startswith("zstandard"):
        return f"corrupt zstd data: {text}"
    if isinstance(exc, gzip.BadGzipFile | zlib.error | lzma.LZMAError):
        return f"corrupt compressed data: {text}"
    if isinstance(exc, EOFError):
        return f"cut short: {text}"
    if "YAMLError" in names and module.startswith("yaml"):
        return f"not valid YAML: {text}"
    if type(exc) is Exception and SERDE_JSON.search(text):  # the tokenizers library (Rust)
        return f"not valid JSON: {text}"
    if NETWORK_WORDS.search(text):
        return None
    if isinstance(exc, OSError) and MISSING_WEIGHTS.search(text):
        return "the folder holds no weights file (model.safetensors)"
    if _is_pyarrow_damage(exc, names, text):
        return text
    return None


def _is_pyarrow_damage(exc: BaseException, names: set[str], text: str) -> bool:
    """pyarrow's decoding errors: ArrowInvalid, or a bare OSError (no errno) raised from its
    parquet code; without a traceback (back from a Ray task), known phrases only."""
    arrow = "ArrowInvalid" in names and type(exc).__module__.startswith("pyarrow")
    bare_os = type(exc) is OSError and exc.errno is None
    if not (arrow or bare_os):
        return False
    if _raised_in_pyarrow_parquet(exc):
        return True
    return bool(PARQUET_DAMAGE.search(text))


def _raised_in_pyarrow_parquet(exc: BaseException) -> bool:
    tb = exc.__traceback__
    while tb is not None:
        filename = tb.tb_frame.f_code.co_filename.replace("\\", "/")
        if "pyarrow" in filename and "parquet" in filename:
            return True
        tb = tb.tb_next
    return False


def out_of_space(exc: BaseException) -> str | None:
    """Why a write failed for lack of space, quota or file size, or None."""
    if isinstance(exc, OSError) and exc.errno in NO_SPACE:
        return NO_SPACE[exc.errno]
    if isinstance(exc, OSError | ValueError):
        found = NO_SPACE_WORDS.search(str(exc))
        if found:
            return found.group(0)[0].lower() + found.group(0)[1:]
    return None


# -- what a damaged file is, and which stage makes it again -----------------------------------
# Trailing path patterns of colorfilter.layout.RunLayout (tests/io/test_faults.py checks that
# every layout path maps to its stage): (pattern, what it is, the stage that writes it).
_OWNERS = [
    *((re.compile(rf"/{stage}\.done\.json$"), f"the {stage} stage's record", stage)
      for stage in ("prepare", "distill", "score", "evaluate")),
    (re.compile(r"/tokens/(pool|downstream_train|downstream_eval)/[^/]+$"), "token shard",
     "prepare"),
    (re.compile(r"/tokenizer(/[^/]+)?$"), "the run's tokenizer", "prepare"),
    (re.compile(r"/models/prior(/|$)"), "prior model", "train-prior"),
    (re.compile(r"/models/conditional(/|$)"), "conditional model", "train-conditional"),
    (re.compile(r"/scores/sample/[^/]+$"), "sample score shard", "distill"),
    (re.compile(r"/models/cheap(/|$)"), "cheap scorer", "distill"),
    (re.compile(r"/scores/cheap/[^/]+$"), "cheap score shard", "distill"),
    (re.compile(r"/scores/pool/[^/]+$"), "score shard", "score"),
    (re.compile(r"/scores/dsir/"), "DSIR weight file", "select"),
    (re.compile(r"/selected/"), "selection file", "select"),
    (re.compile(r"/eval/"), "evaluation file", "evaluate"),
]  # fmt: skip


def owner(name: str) -> tuple[str, str | None]:
    """(what the file is, the stage that writes it) for a path or URL under an output dir;
    ("input file", None) for anything else."""
    for pattern, what, stage in _OWNERS:
        if pattern.search("/" + name.split("://", 1)[-1]):
            return what, stage
    return "input file", None


def damaged_error(name: str, reason: str, known: tuple[str, str] | None = None
                  ) -> DamagedDataError:  # fmt: skip
    """The one-line error for a damaged file: what it is, where, why, and what to rerun
    (`known`: (what it is, the stage that makes it) for a file outside the run layout)."""
    what, stage = known or owner(name)
    if stage is None:
        advice = "replace it or leave it out of the config, then rerun"
    else:
        advice = f"rerun `colorfilter {stage}` to redo it (`--overwrite` redoes the whole stage)"
    return DamagedDataError(redact(f"{what} {name} is damaged ({reason}): {advice}"))


def display(where: str | os.PathLike | Location) -> str:
    """A file's name as the user wrote it: the Location's URL, or the path."""
    if isinstance(where, Location):
        return where.url
    return os.fspath(where) if isinstance(where, Path) else str(where)


@contextlib.contextmanager
def reading(where: str | os.PathLike | Location, name: str | None = None) -> Iterator[None]:
    """Turn damage found while reading `where` (also inside the block's own use of a reader it
    opened) into one DamagedDataError naming it (`name` overrides, e.g. the URL a local cache
    copy came from); every other error passes unchanged."""
    try:
        yield
    except ColorFilterError:
        raise
    except Exception as exc:
        reason = damage_reason(exc)
        if reason is None:
            raise
        raise damaged_error(name or display(where), reason) from exc


@contextlib.contextmanager
def writing(where: str | os.PathLike | Location) -> Iterator[None]:
    """Turn a write failing for lack of space, quota or file size into one OutOfSpaceError
    naming the file (no retry can help); every other error passes unchanged."""
    try:
        yield
    except ColorFilterError:
        raise
    except Exception as exc:
        reason = out_of_space(exc)
        if reason is None:
            raise
        raise OutOfSpaceError(redact(
            f"cannot write {display(where)}: {reason}; free space (or raise the quota or file "
            "size limit) and rerun the same command to continue"
        )) from exc


# -- services: a bucket endpoint, a hub or a cluster that refuses or does not answer ---------
CONNECTION_ERRORS = {
    "EndpointConnectionError", "ConnectTimeoutError", "ReadTimeoutError", "ConnectionClosedError",
    "ProxyConnectionError", "ConnectError", "ConnectTimeout", "ReadTimeout", "WriteTimeout",
    "PoolTimeout", "RemoteProtocolError", "ClientConnectorError", "ServerDisconnectedError",
    "ClientOSError", "ServerTimeoutError", "NewConnectionError", "MaxRetryError",
    "FSTimeoutError", "ConnectionRefusedError", "ConnectionResetError",
}  # fmt: skip
_PYARROW_CONNECT = re.compile(r"Failed to connect to ([^\s:]+)(?: port |:)(\d+)")
_BOTO_ENDPOINT = re.compile(r'endpoint URL: "([^"]+)"')


def service_failure(exc: BaseException, service: str = "") -> ServiceError | None:
    """One ServiceError naming the endpoint when `exc` (or what it wraps) says a service did
    not answer, refused the credentials, or failed with HTTP 5xx; else None. `service` names
    the kind when the caller knows it ("the Hugging Face hub")."""
    for error in _chain(exc):
        message = _service_message(error, service)
        if message is not None:
            return ServiceError(redact(message))
    return None


def _service_message(exc: BaseException, kind: str) -> str | None:
    names = {cls.__name__ for cls in type(exc).__mro__}
    text = first_line(exc, 200)
    status = http_status(exc)
    where = _endpoint(exc)
    if not kind and _is_s3_client_error(exc, text):
        kind = "the S3 endpoint"
    if kind:
        where = f"{kind} at {where}" if where else kind
    if status is not None and (status >= 500 or status in (401, 403, 429)):
        service = where or "the service"
        if status in (401, 403):
            hint = ("HF_TOKEN (or `hf auth login`)" if "Hugging Face" in service
                    else "the keys or token in the environment (AWS_*, GOOGLE_*, HF_TOKEN)")
            return f"{service} refused the credentials (HTTP {status}: {text}); check {hint}"
        return (f"{service} failed (HTTP {status}: {text}); rerun the same command to continue "
                "once it is back")
    aws_network = "AWS Error" in text and ("NETWORK_CONNECTION" in text or "curlCode" in text)
    if names & CONNECTION_ERRORS or aws_network:
        service = where or "the storage endpoint"
        return (f"{service} does not answer ({text}); check the address and that the service is "
                "up, then rerun the same command to continue")
    return None


def _is_s3_client_error(exc: BaseException, text: str) -> bool:
    """botocore's errors (s3fs) and pyarrow's S3 ones ("AWS Error ...")."""
    return type(exc).__module__.startswith(("botocore", "aiobotocore")) or "AWS Error" in text


def _endpoint(exc: BaseException) -> str | None:
    """The endpoint an HTTP or storage client error names: scheme://host[:port]."""
    kwargs = getattr(exc, "kwargs", None)
    if isinstance(kwargs, dict) and kwargs.get("endpoint_url"):  # botocore
        return _origin(str(kwargs["endpoint_url"]))
    for holder in (exc, getattr(exc, "response", None)):
        try:
            url = getattr(getattr(holder, "request", None), "url", None)  # httpx, requests
        except RuntimeError:  # httpx: an error raised before any request was made
            url = None
        if url is None and holder is not exc:
            url = getattr(holder, "url", None)
        if url:
            return _origin(str(url))
    host, port = getattr(exc, "host", None), getattr(exc, "port", None)  # aiohttp
    if isinstance(host, str) and port:
        return f"{host}:{port}"
    text = str(exc)
    found = _BOTO_ENDPOINT.search(text)
    if found:
        return _origin(found.group(1))
    found = _PYARROW_CONNECT.search(text)
    if found:
        return f"{found.group(1)}:{found.group(2)}"
    return None


def _origin(url: str) -> str:
    """scheme://host[:port] of a URL (no path, no query: nothing secret or long)."""
    scheme, sep, rest = url.partition("://")
    if not sep:
        return url.split("/", 1)[0]
    return f"{scheme}://{rest.split('/', 1)[0].split('?', 1)[0].rsplit('@', 1)[-1]}"


def http_status(exc: BaseException) -> int | None:
    """The HTTP status an HTTP client error carries (requests, httpx, urllib, aiohttp,
    botocore), or None."""
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


def _chain(exc: BaseException) -> Iterator[BaseException]:
    """`exc`, then what it wraps: a Ray task's remote error (.cause) and __cause__ (not
    __context__: an error raised while handling another is not that error)."""
    seen: set[int] = set()
    todo: list[Any] = [exc]
    while todo:
        error = todo.pop(0)
        if error is None or id(error) in seen or not isinstance(error, BaseException):
            continue
        seen.add(id(error))
        cause = getattr(error, "cause", None)
        if isinstance(cause, BaseException) and type(error).__name__.startswith("RayTaskError"):
            todo.insert(0, cause)  # the wrapper's text is the remote stack: judge the error
            continue
        yield error
        todo += [cause, error.__cause__]


def first_line(exc: BaseException, limit: int = 300) -> str:
    """The exception's first non-blank line (its type's name when it has none), at most
    `limit` characters: what a one-line error quotes of it."""
    lines = [line.strip() for line in str(exc).splitlines() if line.strip()]
    text = lines[0] if lines else type(exc).__name__
    return text if len(text) <= limit else text[: limit - 3] + "..."
