"""Map side of writing selections: one task per pool token shard serves every selection at once.

A task reads its token shard and its score shard once, joins them by seq_id, decodes the text of
the rows any selection keeps (each row once, whatever the number of selections), and writes, per
selection, those rows sorted by output position into a run file `maps/<shard>/<key>.arrow`:
an uncompressed Arrow IPC file, so a reducer slices the rows of its range without decoding
anything (memory-mapped on local disk, ranged reads on a bucket: dataset/runfiles.py; runs are
temporary; their size is about that of the selected rows' tokens and text, uncompressed). Its
counts and histogram go into the task's completion record `maps/<shard>.json`
(colorfilter.io.commit, written last, listing the runs): a rerun of the same plan reuses every
task whose record and run files check out.

Selections reach the tasks as files, not arguments: `index/<key>.ids.npy` (sorted seq_ids) and
`index/<key>.pos.npy` (their output positions), so a task reads only the slice of ids in its
shard's seq_id range and nothing large crosses the wire. Every path is a Location: tasks do
their own I/O on any node.
"""

from __future__ import annotations

import math
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass
from typing import Any

import numpy as np
import pyarrow as pa
import pyarrow.compute as pc

from colorfilter.dataset.decode import load_decoder
from colorfilter.dataset.join import (
    LM_SCORES,
    SCORE_COLUMNS,
    ScoreColumns,
    ScoreLookup,
    _sorted_lookup,
)
from colorfilter.dataset.runfiles import (  # noqa: F401 - read_run re-exported
    read_run,
    save_array,
    sorted_slice,
    write_run_file,
)
from colorfilter.dataset.schema import OUTPUT_SCHEMA
from colorfilter.errors import BadDataError
from colorfilter.io import commit
from colorfilter.io.cache import local_copy
from colorfilter.io.location import Location
from colorfilter.io.transfer import read_parquet

POSITION = "__position"
RUN_SCHEMA = OUTPUT_SCHEMA.append(pa.field(POSITION, pa.int64()))
PROVENANCE = ("source_file", "doc_first", "doc_last", "doc_offset", "source")
Decoder = Callable[[list[list[int]]], list[str]]


@dataclass(frozen=True)
class MapSettings:
    """What every map task shares: picklable, sent once per worker."""

    work_dir: Location
    keys: tuple[str, ...]  # one per selection: names its index and run files
    tokenizer_dir: Location
    edges: tuple[float, ...]  # histogram bin edges shared by every selection
    plan_hash: str
    score_columns: ScoreColumns = LM_SCORES  # which score shard column is each output one
    partial_scores: bool = False  # the cascade's: chunks without an LM score may be selected


@dataclass(frozen=True)
class MapTask:
    index: int  # the token shard's position in the sorted listing: names its run files
    token_path: Location
    score_path: Location
    token_entry: Mapping[str, Any] | None = None  # what prepare's record says of the shard
    score_entry: Mapping[str, Any] | None = None  # what score's record says of its shard


def index_paths(work_dir: Location, key: str) -> tuple[Location, Location]:
    base = work_dir.join("index")
    return base.join(f"{key}.ids.npy"), base.join(f"{key}.pos.npy")


def run_path(work_dir: Location, key: str, index: int) -> Location:
    return work_dir.join("maps", f"{index:06d}", f"{key}.arrow")


def map_record_path(work_dir: Location, index: int) -> Location:
    return work_dir.join("maps", f"{index:06d}.json")


def save_index(work_dir: Location, key: str, sorted_ids: np.ndarray, positions: np.ndarray):
    """Write one selection's (sorted ids, positions) for the map tasks, each whole or not at all."""
    for loc, array in zip(index_paths(work_dir, key), (sorted_ids, positions), strict=True):
        save_array(loc, array)


def finished_maps(
    work_dir: Location, tasks: Sequence[MapTask], plan_hash: str, keys: Sequence[str]
) -> dict[int, dict]:
    """{task index: counts} of the tasks committed for this plan with runs for every key."""
    records = {map_record_path(work_dir, task.index).url: task.index for task in tasks}
    done = {}
    for url, record in commit.committed(list(records)).items():
        meta = record.meta
        covered = all(key in meta.get("selections", {}) for key in keys)
        if meta.get("plan_hash") == plan_hash and covered:
            done[records[url]] = meta
    return done


class MapWorker:
    """Built once per worker: the tokenizer's decoder; then called once per token shard."""

    def __init__(self, settings: MapSettings):
        self.settings = settings
        self.decode = load_decoder(local_copy(settings.tokenizer_dir))

    def __call__(self, task: MapTask) -> dict:
        return map_shard(task, self.settings, self.decode)


def map_shard(task: MapTask, settings: MapSettings, decode: Decoder) -> dict[str, Any]:
    """Write every selection's rows of one token shard; return (and record) the counts."""
    token_path, score_path = task.token_path, task.score_path
    shard_columns = [column for _, column in settings.score_columns]
    scores = ScoreLookup.from_table(
        read_parquet(score_path, ["seq_id", *shard_columns], task.score_entry), score_path.name,
        settings.score_columns,
    )  # fmt: skip
    table = read_parquet(token_path, expected=task.token_entry)  # checked against its record
    ids = table.column("seq_id").to_numpy().astype(np.uint64)
    has_score, score_row = scores.lookup(ids)
    if int(has_score.sum()) != len(scores):
        raise BadDataError(
            f"score shard {score_path} has {len(scores) - int(has_score.sum())} seq_ids that are "
            f"not in token shard {token_path}: rescore the pool"
        )
    score = scores.values("score", has_score, score_row)
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
    base = _base_table(table, union, scores, (has_score, score_row), decode)
    runs = []
    for key, (rows, positions) in chosen.items():
        if not settings.partial_scores and not has_score[rows].all():
            raise BadDataError(f"a selected seq_id in {token_path.name} has no score")
        order = np.argsort(positions, kind="stable")  # the run is sorted by output position
        part = base.take(pa.array(np.searchsorted(union, rows)[order]))
        part = part.append_column(POSITION, pa.array(positions[order], pa.int64()))
        run = run_path(settings.work_dir, key, task.index)
        record["selections"][key] = _write_run(part, run, rows, has_score, score, edges)
        runs += [run] if rows.size else []
    commit.commit_unit(map_record_path(settings.work_dir, task.index), runs, meta=record)
    return record


def _chosen_rows(work_dir: Location, key: str, ids: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """Rows of this shard that selection `key` keeps, and their output positions."""
    if ids.size == 0:
        return np.empty(0, np.int64), np.empty(0, np.int64)
    sub_ids, sub_pos = sorted_slice(*index_paths(work_dir, key), int(ids.min()), int(ids.max()))
    if sub_ids.size == 0:
        return np.empty(0, np.int64), np.empty(0, np.int64)
    hit, where = _sorted_lookup(sub_ids, ids)
    rows = np.flatnonzero(hit)
    if np.unique(where[rows]).size != rows.size:
        raise BadDataError("a selected seq_id occurs more than once in the pool")
    return rows, sub_pos[where[rows]]


def _base_table(
    table: pa.Table, rows: np.ndarray, scores: ScoreLookup,
    found: tuple[np.ndarray, np.ndarray], decode: Decoder,
) -> pa.Table:  # fmt: skip
    """The output columns of `rows` (any selection's), text decoded once per row; a row without
    a score (a chunk the cascade's prefilter skipped, chosen by random or dsir) has NaN ones."""
    has_score, score_row = found
    chosen = table.take(pa.array(rows, pa.int64()))
    input_ids = chosen.column("input_ids").cast(OUTPUT_SCHEMA.field("input_ids").type)
    columns: dict[str, Any] = {
        "seq_id": chosen.column("seq_id").cast(pa.uint64()),
        "input_ids": input_ids,
        "text": pa.array(decode(token_lists(input_ids)), pa.string()),
        **{col: pa.array(scores.values(col, has_score[rows], score_row[rows]))
           for col in SCORE_COLUMNS},
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
    path: Location,
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
        "selected_unscored": int((~has_score[rows]).sum()),
        "not_selected": int((rest & has_score & np.isfinite(score)).sum()),
        "unscored": int((rest & ~has_score).sum()),
        "non_finite": int((rest & has_score & ~np.isfinite(score)).sum()),
        "selected_tokens": int(pc.sum(part.column("n_tokens")).as_py() or 0),
        "selected_min": float(finite.min()) if finite.size else math.inf,
        "selected_max": float(finite.max()) if finite.size else -math.inf,
        "hist": np.histogram(finite, bins=edges)[0].tolist(),
        "run_bytes": 0,
    }
    if rows.size:  # local: temp then rename, no fsync (scratch; a lost run fails its record)
        table = part.cast(RUN_SCHEMA).combine_chunks()
        stats["run_bytes"] = write_run_file(path, table, RUN_SCHEMA, POSITION)
    return stats


def merge_counts(records: Sequence[dict], key: str) -> dict[str, Any]:
    """One selection's counts summed over every map record."""
    sels = [r["selections"][key] for r in records]
    return {
        "token_rows": sum(r["token_rows"] for r in records),
        "found": sum(s["rows"] for s in sels),
        **{
            name: sum(s.get(name, 0) for s in sels)  # records of older versions lack some
            for name in ("not_selected", "unscored", "non_finite", "selected_tokens",
                         "selected_unscored")
        },
        "selected_min": min((s["selected_min"] for s in sels), default=math.inf),
        "selected_max": max((s["selected_max"] for s in sels), default=-math.inf),
        "hist": np.sum([s["hist"] for s in sels], axis=0, dtype=np.int64),
        "pool_hist": np.sum([r["pool_hist"] for r in records], axis=0, dtype=np.int64),
        "pool_non_finite": sum(r["pool_non_finite"] for r in records),
    }
