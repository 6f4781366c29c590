"""One storage layer: every input and output is a local path or an s3://, gs://, hf:// URL.

Cloud storage (how the stages use this: every stage, inputs and outputs, and release)
------------------------------------------------------------------------------------
- Paths: the config holds strings; the driver turns each into a `Location` once
  (`Location.parse(text, storage=config.storage, key="data.pool")`), and every path under
  `output_dir` comes from the run layout (colorfilter.layout) built on `Location.join` (never
  string concatenation, never `pathlib` on a URL). A `Location` is a small frozen dataclass that
  pickles with its `StorageConfig`, so Ray actors receive Locations and do their own I/O on any
  node.
- Preflight: before any work the driver calls `check_readable` on every input and
  `check_writable` on `output_dir` (colorfilter.io.preflight); an unknown scheme, a missing bucket,
  refused credentials or an unreachable endpoint becomes one ConfigError (exit 2) naming the URL
  and the config key.
- Inputs: `glob_files` expands patterns on buckets as on disk, with sizes from the listing
  (sorted, so seq_ids stay deterministic; see colorfilter.io.files.resolve_inputs); readers
  stream `open_read(loc)`; parquet goes through `parquet_filesystem(loc)` so pyarrow reads and
  writes natively (`pq.write_table(t, path, filesystem=fs)`).
- Outputs: small files via `write_bytes` / `write_json`, streams via `open_write` (temp-then-rename
  on local disk; one object PUT or multipart upload elsewhere, aborted if the block raises, so a
  failed write leaves no object). A unit of work (a prepare part, a score shard, a checkpoint, an
  eval run, a manifest) is committed with colorfilter.io.commit: data objects first, a completion
  record listing their sizes last; a rerun trusts only records whose objects all match.
- Models and tokenizers: actors call `colorfilter.io.cache.local_copy(url)` to get a node-local
  folder, fetched once per node; local paths are used in place.
- Readers outside colorfilter: `storage_options(loc)` is the fsspec options dict (no secrets) for
  e.g. `datasets.load_dataset("parquet", data_files="s3://bkt/sel/train-*.parquet",
  split="train", storage_options=storage_options(loc))` (checked against the local S3 server).
- Buckets must exist: nothing here creates one; `check_writable` names a missing bucket.
- Resume and refusals: a stage lists its units' records (`glob`, `list_dir`) and keeps the
  complete ones with one batched `commit.committed(records)`; the saved config of an output dir
  is read with `read_json`/`read_text` on its Location, wherever the output dir lives. Stale
  temp files exist only on local disk (colorfilter.io.atomic.remove_stale_temps); on object
  stores an aborted write leaves nothing to clean.
- Secrets: credentials come only from the standard environment variables (see
  colorfilter.io.config); a URL holding a user:password or a signed query is refused at parse, and
  every message passes through colorfilter.io.redact.redact.

Modules: location.py (Location), backends.py (fsspec's LocalFileSystem, s3fs for s3://, gcsfs for
gs:// with the optional `gcs` extra, huggingface_hub's HfFileSystem for hf://datasets/ORG/NAME/...
and hf://ORG/MODEL/...; pyarrow's own S3FileSystem for parquet on s3), this module (operations;
it re-exports Location and the backends, so `from colorfilter.io import storage` is enough),
preflight.py, commit.py, cache.py, redact.py, config.py.
Note: the `hf://NAME[:CONFIG]` *dataset name* inputs of colorfilter.io.files (read with
`datasets.load_dataset`) are a different thing from hf:// file URLs here; integration must keep
them apart (e.g. a file URL has a `datasets/` prefix or a file suffix).
"""

from __future__ import annotations

import contextlib
import hashlib
import json
import os
from collections.abc import Iterable, Iterator
from dataclasses import dataclass
from typing import IO, Any

from colorfilter.fingerprint import sha256_stream
from colorfilter.io.atomic import atomic_path
from colorfilter.io.backends import (
    endpoint_url,
    filesystem,
    parquet_filesystem,
    region,
    storage_options,
)
from colorfilter.io.faults import reading, writing
from colorfilter.io.location import GLOB_CHARS, SCHEMES, Location, as_location

__all__ = [
    "GLOB_CHARS", "SCHEMES", "FileInfo", "Location", "as_location", "endpoint_url", "exists",
    "file_sha256", "filesystem", "find", "folder_sha256", "glob", "glob_files", "is_dir",
    "list_dir", "makedirs", "open_read", "open_write",
    "parquet_filesystem", "read_bytes", "read_json", "read_json_object", "read_many", "read_text",
    "region",
    "remove", "size", "stat_many", "storage_options", "write_bytes", "write_json", "write_text",
]

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
    if files_only:
        return [info.location for info in glob_files(pattern)]
    loc, fs, path = _fs_path(pattern)
    found = fs.glob(path)
    return sorted((Location(loc.scheme, _strip(fs, p), loc.storage) for p in found),
                  key=lambda m: m.url)


def glob_files(pattern: str | Location) -> list[FileInfo]:
    """Files matching a glob with their sizes, from the listing itself (no request per file)."""
    loc, fs, path = _fs_path(pattern)
    return _file_infos(loc, fs, fs.glob(path, detail=True), untyped="")


def list_dir(value: str | Location) -> list[Location]:
    """Immediate children (files and folders/prefixes), sorted; [] for a missing folder."""
    loc, fs, path = _fs_path(value)
    try:
        names = fs.ls(path, detail=False)
    except (FileNotFoundError, NotADirectoryError):
        return []
    children = {_strip(fs, n) for n in names} - {path}
    return sorted((Location(loc.scheme, c, loc.storage) for c in children), key=lambda m: m.url)


@dataclass(frozen=True)
class FileInfo:
    location: Location
    size: int
    version: str  # ETag / blob id / mtime: changes when the content changes ("" if unknown)


def find(value: str | Location) -> list[FileInfo]:
    """Every file under a folder or prefix (or the file itself), with sizes, sorted by URL."""
    loc, fs, path = _fs_path(value)
    return _file_infos(loc, fs, fs.find(path, detail=True), untyped="file")


def _file_infos(loc: Location, fs: Any, found: dict, untyped: str) -> list[FileInfo]:
    """The files of an fsspec detail listing as FileInfo, sorted by URL (`untyped`: the type
    assumed for an entry that names none)."""
    return sorted(
        (FileInfo(Location(loc.scheme, _strip(fs, p), loc.storage), int(info.get("size") or 0),
                  _version(info))
         for p, info in found.items() if info.get("type", untyped) == "file"),
        key=lambda f: f.location.url,
    )


LIST_THRESHOLD = 8  # more objects than this in one folder: one listing beats a HEAD each


def stat_many(values: Iterable[str | Location]) -> dict[str, int | None]:
    """{url: size or None when missing}, in the given order.

    A few objects per folder are looked up one by one (a HEAD each on object stores); more are
    answered from one listing of their folder, so checking thousands of shards stays cheap.
    """
    locs = [as_location(v) for v in values]
    by_parent: dict[str, list[Location]] = {}
    for loc in locs:
        by_parent.setdefault(loc.parent.url, []).append(loc)
    found: dict[str, int | None] = {}
    for group in by_parent.values():
        fs = filesystem(group[0])
        if len(group) <= LIST_THRESHOLD:
            for loc in group:
                found[loc.url] = _file_size(fs, loc.path)
            continue
        try:
            listing = {_strip(fs, e["name"]): e for e in fs.ls(group[0].parent.path, detail=True)}
        except (FileNotFoundError, NotADirectoryError):
            listing = {}
        for loc in group:
            entry = listing.get(loc.path)
            ok = entry is not None and entry.get("type", "file") == "file"
            found[loc.url] = int(entry["size"]) if ok else None
    return {loc.url: found[loc.url] for loc in locs}


def _file_size(fs: Any, path: str) -> int | None:
    try:
        info = fs.info(path)
    except (FileNotFoundError, NotADirectoryError):
        return None
    return int(info["size"]) if info.get("type", "file") == "file" else None


def read_many(values: Iterable[str | Location]) -> dict[str, bytes | None]:
    """{url: bytes or None when missing}: fetched concurrently where the backend can (s3, gs)."""
    locs = [as_location(v) for v in values]
    out: dict[str, bytes | None] = {}
    groups: dict[tuple, list[Location]] = {}
    for loc in locs:
        groups.setdefault((loc.scheme, loc.storage), []).append(loc)
    for group in groups.values():
        fs = filesystem(group[0])
        try:
            got = fs.cat([loc.path for loc in group], on_error="return")
        except FileNotFoundError:
            got = {}
        for loc in group:
            value = got.get(loc.path)  # bytes, or the exception that reading it raised
            out[loc.url] = value if isinstance(value, bytes) else None
    return {loc.url: out[loc.url] for loc in locs}


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
    A write failing for lack of space, quota or file size is one OutOfSpaceError naming the
    file (colorfilter.io.faults.writing): deterministic, never retried.
    """
    loc, fs, path = _fs_path(value)
    with writing(loc):
        if loc.is_local:
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


def file_sha256(value: str | Location) -> str:
    """Streamed sha256 of one file or object (the one file hash: records, manifests, caches)."""
    with open_read(value) as handle:
        return sha256_stream(handle)


def folder_sha256(value: str | Location) -> str:
    """sha256 over the sorted (relative path, file sha256) of every file under a folder or
    prefix: its identity, whatever the backend, the listing order or the files' times."""
    loc = as_location(value)
    digest = hashlib.sha256()
    for info in find(loc):
        if info.location != loc:
            rel = info.location.relative_to(loc)
            digest.update(f"{rel}\0{file_sha256(info.location)}\n".encode())
    return digest.hexdigest()


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
    """Parsed JSON; a torn or corrupt file is a DamagedDataError naming it (a ValueError too,
    so `read_json_object` still treats it as absent)."""
    data = read_bytes(value)
    with reading(as_location(value)):
        return json.loads(data)


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
