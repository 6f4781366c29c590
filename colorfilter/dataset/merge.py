"""Reduce side of writing selections: output shards assembled from position slices of runs.

Each reducer owns a contiguous range of whole output shards of one selection. It memory-maps
every run file of that selection once (uncompressed Arrow IPC: nothing is decoded) and keeps a
cursor per run; positions ascend within a run, so an output shard is, for every run, the slice
of rows below the shard's end position, and one `take` by position puts them in order. Reads
are linear in rows plus runs x shards binary searches (no data touched twice); memory is one
output shard plus the runs' position columns (8 bytes a selected row of the reducer's runs) and
the mapped pages of the slices being read. A reducer's record (`reduce/<key>/<reducer>.json`,
written after its shards) lets a rerun of the same plan keep its shards.
"""

from __future__ import annotations

import resource
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import pyarrow as pa

from colorfilter.dataset.runs import POSITION, RUN_SCHEMA, read_run
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
    runs: tuple[str, ...] = ()  # the selection's non-empty run files (known once maps are done)


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


def reduce_range(task: ReduceTask) -> dict[str, int]:
    """Write output shards [first_shard, end_shard) of one selection; return their sizes."""
    _raise_open_files_limit(len(task.runs) + 64)
    size = task.rows_per_shard
    low = task.first_shard * size
    runs = [read_run(p) for p in task.runs]
    positions = [run.column(POSITION).to_numpy() for run in runs]
    cursors = [int(np.searchsorted(pos, low)) for pos in positions]
    files: dict[str, int] = {}
    for shard in range(task.first_shard, task.end_shard):
        start, stop = shard * size, min((shard + 1) * size, task.n_rows)
        pieces, found = [], []
        for number, (run, pos) in enumerate(zip(runs, positions, strict=True)):
            first, end = cursors[number], int(np.searchsorted(pos, stop))
            if end > first:
                pieces.append(run.slice(first, end - first))
                found.append(pos[first:end])
            cursors[number] = end
        where = np.concatenate(found) if found else np.empty(0, np.int64)
        order = np.argsort(where, kind="stable")
        if not np.array_equal(where[order], np.arange(start, max(stop, start))):
            raise BadDataError(
                f"output shard {shard} of {task.out_dir} has missing or repeated rows: a selected "
                "seq_id occurs more than once in the pool, or the runs are damaged (rerun select)"
            )
        table = pa.concat_tables(pieces) if pieces else RUN_SCHEMA.empty_table()
        out = table.select(OUTPUT_SCHEMA.names).take(pa.array(order)).cast(OUTPUT_SCHEMA)
        rel = f"{DATA_DIR}/{shard_name(shard, task.num_shards)}"
        write_parquet_atomic(Path(task.out_dir) / rel, out.combine_chunks())
        files[rel] = (Path(task.out_dir) / rel).stat().st_size
    del runs, positions
    record = {
        "plan_hash": task.plan_hash,
        "shards": [task.first_shard, task.end_shard, task.num_shards],
        "files": files,
    }
    write_json_atomic(reduce_record_path(task.work_dir, task.key, task.reducer), record)
    return files


def _raise_open_files_limit(wanted: int) -> None:
    """A reducer holds every run of its selection open: lift the soft fd limit if needed."""
    soft, hard = resource.getrlimit(resource.RLIMIT_NOFILE)
    if soft != resource.RLIM_INFINITY and soft < wanted:
        target = wanted if hard == resource.RLIM_INFINITY else min(wanted, hard)
        resource.setrlimit(resource.RLIMIT_NOFILE, (target, hard))
