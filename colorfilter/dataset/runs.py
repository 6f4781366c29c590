"""Map side of writing selections: one task per pool token shard serves every selection at once.

A task reads its token shard and its score shard once, joins them by seq_id, decodes the text of
the rows any selection keeps (each row once, whatever the number of selections), and writes, per
selection, those rows sorted by output position into a run file `runs/<key>/<shard>.arrow`:
an uncompressed Arrow IPC file, so a reducer memory-maps it and slices the rows of its range
without decoding anything (runs are temporary; their disk use is about that of the selected
rows' tokens and text, uncompressed). Its counts
and histogram go into a record `maps/<shard>.json`, written last: a rerun of the same plan
reuses every task whose record and run files check out.

Selections reach the tasks as files, not arguments: `index/<key>.ids.npy` (sorted seq_ids) and
`index/<key>.pos.npy` (their output positions), memory-mapped, so a task loads only the slice of
ids in its shard's seq_id range and nothing large crosses the wire.
"""

from __future__ import annotations

import math
import os
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np
import pyarrow as pa
import pyarrow.compute as pc
import pyarrow.parquet as pq

from colorfilter.dataset.join import SCORE_COLUMNS, ScoreLookup, _sorted_lookup
from colorfilter.dataset.schema import OUTPUT_SCHEMA
from colorfilter.errors import BadDataError
from colorfilter.io.atomic import TMP_PREFIX, atomic_path, read_json_object, write_json_atomic

POSITION = "__position"
RUN_SCHEMA = OUTPUT_SCHEMA.append(pa.field(POSITION, pa.int64()))
PROVENANCE = ("source_file", "doc_first", "doc_last", "doc_offset", "source")
Decoder = Callable[[list[list[int]]], list[str]]


@dataclass(frozen=True)
class MapSettings:
    """What every map task shares: picklable, sent once per worker."""

    work_dir: str
    keys: tuple[str, ...]  # one per selection: names its index and run files
    tokenizer_dir: str
    edges: tuple[float, ...]  # histogram bin edges shared by every selection
    plan_hash: str


@dataclass(frozen=True)
class MapTask:
    index: int  # the token shard's position in the sorted listing: names its run files
    token_path: str
    score_path: str


def index_paths(work_dir: str | Path, key: str) -> tuple[Path, Path]:
    base = Path(work_dir) / "index"
    return base / f"{key}.ids.npy", base / f"{key}.pos.npy"


def run_path(work_dir: str | Path, key: str, index: int) -> Path:
    return Path(work_dir) / "runs" / key / f"{index:06d}.arrow"


def map_record_path(work_dir: str | Path, index: int) -> Path:
    return Path(work_dir) / "maps" / f"{index:06d}.json"


def save_index(work_dir: str | Path, key: str, sorted_ids: np.ndarray, positions: np.ndarray):
    """Write one selection's (sorted ids, positions) for the map tasks, atomically."""
    for path, array in zip(index_paths(work_dir, key), (sorted_ids, positions), strict=True):
        with atomic_path(path) as tmp, open(tmp, "wb") as handle:
            np.save(handle, array)


def finished_map(
    work_dir: str | Path, task: MapTask, plan_hash: str, keys: Sequence[str]
) -> dict | None:
    """The task's record when it belongs to this plan, covers `keys` and their runs are whole."""
    record = read_json_object(map_record_path(work_dir, task.index))
    if record is None or record.get("plan_hash") != plan_hash:
        return None
    selections = record.get("selections", {})
    if any(key not in selections for key in keys):
        return None
    for key in keys:
        sel, path = selections[key], run_path(work_dir, key, task.index)
        if sel["rows"] and (not path.is_file() or path.stat().st_size != sel["run_bytes"]):
            return None
    return record


class MapWorker:
    """Built once per worker: the tokenizer's decoder; then called once per token shard."""

    def __init__(self, settings: MapSettings):
        from colorfilter.dataset.decode import load_decoder

        self.settings = settings
        self.decode = load_decoder(settings.tokenizer_dir)

    def __call__(self, task: MapTask) -> dict:
        return map_shard(task, self.settings, self.decode)


def map_shard(task: MapTask, settings: MapSettings, decode: Decoder) -> dict[str, Any]:
    """Write every selection's rows of one token shard; return (and record) the counts."""
    token_path, score_path = Path(task.token_path), Path(task.score_path)
    scores = ScoreLookup.from_table(
        pq.read_table(score_path, columns=["seq_id", *SCORE_COLUMNS]), score_path.name
    )
    table = pq.read_table(token_path)
    ids = table.column("seq_id").to_numpy().astype(np.uint64)
    has_score, score_row = scores.lookup(ids)
    if int(has_score.sum()) != len(scores):
        raise BadDataError(
            f"score shard {score_path} has {len(scores) - int(has_score.sum())} seq_ids that are "
            f"not in token shard {token_path}: rescore the pool"
        )
    score = np.where(has_score, scores.columns["score"][score_row], np.nan).astype(np.float32)
    edges = np.asarray(settings.edges)
    finite = np.isfinite(score)
    record: dict[str, Any] = {
        "plan_hash": settings.plan_hash,
        "token_rows": int(ids.size),
        "pool_hist": np.histogram(score[finite], bins=edges)[0].tolist(),
        "pool_non_finite": int((has_score & ~finite).sum()),
        "selections": {},
    }
    chosen = {key: _chosen_rows(settings.work_dir, key, ids) for key in settings.keys}
    union = np.unique(np.concatenate([rows for rows, _ in chosen.values()] or [np.empty(0, int)]))
    base = _base_table(table, union, scores, score_row, decode)
    for key, (rows, positions) in chosen.items():
        where = token_path.name
        if not has_score[rows].all():
            raise BadDataError(f"a selected seq_id in {where} has no score")
        order = np.argsort(positions, kind="stable")  # the run is sorted by output position
        part = base.take(pa.array(np.searchsorted(union, rows)[order]))
        part = part.append_column(POSITION, pa.array(positions[order], pa.int64()))
        record["selections"][key] = _write_run(
            part, run_path(settings.work_dir, key, task.index), rows, has_score, score, edges
        )
    write_json_atomic(map_record_path(settings.work_dir, task.index), record)
    return record


def _chosen_rows(work_dir: str, key: str, ids: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """Rows of this shard that selection `key` keeps, and their output positions."""
    ids_path, pos_path = index_paths(work_dir, key)
    all_ids = np.load(ids_path, mmap_mode="r")
    if ids.size == 0 or all_ids.size == 0:
        return np.empty(0, np.int64), np.empty(0, np.int64)
    low = int(np.searchsorted(all_ids, ids.min(), side="left"))
    high = int(np.searchsorted(all_ids, ids.max(), side="right"))
    sub_ids = np.asarray(all_ids[low:high])
    sub_pos = np.asarray(np.load(pos_path, mmap_mode="r")[low:high])
    hit, where = _sorted_lookup(sub_ids, ids)
    rows = np.flatnonzero(hit)
    if np.unique(where[rows]).size != rows.size:
        raise BadDataError("a selected seq_id occurs more than once in the pool")
    return rows, sub_pos[where[rows]]


def _base_table(
    table: pa.Table, rows: np.ndarray, scores: ScoreLookup, score_row: np.ndarray, decode: Decoder
) -> pa.Table:
    """The output columns of `rows` (any selection's), text decoded once per row."""
    chosen = table.take(pa.array(rows, pa.int64()))
    input_ids = chosen.column("input_ids").cast(OUTPUT_SCHEMA.field("input_ids").type)
    columns: dict[str, Any] = {
        "seq_id": chosen.column("seq_id").cast(pa.uint64()),
        "input_ids": input_ids,
        "text": pa.array(decode(token_lists(input_ids)), pa.string()),
        **{col: pa.array(scores.columns[col][score_row[rows]]) for col in SCORE_COLUMNS},
        "n_tokens": pc.list_value_length(input_ids).cast(pa.int32()),
    }
    for name in PROVENANCE:
        kind = OUTPUT_SCHEMA.field(name).type
        present = name in chosen.schema.names
        columns[name] = chosen.column(name).cast(kind) if present else pa.nulls(rows.size, kind)
    return pa.table(columns, schema=OUTPUT_SCHEMA)


def token_lists(input_ids: pa.ChunkedArray | pa.Array) -> list[list[int]]:
    """Python token lists of a list<int32> column via one flat conversion (no per-row numpy)."""
    if isinstance(input_ids, pa.ChunkedArray):
        input_ids = input_ids.combine_chunks()
    if len(input_ids) == 0:
        return []
    offsets = input_ids.offsets.to_numpy(zero_copy_only=False)
    flat = input_ids.values.slice(int(offsets[0]), int(offsets[-1] - offsets[0]))
    values = flat.to_numpy(zero_copy_only=False).tolist()
    bounds = (offsets - offsets[0]).tolist()
    return [values[a:b] for a, b in zip(bounds[:-1], bounds[1:])]


def _write_run(
    part: pa.Table,
    path: Path,
    rows: np.ndarray,
    has_score: np.ndarray,
    score: np.ndarray,
    edges: np.ndarray,
) -> dict[str, Any]:
    """Write one selection's rows of the shard (already sorted by position); return its counts."""
    rest = np.ones(has_score.size, dtype=bool)
    rest[rows] = False
    selected_score = score[rows]
    finite = selected_score[np.isfinite(selected_score)]
    stats: dict[str, Any] = {
        "rows": int(rows.size),
        "not_selected": int((rest & has_score & np.isfinite(score)).sum()),
        "unscored": int((rest & ~has_score).sum()),
        "non_finite": int((rest & has_score & ~np.isfinite(score)).sum()),
        "selected_tokens": int(pc.sum(part.column("n_tokens")).as_py() or 0),
        "selected_min": float(finite.min()) if finite.size else math.inf,
        "selected_max": float(finite.max()) if finite.size else -math.inf,
        "hist": np.histogram(finite, bins=edges)[0].tolist(),
        "run_bytes": 0,
    }
    if rows.size:
        _write_run_file(path, part.cast(RUN_SCHEMA).combine_chunks())
        stats["run_bytes"] = path.stat().st_size
    return stats


def _write_run_file(path: Path, table: pa.Table) -> None:
    """Temp file then rename (a killed task leaves no partial run), without an fsync: a run is
    scratch that the reducers read back at once from the page cache; after a power loss its
    size no longer matching the record (or the record missing) redoes the task."""
    path.parent.mkdir(parents=True, exist_ok=True)
    tmp = path.with_name(f"{TMP_PREFIX}{path.name}.{os.getpid()}")
    try:
        with pa.OSFile(str(tmp), "wb") as sink, pa.ipc.new_file(sink, RUN_SCHEMA) as writer:
            writer.write_table(table)
        os.replace(tmp, path)
    finally:
        tmp.unlink(missing_ok=True)


def read_run(path: str | Path) -> pa.Table:
    """A run file, memory-mapped: zero-copy, only the pages a reader touches are read."""
    return pa.ipc.open_file(pa.memory_map(str(path), "r")).read_all()


def merge_counts(records: Sequence[dict], key: str) -> dict[str, Any]:
    """One selection's counts summed over every map record."""
    sels = [r["selections"][key] for r in records]
    return {
        "token_rows": sum(r["token_rows"] for r in records),
        "found": sum(s["rows"] for s in sels),
        **{
            name: sum(s[name] for s in sels)
            for name in ("not_selected", "unscored", "non_finite", "selected_tokens")
        },
        "selected_min": min((s["selected_min"] for s in sels), default=math.inf),
        "selected_max": max((s["selected_max"] for s in sels), default=-math.inf),
        "hist": np.sum([s["hist"] for s in sels], axis=0, dtype=np.int64),
        "pool_hist": np.sum([r["pool_hist"] for r in records], axis=0, dtype=np.int64),
        "pool_non_finite": sum(r["pool_non_finite"] for r in records),
    }
