"""Write selections as released dataset folders: one pass over the pool serves all of them.

Layout of each `out_dir` (normally `OUTPUT/selected/<method>-tau<tau>/`):
  data/train-00000-of-0000N.parquet  zstd shards, rows in a seeded pseudo-random order
  indices.npy                        uint64 seq_ids in exactly that row order
  scores_histogram.png               pool and selected scores, with the threshold
  README.md                          dataset card (YAML front matter for `load_dataset`)
  manifest.json                      provenance, counts and file hashes; written last = complete

How (`write_selections`, for any number of selections over the same pool): the driver fixes
each selection's output positions (dataset/order.py) and the histogram's bins (one read of the
score column); then one map task per token shard, on the executor, reads the shard and its
scores once, decodes each kept row's text once and writes every selection's rows as a run
sorted by position (dataset/runs.py); then reducers, each owning a contiguous range of one
selection's output shards, assemble those shards from position slices of its runs
(dataset/merge.py), on the same workers (one pool for both phases). Each folder is finished
(indices, histogram, card, manifest last) as soon as its reducers are. All intermediate state
lives in a work directory with records, so a killed run resumes with the finished tasks
(dataset/work.py).

Every folder, input and the work directory is a Location: on a bucket the tasks read and write
the store directly (no shared disk), each file appears whole, and a completion record or the
manifest is always the last write, so a kill leaves nothing a rerun trusts.
"""

from __future__ import annotations

import logging
import math
from collections.abc import Mapping, Sequence
from dataclasses import replace
from pathlib import Path
from typing import Any

import numpy as np

from colorfilter.dataset import manifest as mf
from colorfilter.dataset.folder import (  # noqa: F401 - re-exported
    PendingFolder,
    PoolInputs,
    SelectionJob,
    SelectionSpec,
    Threshold,
    clear_outputs,
    complete_manifest,
    finish_folder,
    provenance,
    summary,
)
from colorfilter.dataset.histogram import (
    ScoreHistogram,
    finite_range,
)
from colorfilter.dataset.join import SelectedIndex
from colorfilter.dataset.merge import (
    ReduceTask,
    finished_reduces,
    reduce_record_path,
    reducer_ranges,
)
from colorfilter.dataset.provenance import recorded_entries
from colorfilter.dataset.runfiles import load_array
from colorfilter.dataset.runs import (
    MapSettings,
    MapTask,
    index_paths,
    merge_counts,
    read_run,
    run_path,
    save_index,
)
from colorfilter.dataset.schema import (  # noqa: F401 - re-exported
    DATA_DIR,
    OUTPUT_SCHEMA,
    selection_dir_name,
    shard_name,
)
from colorfilter.dataset.work import Mapper, open_work_dir, run_phases
from colorfilter.errors import BadDataError, ConfigError
from colorfilter.io import storage
from colorfilter.io.atomic import TMP_PREFIX
from colorfilter.io.location import Location, as_location
from colorfilter.io.token_shards import paired_shards, prepared_shard_locations
from colorfilter.io.transfer import read_parquet

log = logging.getLogger(__name__)

WORK_DIR = TMP_PREFIX + "select"  # inside the folder (one selection) or beside the folders


def write_selection(job: SelectionJob, inputs: PoolInputs, execution: Mapper) -> dict[str, Any]:
    """Write one selection's folder (its work directory inside it); return its summary.

    `inputs.config` is the run's resolved config (recorded and hashed); `inputs.skipped` counts
    candidate chunks dropped upstream before the pool token shards were written (reason ->
    count): the writer adds pool rows without a score (`inputs.missing_reason`) and unselected
    rows with a non-finite score. A rerun over a complete folder with the same config hash and
    selection is a no-op; an interrupted one resumes; anything else is redone.
    """
    work_dir = as_location(job.out_dir).join(WORK_DIR)
    return write_selections([job], inputs, work_dir, execution)[0]


def write_selections(
    jobs: Sequence[SelectionJob],
    inputs: PoolInputs,
    work_dir: str | Path | Location,
    execution: Mapper,
) -> list[dict[str, Any]]:
    """Write every job's folder in one pass over the pool; return their summaries, in order.

    Complete folders (same config hash, selection and inputs) are left alone; the others share
    one map pass and are finished one by one as their reducers end. Paths may be local or on
    a bucket (Locations); the jobs' folders are taken as Locations.
    """
    for job in jobs:
        if job.rows_per_shard < 1:
            raise ConfigError(f"rows_per_shard must be >= 1, got {job.rows_per_shard}")
    jobs = [replace(job, out_dir=as_location(job.out_dir)) for job in jobs]
    work_dir = as_location(work_dir)
    inputs = replace(
        inputs, token_dir=as_location(inputs.token_dir), score_dir=as_location(inputs.score_dir),
        tokenizer_dir=as_location(inputs.tokenizer_dir),
    )  # fmt: skip
    token_paths = prepared_shard_locations(inputs.token_dir)
    score_paths = paired_shards(token_paths, inputs.score_dir, inputs.scored_by)
    fingerprint = _inputs_fingerprint(
        token_paths, score_paths, inputs.tokenizer_dir, inputs.skipped
    )
    summaries: dict[int, dict[str, Any]] = {}
    every: list[PendingFolder] = []  # the plan: every job, complete or not (reruns: the same)
    pending: list[PendingFolder] = []
    for number, job in enumerate(jobs):
        spec = SelectionSpec(
            job.method, job.tau, dict(job.params), job.seed, job.rows_per_shard,
            inputs.histogram_bins,
        )  # fmt: skip
        resolved = spec.resolved(inputs.config)
        identity = {
            "config_hash": mf.config_hash(resolved),
            "selected_ids_sha256": _ids_sha256(np.asarray(job.seq_ids)),
            "inputs_fingerprint": fingerprint,
        }
        key = f"{number:03d}-{job.out_dir.name}"
        every.append(PendingFolder(number, key, job, spec, resolved, identity))
        done = complete_manifest(job.out_dir, identity)
        if done is not None:
            log.info(
                "%s is complete (config hash %s): nothing to do",
                job.out_dir,
                identity["config_hash"][:12],
            )
            summaries[number] = summary(job.out_dir, done, noop=True)
            continue
        storage.remove(job.out_dir.join(mf.MANIFEST_NAME))  # first: now incomplete
        pending.append(every[-1])
    if pending:
        plan = mf.config_hash(
            {"selections": [(p.key, p.identity, str(p.job.out_dir)) for p in every],
             "bins": inputs.histogram_bins}
        )  # fmt: skip
        _write_pending(pending, inputs, work_dir, plan, execution, token_paths, score_paths)
        for item in pending:
            summaries[item.number] = item.counts["summary"]
        storage.remove(work_dir, recursive=True)
    return [summaries[number] for number in range(len(jobs))]


def _write_pending(
    pending: list[PendingFolder],
    inputs: PoolInputs,
    work_dir: Location,
    plan: str,
    execution: Mapper,
    token_paths: list[Location],
    score_paths: list[Location],
) -> None:
    """Map, reduce and finish every incomplete folder."""
    open_work_dir(work_dir, plan)
    for item in pending:
        index = SelectedIndex.build(np.asarray(item.job.seq_ids), item.job.seed)
        item.n_rows = len(index)
        written = storage.stat_many(index_paths(work_dir, item.key))
        if any(size is None for size in written.values()):
            save_index(work_dir, item.key, index.sorted_ids, index.positions)
    score_column = dict(inputs.score_columns)["score"]
    edges = _histogram_edges(score_paths, inputs.histogram_bins, score_column)
    settings = MapSettings(
        work_dir, tuple(p.key for p in pending), inputs.tokenizer_dir,
        tuple(float(e) for e in edges), plan, inputs.score_columns,
        partial_scores=inputs.missing_reason != "unscored",
    )  # fmt: skip
    entries = recorded_entries([*token_paths, *score_paths])  # each read shard is checked
    tasks = [MapTask(i, t, s, entries[t.url], entries[s.url])
             for i, (t, s) in enumerate(zip(token_paths, score_paths))]  # fmt: skip
    workers = execution.workers()
    reduce_tasks = [t for p in pending for t in _reduce_tasks(p, plan, workers)]
    by_key = {item.key: item for item in pending}

    def on_mapped(records: list[dict]) -> dict[str, list[str]]:
        runs = {}
        for item in pending:
            item.counts = merge_counts(records, item.key)
            _check_found(item, work_dir, tasks, token_paths[0].parent)
            item.counts["edges"] = edges
            runs[item.key] = [
                run_path(work_dir, item.key, task.index)
                for task, record in zip(tasks, records, strict=True)
                if record["selections"][item.key]["rows"]
            ]
        return runs

    described: list[dict] = []  # hashed once, by the first folder to finish (reducers run on)

    def on_done(task: ReduceTask, files: dict[str, dict]) -> None:
        item = by_key[task.key]
        item.files.update(files)
        item.reducers.append(reduce_record_path(task.out_dir, task.reducer))
        item.reducers_left -= 1
        if item.reducers_left == 0:
            if not described:
                described.append(
                    provenance(
                        inputs.tokenizer_dir,
                        inputs.model_dirs,
                        [*token_paths, *score_paths, *inputs.extra_inputs],
                        inputs.checksum_inputs,
                    )  # fmt: skip
                )
            item.counts["summary"] = finish_folder(item, inputs, work_dir, described[0])

    run_phases(tasks, settings, reduce_tasks, execution, on_mapped, on_done)


def _reduce_tasks(item: PendingFolder, plan: str, workers: int) -> list[ReduceTask]:
    """The folder's reducers; clears its outputs but the shards of reducers already done."""
    size = item.job.rows_per_shard
    num_shards = max(1, math.ceil(item.n_rows / size))
    out = [
        ReduceTask(
            plan, item.key, number, item.job.out_dir, first, end, num_shards, size, item.n_rows
        )
        for number, (first, end) in enumerate(reducer_ranges(num_shards, 2 * workers))
    ]
    keep = set()
    for task, files in finished_reduces(out).items():
        keep |= {*files, reduce_record_path(task.out_dir, task.reducer).name}
    clear_outputs(item.job.out_dir, keep)
    item.reducers_left = len(out)
    return out


def _check_found(
    item: PendingFolder, work_dir: Location, tasks: list[MapTask], pool_dir: Location
) -> None:
    """Every selected seq_id was found in exactly one pool row."""
    found = item.counts["found"]
    if found > item.n_rows:
        raise BadDataError("a selected seq_id occurs more than once in the pool")
    if found == item.n_rows:
        return
    ids_path, _ = index_paths(work_dir, item.key)
    runs = [run_path(work_dir, item.key, task.index) for task in tasks]
    sizes = storage.stat_many(runs)
    seen = [read_run(run).column("seq_id").to_numpy() for run in runs if sizes[run.url]]
    missing = np.setdiff1d(load_array(ids_path), np.concatenate(seen) if seen else [])
    raise BadDataError(
        f"{missing.size} selected seq_ids are not in the pool token shards "
        f"(e.g. {missing[:5].tolist()}): the selection does not match {pool_dir}"
    )


def _histogram_edges(score_paths: Sequence[Location], bins: int, column: str = "score"
                     ) -> np.ndarray:  # fmt: skip
    """The histogram's bins: the finite score range over the pool, read column by column."""
    low, high = math.inf, -math.inf
    for path in score_paths:
        shard_low, shard_high = finite_range(
            read_parquet(path, columns=[column]).column(column).to_numpy()
        )
        low, high = min(low, shard_low), max(high, shard_high)
    return ScoreHistogram.from_range(low, high, bins).edges


def _inputs_fingerprint(
    token_paths: Sequence[Location],
    score_paths: Sequence[Location],
    tokenizer_dir: Location,
    skipped: Mapping[str, int] | None,
) -> str:
    """Cheap identity of the inputs (names, sizes, tokenizer hash, upstream skips) for reruns."""
    paths = [*token_paths, *score_paths]
    sizes = storage.stat_many(paths)
    listing = [(p.parent.name, p.name, sizes[p.url]) for p in paths]
    payload = {
        "shards": listing,
        "tokenizer": storage.folder_sha256(tokenizer_dir),
        "skipped": dict(sorted((skipped or {}).items())),
    }
    return mf.config_hash(payload)


def _ids_sha256(selected: np.ndarray) -> str:
    import hashlib

    return hashlib.sha256(np.sort(selected.astype(np.uint64)).tobytes()).hexdigest()
