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
selection's output shards, stream a k-way merge of its runs into those shards
(dataset/merge.py). Each folder is finished (indices, histogram, card, manifest last) as soon
as its reducers are. All intermediate state lives in a work directory with records, so a
killed run resumes with the finished tasks (dataset/work.py).
"""

from __future__ import annotations

import logging
import math
import shutil
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Literal

import numpy as np
import pyarrow.parquet as pq

from colorfilter.dataset import manifest as mf
from colorfilter.dataset.card import HISTOGRAM_NAME, INDICES_NAME, CardInfo, render_card
from colorfilter.dataset.histogram import (
    ScoreHistogram,
    finite_range,
    histogram_summary,
    plot_histogram,
)
from colorfilter.dataset.join import SelectedIndex
from colorfilter.dataset.merge import ReduceTask, finished_reduce, reducer_ranges
from colorfilter.dataset.provenance import recorded_sha256
from colorfilter.dataset.runs import (
    MapSettings,
    MapTask,
    index_paths,
    merge_counts,
    run_path,
    save_index,
)
from colorfilter.dataset.schema import (  # noqa: F401 - re-exported
    DATA_DIR,
    OUTPUT_SCHEMA,
    selection_dir_name,
    shard_name,
)
from colorfilter.dataset.work import Execution, open_work_dir, run_maps, run_reduces
from colorfilter.errors import BadDataError, ConfigError
from colorfilter.io.atomic import TMP_PREFIX, atomic_path, remove_stale_temps, write_text_atomic
from colorfilter.io.token_shards import list_shards

log = logging.getLogger(__name__)

README_NAME = "README.md"
WORK_DIR = TMP_PREFIX + "select"  # inside the folder (one selection) or beside the folders
LEGACY_SPILL_DIR = TMP_PREFIX + "spill"
Threshold = float | Literal["min_selected"] | None
ROW_ORDER = (
    "ascending splitmix64(seq_id ^ salt), salt = splitmix64(splitmix64(seed) ^ "
    "u64le(blake2b('dataset.release-order/0', digest_size=8))) (colorfilter.hashing); "
    "indices.npy lists seq_ids in row order"
)


@dataclass(frozen=True)
class SelectionSpec:
    """What was selected and how it is laid out: the part of the config this stage hashes."""

    method: str
    tau: float
    params: Mapping[str, Any]
    seed: int
    rows_per_shard: int
    histogram_bins: int

    def resolved(self, run_config: Mapping[str, Any] | None) -> dict[str, Any]:
        return {
            "selection": {"method": self.method, "tau": self.tau, "params": dict(self.params)},
            "output": {
                "rows_per_shard": self.rows_per_shard,
                "seed": self.seed,
                "histogram_bins": self.histogram_bins,
            },
            "run": dict(run_config) if run_config is not None else None,
        }


@dataclass
class SelectionJob:
    """One folder to write: the selected seq_ids and what its manifest and card say."""

    seq_ids: np.ndarray
    out_dir: Path
    method: str
    tau: float
    params: Mapping[str, Any] = field(default_factory=dict)
    seed: int = 0
    rows_per_shard: int = 100_000
    threshold: Threshold = "min_selected"
    command: str | None = None
    manifest_extra: Mapping[str, Any] | None = None


@dataclass(frozen=True)
class PoolInputs:
    """The pool and run-wide facts every folder of one `write_selections` call shares."""

    token_dir: Path
    score_dir: Path
    tokenizer_dir: Path
    config: Mapping[str, Any] | None = None
    skipped: Mapping[str, int] | None = None
    model_dirs: Mapping[str, str | Path] | None = None
    extra_inputs: Sequence[str | Path] = ()
    repo_id: str | None = None
    checksum_inputs: bool = True
    histogram_bins: int = 100


def write_selection(
    selected_seq_ids: np.ndarray,
    token_dir: str | Path,
    score_dir: str | Path,
    tokenizer_dir: str | Path,
    out_dir: str | Path,
    *,
    method: str,
    tau: float,
    params: Mapping[str, Any] | None = None,
    rows_per_shard: int = 100_000,
    seed: int = 0,
    manifest_extra: Mapping[str, Any] | None = None,
    config: Mapping[str, Any] | None = None,
    skipped: Mapping[str, int] | None = None,
    model_dirs: Mapping[str, str | Path] | None = None,
    extra_inputs: Sequence[str | Path] = (),
    threshold: Threshold = "min_selected",
    command: str | None = None,
    repo_id: str | None = None,
    checksum_inputs: bool = True,
    histogram_bins: int = 100,
    execution: Execution | None = None,
) -> dict[str, Any]:
    """Write the released dataset folder for `selected_seq_ids`; return a summary.

    `config` is the run's resolved config (recorded and hashed); `skipped` counts candidate chunks
    dropped upstream before the pool token shards were written (reason -> count): the writer adds
    pool rows without a score (`unscored`) and unselected rows with a non-finite score.
    `threshold` is the line drawn on the histogram: the lowest selected score by default (right
    for top-k), a number, or None for none. A rerun over a complete folder with the same config
    hash and selection is a no-op; an interrupted one resumes; anything else is redone.
    """
    job = SelectionJob(
        selected_seq_ids, Path(out_dir), method, tau, dict(params or {}), seed, rows_per_shard,
        threshold, command, manifest_extra,
    )  # fmt: skip
    inputs = PoolInputs(
        Path(token_dir), Path(score_dir), Path(tokenizer_dir), config, skipped, model_dirs,
        tuple(extra_inputs), repo_id, checksum_inputs, histogram_bins,
    )  # fmt: skip
    work_dir = Path(out_dir) / WORK_DIR
    return write_selections([job], inputs, work_dir, execution or Execution())[0]


@dataclass
class _Pending:
    key: str
    job: SelectionJob
    spec: SelectionSpec
    resolved: dict[str, Any]
    identity: dict[str, str]
    n_rows: int = 0
    reducers_left: int = 0
    counts: dict[str, Any] = field(default_factory=dict)


def write_selections(
    jobs: Sequence[SelectionJob],
    inputs: PoolInputs,
    work_dir: str | Path,
    execution: Execution | None = None,
) -> list[dict[str, Any]]:
    """Write every job's folder in one pass over the pool; return their summaries, in order.

    Complete folders (same config hash, selection and inputs) are left alone; the others share
    one map pass and are finished one by one as their reducers end.
    """
    execution = execution or Execution()
    for job in jobs:
        if job.rows_per_shard < 1:
            raise ConfigError(f"rows_per_shard must be >= 1, got {job.rows_per_shard}")
    token_paths, score_paths = _input_shards(inputs.token_dir, inputs.score_dir)
    fingerprint = _inputs_fingerprint(
        token_paths, score_paths, inputs.tokenizer_dir, inputs.skipped
    )
    summaries: dict[int, dict[str, Any]] = {}
    every: list[_Pending] = []  # the plan: every job, complete or not (a rerun's plan is equal)
    pending: list[_Pending] = []
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
        every.append(_Pending(key, job, spec, resolved, identity))
        done = _complete_manifest(job.out_dir, identity)
        if done is not None:
            log.info(
                "%s is complete (config hash %s): nothing to do",
                job.out_dir,
                identity["config_hash"][:12],
            )
            summaries[number] = _summary(job.out_dir, done, noop=True)
            continue
        (job.out_dir / mf.MANIFEST_NAME).unlink(missing_ok=True)  # first: now incomplete
        pending.append(every[-1])
    if pending:
        plan = mf.config_hash(
            {"selections": [(p.key, p.identity, str(p.job.out_dir)) for p in every],
             "bins": inputs.histogram_bins}
        )  # fmt: skip
        _write_pending(pending, inputs, Path(work_dir), plan, execution, token_paths, score_paths)
        for item in pending:
            summaries[_job_number(item)] = item.counts["summary"]
        shutil.rmtree(work_dir, ignore_errors=True)
    return [summaries[number] for number in range(len(jobs))]


def _job_number(item: _Pending) -> int:
    return int(item.key.split("-", 1)[0])


def _write_pending(
    pending: list[_Pending],
    inputs: PoolInputs,
    work_dir: Path,
    plan: str,
    execution: Execution,
    token_paths: list[Path],
    score_paths: list[Path],
) -> None:
    """Map, reduce and finish every incomplete folder."""
    open_work_dir(work_dir, plan)
    for item in pending:
        index = SelectedIndex.build(np.asarray(item.job.seq_ids), item.job.seed)
        item.n_rows = len(index)
        if not all(path.is_file() for path in index_paths(work_dir, item.key)):
            save_index(work_dir, item.key, index.sorted_ids, index.positions)
    edges = _histogram_edges(score_paths, inputs.histogram_bins)
    settings = MapSettings(
        str(work_dir), tuple(p.key for p in pending), str(inputs.tokenizer_dir),
        tuple(float(e) for e in edges), plan,
    )  # fmt: skip
    tasks = [MapTask(i, str(t), str(s)) for i, (t, s) in enumerate(zip(token_paths, score_paths))]
    records = run_maps(tasks, settings, execution)
    provenance = _provenance(
        inputs.tokenizer_dir, inputs.model_dirs,
        [*token_paths, *score_paths, *inputs.extra_inputs], inputs.checksum_inputs,
    )  # fmt: skip
    reduce_tasks = []
    for item in pending:
        item.counts = merge_counts(records, item.key)
        _check_found(item, work_dir, tasks, token_paths[0].parent)
        item.counts["edges"] = edges
        reduce_tasks += _reduce_tasks(item, work_dir, plan, tasks, records, execution.workers())
    by_key = {item.key: item for item in pending}

    def on_done(task: ReduceTask, files: dict[str, int]) -> None:
        item = by_key[task.key]
        item.reducers_left -= 1
        if item.reducers_left == 0:
            item.counts["summary"] = _finish(item, inputs, work_dir, provenance)

    run_reduces(reduce_tasks, execution, on_done)


def _reduce_tasks(
    item: _Pending,
    work_dir: Path,
    plan: str,
    tasks: list[MapTask],
    records: list[dict],
    workers: int,
) -> list[ReduceTask]:
    """The folder's reducers; clears its outputs but the shards of reducers already done."""
    size = item.job.rows_per_shard
    num_shards = max(1, math.ceil(item.n_rows / size))
    runs = tuple(
        str(run_path(work_dir, item.key, task.index))
        for task, record in zip(tasks, records, strict=True)
        if record["selections"][item.key]["rows"]
    )
    out = [
        ReduceTask(
            str(work_dir),
            plan,
            item.key,
            number,
            str(item.job.out_dir),
            first,
            end,
            num_shards,
            size,
            item.n_rows,
            runs,
        )  # fmt: skip
        for number, (first, end) in enumerate(reducer_ranges(num_shards, 2 * workers))
    ]
    keep = set()
    for task in out:
        keep |= set(finished_reduce(task) or {})
    _clear_outputs(item.job.out_dir, keep)
    item.reducers_left = len(out)
    return out


def _check_found(item: _Pending, work_dir: Path, tasks: list[MapTask], pool_dir: Path) -> None:
    """Every selected seq_id was found in exactly one pool row."""
    found = item.counts["found"]
    if found > item.n_rows:
        raise BadDataError("a selected seq_id occurs more than once in the pool")
    if found == item.n_rows:
        return
    ids_path, _ = index_paths(work_dir, item.key)
    seen = [
        pq.read_table(path, columns=["seq_id"]).column("seq_id").to_numpy()
        for task in tasks
        if (path := run_path(work_dir, item.key, task.index)).is_file()
    ]
    missing = np.setdiff1d(np.load(ids_path), np.concatenate(seen) if seen else [])
    raise BadDataError(
        f"{missing.size} selected seq_ids are not in the pool token shards "
        f"(e.g. {missing[:5].tolist()}): the selection does not match {pool_dir}"
    )


def _finish(
    item: _Pending, inputs: PoolInputs, work_dir: Path, provenance: dict[str, Any]
) -> dict[str, Any]:
    """indices.npy, the histogram, the card, then the manifest (last): the folder is done."""
    job, counts, out_dir = item.job, item.counts, item.job.out_dir
    ids_path, pos_path = index_paths(work_dir, item.key)
    row_order = np.empty(item.n_rows, dtype=np.uint64)
    row_order[np.load(pos_path)] = np.load(ids_path)
    with atomic_path(out_dir / INDICES_NAME) as tmp, open(tmp, "wb") as handle:
        np.save(handle, row_order)
    hist = ScoreHistogram(edges=np.asarray(counts["edges"]))
    hist.pool, hist.selected = counts["pool_hist"], counts["hist"]
    hist.non_finite = counts["pool_non_finite"]
    selected_min, selected_max = counts["selected_min"], counts["selected_max"]
    line = selected_min if job.threshold == "min_selected" else job.threshold
    line = line if line is None or math.isfinite(line) else None
    upstream = dict(inputs.skipped or {})
    skipped = dict(upstream)
    for reason, n in (("unscored", counts["unscored"]), ("non_finite_score", counts["non_finite"])):
        if n:
            skipped[reason] = skipped.get(reason, 0) + n
    counts_out = mf.build_counts(
        candidates=counts["token_rows"] + sum(upstream.values()),
        selected=item.n_rows,
        not_selected=counts["not_selected"],
        skipped=skipped,
        selected_tokens=counts["selected_tokens"],
    )
    title = f"{job.method}, tau={job.tau:g}: {item.n_rows} selected"
    with atomic_path(out_dir / HISTOGRAM_NAME) as tmp:
        plot_histogram(tmp, hist, line, title)
    num_shards = max(1, math.ceil(item.n_rows / job.rows_per_shard))
    card = CardInfo(
        method=job.method,
        tau=job.tau,
        params=item.spec.params,
        counts=counts_out,
        config_hash=item.identity["config_hash"],
        seed=job.seed,
        num_shards=num_shards,
        threshold=line,
        command=job.command,
        repo_id=inputs.repo_id,
    )
    write_text_atomic(out_dir / README_NAME, render_card(card))
    fields = {
        **item.identity,
        "config": item.resolved,
        "selection": {
            **item.resolved["selection"],
            "seed": job.seed,
            "threshold": line,
            "rows_per_shard": job.rows_per_shard,
            "num_shards": num_shards,
            "row_order": ROW_ORDER,
        },
        "counts": counts_out,
        "scores": {
            "selected_min": _finite_or_none(selected_min),
            "selected_max": _finite_or_none(selected_max),
            "histogram": histogram_summary(hist),
        },
        **provenance,
        "command": job.command,
        "extra": dict(job.manifest_extra or {}),
    }
    return _summary(out_dir, mf.write_manifest(out_dir, fields), noop=False)


def _provenance(
    tokenizer_dir: str | Path,
    model_dirs: Mapping[str, str | Path] | None,
    inputs: Sequence[str | Path],
    checksum_inputs: bool,
) -> dict[str, Any]:
    """Hashes of the tokenizer, checkpoints and input files; package versions."""
    return {
        "tokenizer": {"path": str(tokenizer_dir), "sha256": mf.sha256_dir(tokenizer_dir)},
        "models": {
            name: {"path": str(path), "sha256": mf.sha256_dir(path)}
            for name, path in sorted((model_dirs or {}).items())
        },
        "inputs": mf.describe_files(inputs, checksum=checksum_inputs, known=recorded_sha256),
        "packages": mf.package_versions(),
    }


def _histogram_edges(score_paths: Sequence[Path], bins: int) -> np.ndarray:
    """The histogram's bins: the finite score range over the pool, read column by column."""
    low, high = math.inf, -math.inf
    for path in score_paths:
        shard_low, shard_high = finite_range(
            pq.read_table(path, columns=["score"]).column("score").to_numpy()
        )
        low, high = min(low, shard_low), max(high, shard_high)
    return ScoreHistogram.from_range(low, high, bins).edges


def _input_shards(token_dir: Path, score_dir: Path) -> tuple[list[Path], list[Path]]:
    """Token shards and their score shards (same file name); every token shard needs one."""
    token_paths = list_shards(token_dir)
    if not token_paths:
        raise ConfigError(f"no token shards in {token_dir}: run the prepare stage first")
    score_paths = [score_dir / p.name for p in token_paths]
    missing = [p.name for p in score_paths if not p.is_file()]
    if missing:
        raise ConfigError(
            f"{len(missing)} token shards have no score shard in {score_dir} "
            f"(e.g. {missing[:3]}): run the score stage first"
        )
    extra = {p.name for p in list_shards(score_dir)} - {p.name for p in token_paths}
    if extra:
        log.warning("ignoring %d score shards without a token shard in %s", len(extra), score_dir)
    return token_paths, score_paths


def _clear_outputs(out_dir: Path, keep: set[str]) -> None:
    """Delete what an earlier (incomplete or different) run wrote, but the `keep` data shards
    (relative paths) of this plan's finished reducers; leave other files alone."""
    (out_dir / mf.MANIFEST_NAME).unlink(missing_ok=True)  # first: the folder is now incomplete
    remove_stale_temps(out_dir)
    shutil.rmtree(out_dir / LEGACY_SPILL_DIR, ignore_errors=True)
    for path in (out_dir / DATA_DIR).glob("train-*.parquet"):
        if f"{DATA_DIR}/{path.name}" not in keep:
            path.unlink()
    for name in (INDICES_NAME, HISTOGRAM_NAME, README_NAME):
        (out_dir / name).unlink(missing_ok=True)
    out_dir.mkdir(parents=True, exist_ok=True)


def _complete_manifest(out_dir: Path, identity: Mapping[str, str]) -> dict[str, Any] | None:
    """The manifest if the folder is complete for this config, selection and inputs."""
    manifest = mf.read_manifest(out_dir)
    if manifest is None:
        return None
    if any(manifest.get(key) != value for key, value in identity.items()):
        log.warning("%s holds another selection or config: rewriting it", out_dir)
        return None
    for rel, entry in manifest.get("files", {}).items():
        path = out_dir / rel
        if not path.is_file() or path.stat().st_size != entry["size"]:
            return None
    return manifest


def _inputs_fingerprint(
    token_paths: Sequence[Path],
    score_paths: Sequence[Path],
    tokenizer_dir: str | Path,
    skipped: Mapping[str, int] | None,
) -> str:
    """Cheap identity of the inputs (names, sizes, tokenizer hash, upstream skips) for reruns."""
    listing = [(p.parent.name, p.name, p.stat().st_size) for p in [*token_paths, *score_paths]]
    payload = {
        "shards": listing,
        "tokenizer": mf.sha256_dir(tokenizer_dir),
        "skipped": dict(sorted((skipped or {}).items())),
    }
    return mf.config_hash(payload)


def _ids_sha256(selected: np.ndarray) -> str:
    import hashlib

    return hashlib.sha256(np.sort(selected.astype(np.uint64)).tobytes()).hexdigest()


def _finite_or_none(value: float) -> float | None:
    return value if math.isfinite(value) else None


def _summary(out_dir: Path, manifest: Mapping[str, Any], *, noop: bool) -> dict[str, Any]:
    return {
        "out_dir": str(out_dir),
        "config_hash": manifest["config_hash"],
        "counts": manifest["counts"],
        "num_shards": manifest["selection"]["num_shards"],
        "threshold": manifest["selection"]["threshold"],
        "files": sorted(manifest["files"]),
        "noop": noop,
    }
