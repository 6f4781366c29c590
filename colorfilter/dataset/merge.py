"""Reduce side of writing selections: output shards assembled by a streamed k-way merge of runs.

Each reducer owns a contiguous range of whole output shards of one selection. It opens every
run file of that selection once, reads only the row groups whose positions overlap its range
(parquet statistics), and streams them in small batches: an output shard is the rows of every
run below the shard's end position, sorted. Reads are linear in rows plus runs x reducers,
whatever the number of output shards; memory is one output shard plus one row group per run.
A reducer's record (`reduce/<key>/<reducer>.json`, written after its shards) lets a rerun of
the same plan keep its shards.
"""

from __future__ import annotations

import resource
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import pyarrow as pa
import pyarrow.parquet as pq

from colorfilter.dataset.runs import POSITION, RUN_ROW_GROUP, RUN_SCHEMA
from colorfilter.dataset.schema import DATA_DIR, OUTPUT_SCHEMA, shard_name
from colorfilter.errors import BadDataError
from colorfilter.io.atomic import read_json_object, write_json_atomic, write_parquet_atomic


@dataclass(frozen=True)
class ReduceTask:
    work_dir: str
    plan_hash: str
    key: str  # the selection
    reducer: int
    out_dir: str
    first_shard: int
    end_shard: int  # exclusive
    num_shards: int
    rows_per_shard: int
    n_rows: int
    runs: tuple[str, ...]  # the selection's non-empty run files


def reducer_ranges(num_shards: int, reducers: int) -> list[tuple[int, int]]:
    """Split output shards 0..num_shards into `reducers` contiguous, near-equal ranges."""
    reducers = max(1, min(reducers, num_shards))
    bounds = [num_shards * r // reducers for r in range(reducers + 1)]
    return [(a, b) for a, b in zip(bounds[:-1], bounds[1:]) if b > a]


def reduce_record_path(work_dir: str | Path, key: str, reducer: int) -> Path:
    return Path(work_dir) / "reduce" / key / f"{reducer:04d}.json"


def finished_reduce(task: ReduceTask) -> dict[str, int] | None:
    """{relative path: size} of the reducer's shards when its record and files check out."""
    record = read_json_object(reduce_record_path(task.work_dir, task.key, task.reducer))
    if record is None or record.get("plan_hash") != task.plan_hash:
        return None
    if record.get("shards") != [task.first_shard, task.end_shard, task.num_shards]:
        return None  # another split of the shards (a rerun with another worker count)
    files = record.get("files", {})
    for rel, size in files.items():
        path = Path(task.out_dir) / rel
        if not path.is_file() or path.stat().st_size != size:
            return None
    return files


class ReduceWorker:
    """Stateless; a class only so the executor can build it once per worker."""

    def __call__(self, task: ReduceTask) -> dict[str, int]:
        return reduce_range(task)


def reduce_range(task: ReduceTask) -> dict[str, int]:
    """Write output shards [first_shard, end_shard) of one selection; return their sizes."""
    _raise_open_files_limit(len(task.runs) + 64)
    size = task.rows_per_shard
    low, high = task.first_shard * size, min(task.end_shard * size, task.n_rows)
    cursors = [_RunCursor(Path(p), low, high) for p in task.runs]
    files: dict[str, int] = {}
    for shard in range(task.first_shard, task.end_shard):
        start, stop = shard * size, min((shard + 1) * size, task.n_rows)
        pieces = [piece for cursor in cursors for piece in cursor.take_below(stop)]
        table = pa.Table.from_batches(pieces, schema=RUN_SCHEMA).sort_by(POSITION)
        if not np.array_equal(
            table.column(POSITION).to_numpy(), np.arange(start, max(stop, start))
        ):
            raise BadDataError(
                f"output shard {shard} of {task.out_dir} has missing or repeated rows: a selected "
                "seq_id occurs more than once in the pool, or the runs are damaged (rerun select)"
            )
        rel = f"{DATA_DIR}/{shard_name(shard, task.num_shards)}"
        out = table.select(OUTPUT_SCHEMA.names).cast(OUTPUT_SCHEMA).combine_chunks()
        write_parquet_atomic(Path(task.out_dir) / rel, out)
        files[rel] = (Path(task.out_dir) / rel).stat().st_size
    for cursor in cursors:
        cursor.close()
    record = {
        "plan_hash": task.plan_hash,
        "shards": [task.first_shard, task.end_shard, task.num_shards],
        "files": files,
    }
    write_json_atomic(reduce_record_path(task.work_dir, task.key, task.reducer), record)
    return files


class _RunCursor:
    """One run file read forward within [low, high), a row group at a time."""

    def __init__(self, path: Path, low: int, high: int):
        self.path, self.low, self.high = path, low, high
        self._file: pq.ParquetFile | None = None
        self._batches: Iterator[pa.RecordBatch] | None = None
        self._pending: pa.RecordBatch | None = None
        self._pending_pos: np.ndarray | None = None

    def _open(self) -> Iterator[pa.RecordBatch]:
        self._file = pq.ParquetFile(self.path)
        meta = self._file.metadata
        column = meta.num_columns - 1  # __position is the last leaf column
        groups = []
        for group in range(meta.num_row_groups):
            stats = meta.row_group(group).column(column).statistics
            if stats is None or not stats.has_min_max:
                groups.append(group)
            elif stats.max >= self.low and stats.min < self.high:
                groups.append(group)
        if not groups:
            return iter(())
        return self._file.iter_batches(batch_size=RUN_ROW_GROUP, row_groups=groups)

    def take_below(self, bound: int) -> list[pa.RecordBatch]:
        """The next rows whose position is below `bound` (positions ascend within a run)."""
        if self._batches is None:
            self._batches = self._open()
        out = []
        while True:
            if self._pending is None and not self._refill():
                return out
            pos = self._pending_pos
            cut = int(np.searchsorted(pos, bound))
            if cut:
                out.append(self._pending.slice(0, cut))
            if cut < pos.size:
                self._pending, self._pending_pos = self._pending.slice(cut), pos[cut:]
                return out
            self._pending = self._pending_pos = None

    def _refill(self) -> bool:
        for batch in self._batches:
            pos = batch.column(POSITION).to_numpy()
            a, b = np.searchsorted(pos, [self.low, self.high])
            if b > a:
                self._pending, self._pending_pos = batch.slice(int(a), int(b - a)), pos[a:b]
                return True
            if pos.size and pos[0] >= self.high:
                break
        self.close()
        return False

    def close(self) -> None:
        if self._file is not None:
            self._file.close()
            self._file = None
        self._batches = iter(())


def _raise_open_files_limit(wanted: int) -> None:
    """A reducer holds every run of its selection open: lift the soft fd limit if needed."""
    soft, hard = resource.getrlimit(resource.RLIMIT_NOFILE)
    if soft != resource.RLIM_INFINITY and soft < wanted:
        target = wanted if hard == resource.RLIM_INFINITY else min(wanted, hard)
        resource.setrlimit(resource.RLIMIT_NOFILE, (target, hard))
