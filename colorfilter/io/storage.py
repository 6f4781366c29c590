"""One storage layer: every input and output is a local path or an s3://, gs://, hf:// URL.

Cloud storage (how the stages are meant to use this; wiring them in is the next step)
-------------------------------------------------------------------------------------
- Paths: the config holds strings; the driver turns each into a `Location` once
  (`Location.parse(text, storage=config.storage, key="data.pool")`), and every path under
  `output_dir` comes from one run-layout module built on `Location.join` (never string
  concatenation, never `pathlib` on a URL). A `Location` is a small frozen dataclass that pickles
  with its `StorageConfig`, so Ray actors receive Locations and do their own I/O on any node.
- Preflight: before any work the driver calls `check_readable` on every input and
  `check_writable` on `output_dir` (colorfilter.io.preflight); an unknown scheme, a missing bucket,
  refused credentials or an unreachable endpoint becomes one ConfigError (exit 2) naming the URL
  and the config key.
- Inputs: `glob` expands patterns on buckets as on disk (sorted, so seq_ids stay deterministic);
  readers take `open_read(loc)`; parquet goes through `parquet_filesystem(loc)` so pyarrow reads
  and writes natively (`pq.write_table(t, path, filesystem=fs)`).
- Outputs: small files via `write_bytes` / `write_json`, streams via `open_write` (temp-then-rename
  on local disk; one object PUT or multipart upload elsewhere, aborted if the block raises, so a
  failed write leaves no object). A unit of work (a prepare part, a score shard, a checkpoint, an
  eval run, a manifest) is committed with colorfilter.io.commit: data objects first, a completion
  record listing their sizes last; a rerun trusts only records whose objects all match.
- Models and tokenizers: actors call `colorfilter.io.cache.local_copy(url)` to get a node-local
  folder, fetched once per node; local paths are used in place.
- Secrets: credentials come only from the standard environment variables (see
  colorfilter.io.config); a URL holding a user:password or a signed query is refused at parse, and
  every message passes through colorfilter.io.redact.redact.

Backends: fsspec's LocalFileSystem, s3fs (s3://), gcsfs (gs://, the optional `gcs` extra) and
huggingface_hub's HfFileSystem (hf://datasets/ORG/NAME/..., hf://ORG/MODEL/...); for parquet on
s3, pyarrow's own S3FileSystem with the endpoint passed explicitly (pyarrow does not read
AWS_ENDPOINT_URL). Listing caches are off: actors on other nodes write objects the driver must see.
Note: the `hf://NAME[:CONFIG]` *dataset name* inputs of colorfilter.io.files (read with
`datasets.load_dataset`) are a different thing from hf:// file URLs here; integration must keep
them apart (e.g. a file URL has a `datasets/` prefix or a file suffix).
"""

from __future__ import annotations

import contextlib
import json
import os
import posixpath
from collections.abc import Iterable, Iterator
from dataclasses import dataclass, field
from typing import IO, Any

from colorfilter.errors import ConfigError, require
from colorfilter.io.config import StorageConfig
from colorfilter.io.redact import has_credentials, redact

# accepted spelling -> canonical scheme ("" = local disk)
SCHEMES = {"": "", "file": "", "s3": "s3", "s3a": "s3", "gs": "gs", "gcs": "gs", "hf": "hf"}
GLOB_CHARS = frozenset("*?[")


@dataclass(frozen=True)
class Location:
    """A parsed path or URL: `scheme` ("" for local, s3, gs, hf) and `path` (fsspec style)."""

    scheme: str
    path: str  # local: absolute POSIX path; remote: "bucket/key" or "datasets/org/name/file"
    storage: StorageConfig = field(default_factory=StorageConfig, compare=False)

    @classmethod
    def parse(
        cls, text: str | os.PathLike | Location, storage: StorageConfig | None = None,
        key: str = "",
    ) -> Location:
        """Parse a path or URL; ConfigError (naming `key`) for an unknown scheme or credentials."""
        if isinstance(text, Location):
            return text if storage is None else cls(text.scheme, text.path, storage)
        storage = storage or StorageConfig()
        raw = os.fspath(text)
        where = f"{key}: " if key else ""
        if has_credentials(raw):
            raise ConfigError(
                f"{where}'{redact(raw)}' holds credentials or a signature; use a plain URL and "
                "put credentials in the environment (AWS_*, GOOGLE_APPLICATION_CREDENTIALS, "
                "HF_TOKEN)"
            )
        scheme, sep, rest = raw.partition("://")
        if not sep:
            return cls("", os.path.abspath(os.path.expanduser(raw)), storage)
        canonical = SCHEMES.get(scheme.lower())
        if canonical is None:
            known = ", ".join(f"{s}://" for s in ("s3", "gs", "hf", "file"))
            raise ConfigError(
                f"{where}'{raw}': unknown storage scheme '{scheme}://'; use a local path or "
                f"one of {known}"
            )
        if canonical == "":
            return cls("", os.path.abspath(rest if rest.startswith("/") else "/" + rest), storage)
        rest = rest.strip("/")
        if not rest:
            raise ConfigError(f"{where}'{raw}': the URL names no bucket or repository")
        return cls(canonical, posixpath.normpath(rest), storage)

    @property
    def url(self) -> str:
        """The canonical string: a local absolute path, or SCHEME://PATH."""
        return self.path if self.is_local else f"{self.scheme}://{self.path}"

    @property
    def is_local(self) -> bool:
        return self.scheme == ""

    @property
    def name(self) -> str:
        return posixpath.basename(self.path)

    @property
    def parent(self) -> Location:
        parent = posixpath.dirname(self.path)
        return Location(self.scheme, parent or self.path, self.storage)

    @property
    def bucket(self) -> str:
        """The bucket (s3, gs) or repository prefix (hf) a remote path lives in."""
        return self.path.split("/", 1)[0]

    @property
    def has_glob(self) -> bool:
        return bool(GLOB_CHARS & set(self.path))

    def join(self, *parts: str) -> Location:
        """A child location; parts may hold '/', never '..' (outputs stay under their root)."""
        pieces = [p.strip("/") for p in parts if p.strip("/")]
        if any(".." in p.split("/") for p in pieces):
            raise ValueError(f"refusing '..' in a storage path: {parts}")
        return Location(self.scheme, posixpath.join(self.path, *pieces), self.storage)

    def relative_to(self, base: Location) -> str:
        """The '/'-separated path of `self` under `base` (ValueError if not under it)."""
        prefix = base.path.rstrip("/") + "/"
        if self.scheme != base.scheme or not self.path.startswith(prefix):
            raise ValueError(f"{self.url} is not under {base.url}")
        return self.path[len(prefix):]

    def __str__(self) -> str:
        return self.url


def as_location(value: str | os.PathLike | Location, storage: StorageConfig | None = None,
                key: str = "") -> Location:
    """`value` as a Location (Locations pass through, keeping their own storage config)."""
    if isinstance(value, Location):
        return value
    return Location.parse(value, storage, key)


# -- backends -----------------------------------------------------------------------------

def filesystem(loc: Location, preflight: bool = False) -> Any:
    """The fsspec filesystem for `loc` (instances are cached by fsspec per process)."""
    cfg = loc.storage
    timeout = cfg.preflight_timeout_s if preflight else None
    connect = timeout or cfg.connect_timeout_s
    read = timeout or cfg.read_timeout_s
    attempts = 1 if preflight else cfg.retries
    common = {"use_listings_cache": False}
    if loc.is_local:
        import fsspec.implementations.local

        return fsspec.implementations.local.LocalFileSystem()
    if loc.scheme == "s3":
        s3fs = require("s3fs")
        client_kwargs = {"region_name": region(cfg)} if region(cfg) else {}
        fs = s3fs.S3FileSystem(
            anon=cfg.anonymous,
            endpoint_url=endpoint_url(cfg) or None,
            client_kwargs=client_kwargs,
            config_kwargs={
                "connect_timeout": connect,
                "read_timeout": read,
                "retries": {"max_attempts": attempts, "mode": "standard"},
            },
            **common,
        )
        fs.retries = attempts  # s3fs's own retry loop on top of botocore's
        return fs
    if loc.scheme == "gs":
        gcsfs = require("gcsfs", "gcs")
        token = "anon" if cfg.anonymous else None  # None: GOOGLE_APPLICATION_CREDENTIALS etc.
        # gcsfs reads STORAGE_EMULATOR_HOST for a local fake-gcs-server by itself
        return gcsfs.GCSFileSystem(token=token, requests_timeout=read, **common)
    if loc.scheme == "hf":
        from huggingface_hub import HfFileSystem

        # read HF_ENDPOINT now: huggingface_hub reads it once, at import
        token = False if cfg.anonymous else None  # None: HF_TOKEN or the saved login
        return HfFileSystem(endpoint=os.environ.get("HF_ENDPOINT") or None, token=token,
                            use_listings_cache=False,
                            **({"skip_instance_cache": True} if preflight else {}))
    raise ConfigError(f"'{loc.url}': unsupported storage scheme '{loc.scheme}'")


def endpoint_url(cfg: StorageConfig) -> str:
    """The S3 endpoint: the config's, else AWS_ENDPOINT_URL_S3 / AWS_ENDPOINT_URL, else ''."""
    return (cfg.endpoint_url or os.environ.get("AWS_ENDPOINT_URL_S3")
            or os.environ.get("AWS_ENDPOINT_URL") or "")


def region(cfg: StorageConfig) -> str:
    return cfg.region or os.environ.get("AWS_REGION") or os.environ.get("AWS_DEFAULT_REGION") or ""


def parquet_filesystem(value: str | Location) -> tuple[Any, str]:
    """(pyarrow.fs.FileSystem, path) for pyarrow's parquet/dataset functions on `value`."""
    import pyarrow.fs as pafs

    loc = as_location(value)
    cfg = loc.storage
    if loc.is_local:
        return pafs.LocalFileSystem(), loc.path
    if loc.scheme == "s3" and cfg.pyarrow_native_s3:
        kwargs: dict[str, Any] = {
            "anonymous": cfg.anonymous,
            "connect_timeout": cfg.connect_timeout_s,
            "request_timeout": cfg.read_timeout_s,
            "retry_strategy": pafs.AwsStandardS3RetryStrategy(max_attempts=cfg.retries),
        }
        endpoint = endpoint_url(cfg)
        if endpoint:
            scheme, _, host = endpoint.partition("://")
            kwargs.update(endpoint_override=host.rstrip("/"), scheme=scheme)
        kwargs["region"] = region(cfg) or "us-east-1"
        return pafs.S3FileSystem(**kwargs), loc.path
    handler = pafs.FSSpecHandler(filesystem(loc))
    return pafs.PyFileSystem(handler), loc.path


# -- operations ---------------------------------------------------------------------------

def _fs_path(value: str | Location) -> tuple[Location, Any, str]:
    loc = as_location(value)
    return loc, filesystem(loc), loc.path


def exists(value: str | Location) -> bool:
    _, fs, path = _fs_path(value)
    return bool(fs.exists(path))


def is_dir(value: str | Location) -> bool:
    _, fs, path = _fs_path(value)
    return bool(fs.isdir(path))


def size(value: str | Location) -> int:
    """Bytes of one file or object (FileNotFoundError when missing)."""
    _, fs, path = _fs_path(value)
    return int(fs.info(path)["size"])


def glob(pattern: str | Location, files_only: bool = True) -> list[Location]:
    """Matches of a glob (`*`, `?`, `[..]`, `**`), sorted by URL; works on buckets."""
    loc, fs, path = _fs_path(pattern)
    found = fs.glob(path, detail=True)
    return sorted(
        (Location(loc.scheme, _strip(fs, p), loc.storage)
         for p, info in found.items() if not files_only or info.get("type") == "file"),
        key=lambda m: m.url,
    )


@dataclass(frozen=True)
class FileInfo:
    location: Location
    size: int
    version: str  # ETag / blob id / mtime: changes when the content changes ("" if unknown)


def find(value: str | Location) -> list[FileInfo]:
    """Every file under a folder or prefix (or the file itself), with sizes, sorted by URL."""
    loc, fs, path = _fs_path(value)
    found = fs.find(path, detail=True)
    return sorted(
        (FileInfo(Location(loc.scheme, _strip(fs, p), loc.storage), int(info.get("size") or 0),
                  _version(info))
         for p, info in found.items() if info.get("type", "file") == "file"),
        key=lambda f: f.location.url,
    )


def stat_many(values: Iterable[str | Location]) -> dict[str, int | None]:
    """{url: size or None when missing}: one listing per parent folder, not one request each."""
    locs = [as_location(v) for v in values]
    by_parent: dict[str, list[Location]] = {}
    for loc in locs:
        by_parent.setdefault(loc.parent.url, []).append(loc)
    sizes: dict[str, int | None] = {}
    for group in by_parent.values():
        parent = group[0].parent
        fs = filesystem(parent)
        try:
            listing = {_strip(fs, e["name"]): e for e in fs.ls(parent.path, detail=True)}
        except (FileNotFoundError, NotADirectoryError):
            listing = {}
        for loc in group:
            entry = listing.get(loc.path)
            ok = entry is not None and entry.get("type", "file") == "file"
            sizes[loc.url] = int(entry["size"]) if ok else None
    return sizes


def makedirs(value: str | Location) -> None:
    """Create a local folder (and parents); object stores have no folders: a no-op there."""
    loc = as_location(value)
    if loc.is_local:
        os.makedirs(loc.path, exist_ok=True)


def remove(value: str | Location, recursive: bool = False) -> None:
    """Delete a file or object (a folder/prefix with `recursive`); missing is fine."""
    loc, fs, path = _fs_path(value)
    with contextlib.suppress(FileNotFoundError):
        fs.rm(path, recursive=recursive)


@contextlib.contextmanager
def open_read(value: str | Location) -> Iterator[IO[bytes]]:
    """A binary, seekable reader."""
    _, fs, path = _fs_path(value)
    with fs.open(path, "rb") as handle:
        yield handle


@contextlib.contextmanager
def open_write(value: str | Location, block_size: int | None = None) -> Iterator[IO[bytes]]:
    """A binary writer whose output appears whole or not at all.

    Local: a temp file beside the target, renamed onto it when the block succeeds. Object
    stores: the object is created when the block succeeds (one PUT, or a multipart upload
    completed at close); if the block raises, the upload is aborted and nothing appears.
    No rename is ever used remotely (FUSE-mounted buckets and object stores have none).
    `block_size`: bytes buffered per uploaded part (remote only; S3 needs >= 5 MiB).
    """
    loc, fs, path = _fs_path(value)
    if loc.is_local:
        from colorfilter.io.atomic import atomic_path

        with atomic_path(path) as tmp, open(tmp, "wb") as handle:
            yield handle
        return
    handle = fs.open(path, "wb", **({"block_size": block_size} if block_size else {}))
    try:
        yield handle
    except BaseException:
        _abandon(handle)
        raise
    handle.close()


def _abandon(handle: Any) -> None:
    """Drop an unfinished remote write without committing it (fsspec's close would)."""
    with contextlib.suppress(Exception):
        handle.discard()  # s3fs: aborts a started multipart upload
    handle.buffer = None
    handle.closed = True  # so close() (also on garbage collection) uploads nothing


def read_bytes(value: str | Location) -> bytes:
    with open_read(value) as handle:
        return handle.read()


def write_bytes(value: str | Location, data: bytes) -> None:
    with open_write(value) as handle:
        handle.write(data)


def read_text(value: str | Location) -> str:
    return read_bytes(value).decode("utf-8")


def write_text(value: str | Location, text: str) -> None:
    write_bytes(value, text.encode("utf-8"))


def read_json(value: str | Location) -> Any:
    return json.loads(read_bytes(value))


def write_json(value: str | Location, payload: Any) -> None:
    """JSON with sorted keys and indentation (as colorfilter.io.atomic writes it)."""
    text = json.dumps(payload, indent=2, sort_keys=True, default=str) + "\n"
    write_text(value, text)


def read_json_object(value: str | Location) -> dict | None:
    """A JSON object, or None when missing, torn or not an object (a record a kill may tear)."""
    try:
        data = read_json(value)
    except (OSError, ValueError):
        return None
    return data if isinstance(data, dict) else None


def _strip(fs: Any, path: str) -> str:
    """fsspec may answer with a protocol prefix or a trailing slash; keep the bare path."""
    return fs._strip_protocol(path).rstrip("/") or path


def _version(info: dict) -> str:
    for key in ("ETag", "etag", "blob_id", "md5Hash", "generation"):
        if info.get(key):
            return str(info[key]).strip('"')
    lfs = info.get("lfs")
    if isinstance(lfs, dict) and lfs.get("sha256"):
        return str(lfs["sha256"])
    mtime = info.get("mtime") or info.get("LastModified")
    return str(mtime) if mtime else ""
