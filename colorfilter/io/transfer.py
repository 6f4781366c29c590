"""Parquet and whole folders on any backend: what stages need beyond single small objects.

- `write_parquet` / `read_parquet` / `open_parquet`: one code path for local disk and buckets
  (local writes stay temp-then-rename; remote ones are one upload that appears whole).
- `staged_folder(dest)`: for libraries that only write to a local folder (transformers'
  `save_pretrained`, tokenizers, matplotlib): yields `dest` itself on local disk, or a temp
  folder whose files are uploaded to `dest` when the block succeeds. Nothing is uploaded when
  it raises. Pair it with `colorfilter.io.commit.commit_unit` (record last) so a rerun trusts the
  folder only once every file is there.
- Reading such a folder back on any node: `colorfilter.io.cache.local_copy(dest)`.
"""

from __future__ import annotations

import contextlib
import hashlib
import os
import shutil
import tempfile
from collections.abc import Iterator, Mapping, Sequence
from pathlib import Path
from typing import Any

from colorfilter.io.backends import filesystem, parquet_filesystem
from colorfilter.io.faults import damaged_error, reading
from colorfilter.io.location import Location, as_location
from colorfilter.io.storage import makedirs, open_write, read_bytes


def write_parquet(value: str | Location, table: Any, compression: str = "zstd",
                  **options: Any) -> None:
    """Write an Arrow table as one parquet file or object, whole or not at all (out of space:
    an OutOfSpaceError naming it, see open_write)."""
    import pyarrow.parquet as pq

    with open_write(value) as handle:
        pq.write_table(table, handle, compression=compression, **options)


def read_parquet(
    value: str | Location, columns: Sequence[str] | None = None,
    expected: Mapping[str, Any] | None = None,
) -> Any:  # fmt: skip
    """An Arrow table read from a local file (memory-mapped) or an object. A truncated or
    corrupt file is one DamagedDataError naming it (colorfilter.io.faults), never a retry.
    `expected`: what the file's completion record says of it (size, sha256): its bytes are
    checked against it before they are trusted (`read_verified`)."""
    import pyarrow.parquet as pq

    loc = as_location(value)
    with reading(loc):
        if expected is not None:
            return pq.read_table(read_verified(loc, expected), columns=columns)
        if loc.is_local:
            return pq.read_table(loc.path, columns=columns, memory_map=True)
        fs, path = parquet_filesystem(loc)
        return pq.read_table(path, columns=columns, filesystem=fs)


def read_verified(value: str | Location, expected: Mapping[str, Any]) -> Any:
    """The file's bytes (a pyarrow buffer reader) once they match its record's size and sha256
    (the sha256 only when the record has one); else a DamagedDataError naming the file and the
    stage that writes it. One read: the bytes checked are the bytes used."""
    import pyarrow as pa

    loc = as_location(value)
    data = read_bytes(loc)
    if len(data) != expected.get("size", len(data)):
        reason = f"{len(data)} bytes, its record says {expected['size']}"
        raise damaged_error(loc.url, reason)
    if expected.get("sha256") and hashlib.sha256(data).hexdigest() != expected["sha256"]:
        raise damaged_error(loc.url, "its bytes differ from its record's sha256")
    return pa.BufferReader(data)


@contextlib.contextmanager
def open_parquet(value: str | Location, expected: Mapping[str, Any] | None = None
                 ) -> Iterator[Any]:  # fmt: skip
    """A `pyarrow.parquet.ParquetFile` (metadata, row groups, iter_batches) on any backend.
    Damage found while opening it or reading through it in the block is one DamagedDataError
    naming the file (colorfilter.io.faults.reading); `expected` as in read_parquet."""
    import pyarrow.parquet as pq

    loc = as_location(value)
    with reading(loc):
        if expected is not None:
            with pq.ParquetFile(read_verified(loc, expected)) as parquet:
                yield parquet
            return
        if loc.is_local:
            with pq.ParquetFile(loc.path, memory_map=True) as parquet:
                yield parquet
            return
        fs, path = parquet_filesystem(loc)
        with fs.open_input_file(path) as handle, pq.ParquetFile(handle) as parquet:
            yield parquet


def upload_folder(local_dir: str | Path, dest: str | Location) -> list[Location]:
    """Copy every file under `local_dir` to `dest` (same relative names); returns them."""
    dest = as_location(dest)
    local_dir = Path(local_dir)
    files = sorted(p for p in local_dir.rglob("*") if p.is_file())
    targets = [dest.join(p.relative_to(local_dir).as_posix()) for p in files]
    if dest.is_local:
        for src, target in zip(files, targets):
            makedirs(target.parent)
            with open_write(target) as handle, open(src, "rb") as source:
                shutil.copyfileobj(source, handle)
        return targets
    if files:
        filesystem(dest).put([str(p) for p in files], [t.path for t in targets])
    return targets


@contextlib.contextmanager
def staged_folder(dest: str | Location) -> Iterator[Path]:
    """A local folder to write `dest`'s files into: `dest` itself when local, else a temp
    folder uploaded to `dest` when the block succeeds (and removed either way)."""
    dest = as_location(dest)
    if dest.is_local:
        os.makedirs(dest.path, exist_ok=True)
        yield Path(dest.path)
        return
    tmp = Path(tempfile.mkdtemp(prefix="colorfilter-stage-"))
    try:
        yield tmp
        upload_folder(tmp, dest)
    finally:
        shutil.rmtree(tmp, ignore_errors=True)
