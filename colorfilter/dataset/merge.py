"""Reduce side of writing selections: output shards assembled from position slices of runs.

Each reducer owns a contiguous range of whole output shards of one selection. It opens every
run file of that selection once (uncompressed Arrow IPC: nothing is decoded; memory-mapped on
local disk, only the batches overlapping its range fetched from a bucket) and keeps a cursor
per run; positions ascend within a run, so an output shard is, for every run, the slice
of rows below the shard's end position, and one `take` by position puts them in order. Reads
are linear in rows plus runs x shards binary searches (no data touched twice); memory is one
output shard plus the runs' position columns (8 bytes a selected row of the reducer's runs) and
the mapped pages of the slices being read (on a bucket: the fetched batches of its range). A
reducer's completion record (colorfilter.io.commit: `.tmp-reduce-<reducer>.json` in the
selection's folder, beside the shards it lists, written after them; the manifest ignores
`.tmp-` files and the folder's finish removes them) lets a rerun of the same plan keep its
shards. Shards are serialised in memory once, so their sha256 goes into the record and the
manifest needs not read them back.
"""

from __future__ import annotations

import hashlib
import resource
from collections.abc import Sequence
from dataclasses import dataclass

import numpy as np
import pyarrow as pa
import pyarrow.parquet as pq

from colorfilter.dataset.runfiles import read_run_range
from colorfilter.dataset.runs import POSITION, RUN_SCHEMA
from colorfilter.dataset.schema import DATA_DIR, OUTPUT_SCHEMA, shard_name
from colorfilter.errors import BadDataError
from colorfilter.io import commit, storage
from colorfilter.io.atomic import TMP_PREFIX
from colorfilter.io.location import Location

REDUCE_RECORD = TMP_PREFIX + "reduce-{:04d}.json"
Files = dict[str, dict[str, int | str]]  # relative path -> {"size", "sha256"}


@dataclass(frozen=True)
class ReduceTask:
    plan_hash: str
    key: str  # the selection
    reducer: int
    out_dir: Location
    first_shard: int
    end_shard: int  # exclusive
    num_shards: int
    rows_per_shard: int
    n_rows: int
    runs: tuple[Location, ...] = ()  # the selection's non-empty runs (known once maps are done)


def reducer_ranges(num_shards: int, reducers: int) -> list[tuple[int, int]]:
    """Split output shards 0..num_shards into `reducers` contiguous, near-equal ranges."""
    reducers = max(1, min(reducers, num_shards))
    bounds = [num_shards * r // reducers for r in range(reducers + 1)]
    return [(a, b) for a, b in zip(bounds[:-1], bounds[1:]) if b > a]


def reduce_record_path(out_dir: Location, reducer: int) -> Location:
    return out_dir.join(REDUCE_RECORD.format(reducer))


def finished_reduces(tasks: Sequence[ReduceTask]) -> dict[ReduceTask, Files]:
    """{task: its shards' sizes and hashes} of the reducers committed for their plan and split."""
    by_url = {reduce_record_path(t.out_dir, t.reducer).url: t for t in tasks}
    done = {}
    for url, record in commit.committed(list(by_url)).items():
        task, meta = by_url[url], record.meta
        if meta.get("plan_hash") != task.plan_hash:
            continue
        if meta.get("shards") != [task.first_shard, task.end_shard, task.num_shards]:
            continue  # another split of the shards (a rerun with another worker count)
        hashes = meta.get("sha256", {})
        done[task] = {
            rel: {"size": entry["size"], "sha256": hashes.get(rel, "")}
            for rel, entry in record.objects.items()
        }
    return done


def reduce_range(task: ReduceTask) -> Files:
    """Write output shards [first_shard, end_shard) of one selection; return their files."""
    _raise_open_files_limit(len(task.runs) + 64)
    size = task.rows_per_shard
    low = task.first_shard * size
    high = min(task.end_shard * size, task.n_rows)
    runs = [read_run_range(p, low, high) for p in task.runs]
    positions = [run.column(POSITION).to_numpy() for run in runs]
    cursors = [int(np.searchsorted(pos, low)) for pos in positions]
    files: Files = {}
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
        files[rel] = write_shard(task.out_dir.join(rel), out.combine_chunks())
    del runs, positions
    meta = {
        "plan_hash": task.plan_hash,
        "shards": [task.first_shard, task.end_shard, task.num_shards],
        "sha256": {rel: entry["sha256"] for rel, entry in files.items()},
    }
    objects = [task.out_dir.join(rel) for rel in files]
    commit.commit_unit(reduce_record_path(task.out_dir, task.reducer), objects, meta)
    return files


def write_shard(loc: Location, table: pa.Table) -> dict[str, int | str]:
    """One zstd parquet shard, whole or not at all; its size and sha256 (hashed in memory)."""
    sink = pa.BufferOutputStream()
    pq.write_table(table, sink, compression="zstd")
    data = memoryview(sink.getvalue())
    storage.write_bytes(loc, data)
    return {"size": data.nbytes, "sha256": hashlib.sha256(data).hexdigest()}


def _raise_open_files_limit(wanted: int) -> None:
    """A reducer holds every run of its selection open: lift the soft fd limit if needed."""
    soft, hard = resource.getrlimit(resource.RLIMIT_NOFILE)
    if soft != resource.RLIM_INFINITY and soft < wanted:
        target = wanted if hard == resource.RLIM_INFINITY else min(wanted, hard)
        resource.setrlimit(resource.RLIMIT_NOFILE, (target, hard))
