"""Select's scratch files on any backend: Arrow IPC runs and the selections' index arrays.

On local disk a run is written temp-then-rename (no fsync: scratch read back at once) and read
by memory map; the index arrays are memory-mapped too. On a bucket a run is one upload
(`storage.open_write`: whole or nothing) and reducers read only the record batches overlapping
their position range through pyarrow's random-access files: each run's schema metadata lists
the first output position of every batch, so the footer alone says which batches to fetch. An
index array is fetched whole when small, else searched there by ranged reads (a binary search:
~2 x log2(n) small reads), so a map task fetches only its shard's slice.
"""

from __future__ import annotations

import bisect
import io
import json
import os
from pathlib import Path

import numpy as np
import pyarrow as pa

from colorfilter.io import storage
from colorfilter.io.atomic import TMP_PREFIX
from colorfilter.io.location import Location

RUN_BATCH_ROWS = 1024  # rows per record batch of a run: what a remote reducer fetches at least
FIRSTS_KEY = b"colorfilter.batch_first_positions"
WHOLE_READ_BYTES = 8 << 20  # a remote index array up to this size is fetched in one read


def write_run_file(loc: Location, table: pa.Table, schema: pa.Schema, position: str) -> int:
    """Write a run sorted by `position` in batches of RUN_BATCH_ROWS; return its bytes."""
    firsts = table.column(position).to_numpy()[::RUN_BATCH_ROWS].tolist()
    schema = schema.with_metadata({FIRSTS_KEY: json.dumps(firsts).encode()})
    if loc.is_local:
        path = Path(loc.path)
        path.parent.mkdir(parents=True, exist_ok=True)
        tmp = path.with_name(f"{TMP_PREFIX}{path.name}.{os.getpid()}")
        try:
            with pa.OSFile(str(tmp), "wb") as sink, pa.ipc.new_file(sink, schema) as writer:
                writer.write_table(table, max_chunksize=RUN_BATCH_ROWS)
            os.replace(tmp, path)
        finally:
            tmp.unlink(missing_ok=True)
        return path.stat().st_size
    with storage.open_write(loc) as handle:
        sink = pa.PythonFile(handle, mode="w")
        with pa.ipc.new_file(sink, schema) as writer:
            writer.write_table(table, max_chunksize=RUN_BATCH_ROWS)
        return sink.tell()


def read_run(loc: Location) -> pa.Table:
    """A whole run: memory-mapped on local disk (only touched pages are read), else fetched."""
    if loc.is_local:
        table = pa.ipc.open_file(pa.memory_map(loc.path, "r")).read_all()
    else:
        fs, path = storage.parquet_filesystem(loc)
        with fs.open_input_file(path) as handle:
            table = pa.ipc.open_file(handle).read_all()
    return table.replace_schema_metadata(None)


def read_run_range(loc: Location, low: int, high: int) -> pa.Table:
    """At least the rows of a run whose positions lie in [low, high), in position order.

    Local: the whole run, memory-mapped. Remote: only the record batches overlapping the range.
    """
    if loc.is_local:
        return read_run(loc)
    fs, path = storage.parquet_filesystem(loc)
    with fs.open_input_file(path) as handle:
        reader = pa.ipc.open_file(handle)
        firsts = json.loads(reader.schema.metadata[FIRSTS_KEY])
        first = max(0, bisect.bisect_right(firsts, low) - 1)
        end = bisect.bisect_left(firsts, high)
        batches = [reader.get_batch(i) for i in range(first, end)]
        schema = reader.schema.remove_metadata()
    return pa.Table.from_batches([b.replace_schema_metadata(None) for b in batches], schema)


def save_array(loc: Location, array: np.ndarray) -> None:
    """One .npy file, whole or not at all."""
    buffer = io.BytesIO()
    np.save(buffer, array)
    storage.write_bytes(loc, buffer.getvalue())


def load_array(loc: Location) -> np.ndarray:
    """A whole .npy file (memory-mapped on local disk)."""
    if loc.is_local:
        return np.load(loc.path, mmap_mode="r")
    return np.load(io.BytesIO(storage.read_bytes(loc)))


def sorted_slice(
    ids_loc: Location, values_loc: Location, low: int, high: int
) -> tuple[np.ndarray, np.ndarray]:
    """The entries of a sorted id array in [low, high] and the same slice of a parallel array."""
    if ids_loc.is_local:
        ids = np.load(ids_loc.path, mmap_mode="r")
        values = np.load(values_loc.path, mmap_mode="r")
        first = int(np.searchsorted(ids, low, side="left"))
        end = int(np.searchsorted(ids, high, side="right"))
        return np.asarray(ids[first:end]), np.asarray(values[first:end])
    with _NpyFile(ids_loc) as ids, _NpyFile(values_loc) as values:
        if ids.length * ids.dtype.itemsize <= WHOLE_READ_BYTES:  # one read beats ~40 small ones
            every = ids.read(0, ids.length)
            first = int(np.searchsorted(every, low, side="left"))
            end = int(np.searchsorted(every, high, side="right"))
            return every[first:end], values.read(first, end)
        first = bisect.bisect_left(ids, low)
        end = bisect.bisect_right(ids, high, lo=first)
        return ids.read(first, end), values.read(first, end)


class _NpyFile:
    """A 1-D .npy object read by ranges: indexable (one small read per item) for bisect."""

    def __init__(self, loc: Location):
        fs, path = storage.parquet_filesystem(loc)
        self.handle = fs.open_input_file(path)
        head = io.BytesIO(_raw(self.handle.read_at(min(4096, self.handle.size()), 0)))
        version = np.lib.format.read_magic(head)
        read_header = (np.lib.format.read_array_header_1_0 if version == (1, 0)
                       else np.lib.format.read_array_header_2_0)
        shape, _, self.dtype = read_header(head)
        self.length, self.offset = int(shape[0]), head.tell()

    def __enter__(self) -> _NpyFile:
        return self

    def __exit__(self, *exc) -> None:
        self.handle.close()

    def __len__(self) -> int:
        return self.length

    def __getitem__(self, index: int):
        return self.read(index, index + 1)[0]

    def read(self, first: int, end: int) -> np.ndarray:
        if end <= first:
            return np.empty(0, self.dtype)
        size = self.dtype.itemsize
        data = self.handle.read_at((end - first) * size, self.offset + first * size)
        return np.frombuffer(_raw(data), self.dtype)


def _raw(data) -> bytes:
    """pyarrow's native files answer read_at with a Buffer, fsspec-backed ones with bytes."""
    return data if isinstance(data, bytes) else data.to_pybytes()
