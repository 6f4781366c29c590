"""What a selection ranks: row sources read in batches, and keys made sortable.

Why apart from topk: the radix select (topk), the batchwise methods and the cascade's candidate
plan all read the same sources and compare keys the same way; this module is the one place
that says how a column becomes a batch (nulls refused, the file named) and how a float or
integer key becomes an unsigned integer whose ascending order is best-first.
"""

from __future__ import annotations

from collections.abc import Callable, Iterable, Iterator, Mapping, Sequence
from dataclasses import dataclass
from os import PathLike
from typing import Literal, Protocol

import numpy as np
import pyarrow as pa
from numpy.typing import ArrayLike

from colorfilter.errors import BadDataError
from colorfilter.io.location import Location, as_location
from colorfilter.io.transfer import open_parquet

Direction = Literal["max", "min"]
Batch = dict[str, np.ndarray]
Columns = Mapping[str, ArrayLike] | pa.Table | pa.RecordBatch

SEQ_ID = "seq_id"
DEFAULT_BATCH_ROWS = 1 << 19


# ----------------------------------------------------------------------------- sources


class Source(Protocol):
    """Rows to select from, read in batches; may be read several times (one per pass)."""

    def num_rows(self) -> int: ...

    def iter_batches(self, columns: Sequence[str]) -> Iterator[Batch]: ...


def _column(data: Columns, name: str, where: str) -> np.ndarray:
    """One column as numpy, refusing nulls (a null key has no place in a ranking)."""
    names = data.column_names if isinstance(data, (pa.Table, pa.RecordBatch)) else list(data)
    if name not in names:
        raise KeyError(f"{where}: missing column {name!r} (have {sorted(names)})")
    if isinstance(data, (pa.Table, pa.RecordBatch)):
        column = data.column(name)
        if column.null_count:
            raise BadDataError(f"{where}: column {name!r} has {column.null_count} nulls")
        return column.to_numpy()
    return np.asarray(data[name])


class ArraySource:
    """In-memory columns (a mapping of arrays or an Arrow table), or a list of such parts."""

    def __init__(self, data: Columns | Sequence[Columns], batch_rows: int = DEFAULT_BATCH_ROWS):
        self.parts = list(data) if isinstance(data, (list, tuple)) else [data]
        self.batch_rows = batch_rows

    def num_rows(self) -> int:
        return sum(len(_column(part, SEQ_ID, "in-memory data")) for part in self.parts)

    def iter_batches(self, columns: Sequence[str]) -> Iterator[Batch]:
        for index, part in enumerate(self.parts):
            arrays = {name: _column(part, name, f"in-memory part {index}") for name in columns}
            n_rows = len(arrays[SEQ_ID]) if SEQ_ID in arrays else len(next(iter(arrays.values())))
            for start in range(0, n_rows, self.batch_rows):
                stop = start + self.batch_rows
                yield {name: array[start:stop] for name, array in arrays.items()}


class ParquetSource:
    """Parquet files read in record batches, only the needed columns (file order is irrelevant).

    Paths may be local or Locations on a bucket (colorfilter.io), read through pyarrow's
    filesystems without a local copy.
    """

    def __init__(self, paths: Iterable[str | PathLike | Location],
                 batch_rows: int = DEFAULT_BATCH_ROWS):
        self.locations = [as_location(path) for path in paths]
        self.paths = [loc.url for loc in self.locations]
        self.batch_rows = batch_rows
        self._num_rows: int | None = None

    def num_rows(self) -> int:
        if self._num_rows is None:
            total = 0
            for loc in self.locations:
                with open_parquet(loc) as parquet_file:
                    total += parquet_file.metadata.num_rows
            self._num_rows = total
        return self._num_rows

    def iter_batches(self, columns: Sequence[str]) -> Iterator[Batch]:
        for loc in self.locations:
            path = loc.url
            with open_parquet(loc) as parquet_file:
                missing = set(columns) - set(parquet_file.schema_arrow.names)
                if missing:
                    raise KeyError(f"{path}: missing columns {sorted(missing)}")
                for batch in parquet_file.iter_batches(batch_size=self.batch_rows,
                                                       columns=columns):
                    yield {name: _column(batch, name, path) for name in columns}


def as_source(data: Source | Columns | Sequence[Columns]) -> Source:
    """Accept a Source, or in-memory columns (wrapped in an ArraySource)."""
    if hasattr(data, "iter_batches") and hasattr(data, "num_rows") and callable(data.num_rows):
        return data  # type: ignore[return-value]
    return ArraySource(data)  # type: ignore[arg-type]


# ----------------------------------------------------------------------------- keys


@dataclass(frozen=True)
class DerivedKey:
    """A key computed per batch from columns (e.g. a seeded random key), so it still streams."""

    columns: tuple[str, ...]
    compute: Callable[[Batch], np.ndarray]
    name: str = "derived key"


KeySpec = str | DerivedKey


def key_columns(key: KeySpec) -> list[str]:
    names = [key] if isinstance(key, str) else list(key.columns)
    return [SEQ_ID] + [name for name in names if name != SEQ_ID]


def key_values(key: KeySpec, batch: Batch) -> np.ndarray:
    return batch[key] if isinstance(key, str) else np.asarray(key.compute(batch))


def key_name(key: KeySpec) -> str:
    return f"column {key!r}" if isinstance(key, str) else f"{key.name} ({', '.join(key.columns)})"


def sortable_key(key: np.ndarray, direction: Direction) -> tuple[np.ndarray, int]:
    """Map keys to uint64 whose ascending order is best-first; return (values, significant bits).

    Floats use the usual sign-flip trick on their bit pattern (exact; -0.0 is folded into +0.0
    so it ties with it as in a numeric sort). NaN must be rejected before calling this.
    """
    if direction not in ("max", "min"):
        raise ValueError(f"direction must be 'max' or 'min', got {direction!r}")
    key = np.asarray(key)
    if key.dtype.kind == "f":
        float_type, uint_type, bits = (
            (np.float64, np.uint64, 64) if key.dtype.itemsize > 4 else (np.float32, np.uint32, 32)
        )
        raw = (key.astype(float_type, copy=False) + float_type(0.0)).view(uint_type)
        sign = uint_type(1 << (bits - 1))
        ordered = np.where(raw & sign, ~raw, raw | sign)
    elif key.dtype.kind in "iu" or key.dtype.kind == "b":
        bits = 64
        if key.dtype.kind == "i":
            ordered = key.astype(np.int64, copy=False).view(np.uint64) ^ np.uint64(1 << 63)
        else:
            ordered = key.astype(np.uint64, copy=False)
    else:
        raise TypeError(f"cannot rank keys of dtype {key.dtype}")
    if direction == "max":
        ordered = ~ordered
    return ordered.astype(np.uint64, copy=False), bits


def count_nan(key: np.ndarray) -> int:
    return int(np.count_nonzero(np.isnan(key))) if key.dtype.kind == "f" else 0


def as_seq_ids(seq_id: np.ndarray) -> np.ndarray:
    """seq_ids as uint64; signed input is accepted when non-negative."""
    seq_id = np.asarray(seq_id)
    if seq_id.dtype == np.uint64:
        return seq_id
    if seq_id.dtype.kind not in "iu":
        raise TypeError(f"seq_id must be integers, got dtype {seq_id.dtype}")
    if seq_id.dtype.kind == "i" and seq_id.size and seq_id.min() < 0:
        raise BadDataError(f"{int(np.count_nonzero(seq_id < 0))} negative seq_ids")
    return seq_id.astype(np.uint64)
