"""Evaluation runs: what decides each one, its record on disk, and training the unfinished ones
as executor tasks: in this process one after another (`executor: local`), or `evaluate.workers`
at a time on Ray actors, one GPU each on a GPU cluster.

Tiny target models on a CPU leave cores idle (a batch of 4 x 128 tokens cannot keep 2 threads
busy), and a GPU cluster can train one target per GPU, so runs are trained side by side.
Only the driver writes records, each as soon as its run finishes, so a killed evaluation keeps
every finished run and a rerun trains only the rest; a lost node's run is trained again elsewhere.

A run's record is its whole output: one JSON object under OUTPUT/eval/runs/, written through the
storage layer after the run finished (temp-then-rename on disk, one PUT on a bucket: it appears
whole or not at all). It is thus a unit of colorfilter.io.commit's kind with no data objects and
the record last; a rerun trusts it only when it parses and carries the same run hash.
"""

from __future__ import annotations

import datetime
import json
import logging
import os
from collections.abc import Iterator, Sequence
from dataclasses import asdict, dataclass, replace
from pathlib import Path
from typing import Any

import numpy as np

from colorfilter.config import RayConfig
from colorfilter.errors import BadDataError, DamagedDataError
from colorfilter.evaluation.config import EvaluateConfig
from colorfilter.evaluation.plan import (
    Pool,
    full_chunks,
    order_digest,
    repeated_order,
    selection_digest,
)
from colorfilter.fingerprint import fingerprint
from colorfilter.io import storage
from colorfilter.io.location import Location, as_location
from colorfilter.models.data import ChunkIndex

log = logging.getLogger(__name__)

# The settings that decide a run's result; runtime-only knobs (threads, workers, progress) are not.
RESULT_KNOBS = (
    "preset",
    "batch_size",
    "lr",
    "min_lr_ratio",
    "warmup_steps",
    "dtype",
    "eval_max_chunks",
)


@dataclass(frozen=True)
class RunSpec:
    """One training run: which selection, how many chunks, which seed."""

    method: str
    tau: float  # the selection's ratio (the whole pool, 1.0, for random-curve runs)
    n_chunks: int
    seed: int

    @property
    def name(self) -> str:
        return f"{self.method}-tau{self.tau:g}-n{self.n_chunks}-seed{self.seed}"


@dataclass(frozen=True)
class PlannedRun:
    """A run with its data laid out: the chunks it trains on and their order."""

    spec: RunSpec
    index: ChunkIndex  # the chunks the run trains on, each once (not the whole selection)
    order: np.ndarray  # positions into index, spec.n_chunks of them
    selected_full_chunks: int  # the selection's full-length chunks, which passes repeat
    selection_digest: str
    run_hash: str


def plan_run(
    spec: RunSpec, seq_ids: np.ndarray, pool: Pool, cfg: EvaluateConfig, setup: Any
) -> PlannedRun:
    """Lay out `spec`'s training data (the selection `seq_ids`) and hash what decides its result.

    Every run is planned before any trains, so each keeps only the chunks it trains on: a
    random-curve run's selection is the whole pool.
    """
    digest = selection_digest(seq_ids)
    index = pool.index.take(full_chunks(pool, seq_ids, setup.seq_len))
    order = repeated_order(index, spec.n_chunks, spec.seed)
    run_hash = run_hash_of(spec, digest + order_digest(index.seq_id[order]), cfg, setup)
    used, order_in_used = np.unique(order, return_inverse=True)
    return PlannedRun(spec, index.take(used), order_in_used, len(index), digest, run_hash)


def run_hash_of(spec: RunSpec, digest: str, cfg: EvaluateConfig, setup: Any) -> str:
    """What decides a run's result: its spec, data, result knobs, sequence shape and eval split."""
    knobs = {k: v for k, v in asdict(cfg).items() if k in RESULT_KNOBS}
    decided_by = {
        "spec": asdict(spec),
        "selection": digest,
        "knobs": knobs,
        "seq_len": setup.seq_len,
        "vocab": setup.vocab_size,
        "eval": [p.name for p in setup.eval_paths],
    }
    if setup.mc_digest:  # absent without items, so runs made before the option still match
        decided_by["multiple_choice"] = setup.mc_digest
    return fingerprint(decided_by)


def run_all(
    runs: list[PlannedRun],
    cfg: EvaluateConfig,
    setup: Any,
    runs_dir: Path | Location,
    overwrite: bool,
    executor: str = "local",
    ray_cfg: RayConfig | None = None,
) -> dict[str, dict[str, Any]]:
    """Each run's record, by name: finished ones read back, the others trained (as executor
    tasks) and written to `runs_dir` (a folder or a bucket prefix), on the driver, as each
    finishes."""
    runs_dir = as_location(runs_dir)
    records: dict[str, dict[str, Any]] = {}
    finished = {} if overwrite else _finished_records(runs, runs_dir)
    todo = []
    for run in runs:
        record = finished.get(run.spec.name)
        if record is None:
            todo.append(run)
        else:
            log.info("evaluate: %s already finished; skipping", run.spec.name)
            records[run.spec.name] = record
    from colorfilter.progress import Progress

    progress = Progress("evaluate", len(todo), unit="chunks")  # runs done/total, ETA, last loss
    for run, result in _train(todo, cfg, setup, executor, ray_cfg or RayConfig()):
        records[run.spec.name] = _write_record(run, result, runs_dir)
        progress.update(1, run.spec.n_chunks, note=_last_run_note(run, result))
    if todo:
        progress.close(f"({len(runs) - len(todo)} runs already finished, skipped)")
    return {run.spec.name: records[run.spec.name] for run in runs}


def _last_run_note(run: PlannedRun, result: dict[str, Any]) -> str:
    loss = result.get("heldout_loss")
    return f"last: {run.spec.name} held-out {loss:.4f}" if loss is not None else run.spec.name


def _record_location(run: PlannedRun, runs_dir: Location) -> Location:
    return runs_dir.join(f"{run.spec.name}.json")


def _finished_records(runs: Sequence[PlannedRun], runs_dir: Location) -> dict[str, dict]:
    """{name: record} of the runs whose record is there, whole, with the same run hash (read in
    one batch: concurrent requests on a bucket). A torn or foreign record means "train again"."""
    found = storage.read_many([_record_location(run, runs_dir) for run in runs])
    records = {}
    for run in runs:
        data = found[_record_location(run, runs_dir).url]
        try:
            record = json.loads(data) if data is not None else None
        except ValueError:
            record = None
        if isinstance(record, dict) and record.get("run_hash") == run.run_hash:
            records[run.spec.name] = record
    return records


def _write_record(run: PlannedRun, result: dict[str, Any], runs_dir: Location) -> dict[str, Any]:
    record = {
        "name": run.spec.name,
        **asdict(run.spec),
        "run_hash": run.run_hash,
        "selection_digest": run.selection_digest,
        "selected_full_chunks": run.selected_full_chunks,
        "epochs": run.spec.n_chunks / max(run.selected_full_chunks, 1),
        **result,
        "finished_at": datetime.datetime.now(datetime.timezone.utc).isoformat(),
    }
    location = _record_location(run, runs_dir)
    storage.write_json(location, record)
    return storage.read_json(location)


def _train(
    todo: list[PlannedRun], cfg: EvaluateConfig, setup: Any, executor: str, ray_cfg: RayConfig
) -> Iterator[tuple[PlannedRun, dict[str, Any]]]:
    """(run, result) as each run finishes: executor tasks, `cfg.workers` of them side by side.

    `executor: local` trains in this process, one run after another; on Ray each run is a task
    on an actor that holds one GPU where the cluster has them, else `threads` CPUs.
    """
    from colorfilter.pipeline.executor import WorkerSpec, init_ray, map_tasks

    ray = init_ray(ray_cfg) if executor == "ray" and todo else None
    resources = ray.cluster_resources() if ray is not None else {}
    threads, num_cpus, num_gpus = run_resources(cfg, setup.device, resources)
    if cfg.workers > 1 or ray is not None:  # a lone run trains with a worker's threads too
        cfg = replace(cfg, torch_threads=threads)
    log.info(
        "evaluate: training %d runs, %d at a time (%d torch threads each%s)",
        len(todo),
        cfg.workers if ray is not None else 1,
        cfg.torch_threads,
        ", one GPU each" if num_gpus else "",
    )
    spec = WorkerSpec(
        RunTrainer,
        (cfg, setup, bool(num_gpus)),
        num_cpus=num_cpus,
        num_gpus=num_gpus,
    )  # no OMP_NUM_THREADS: RunTrainer sets torch's threads itself
    # Longest first, so the last runs to start are short ones and no worker idles for long.
    longest_first = sorted(todo, key=lambda run: -run.spec.n_chunks)
    yield from map_tasks(
        spec, longest_first, executor=executor, num_workers=cfg.workers, ray_cfg=ray_cfg
    )


def run_resources(
    cfg: EvaluateConfig, device: str, cluster: dict[str, float]
) -> tuple[int, float, float]:
    """(torch threads, CPUs, GPUs) per run. One GPU each where the cluster has GPUs (and the
    device allows them); the CPUs reserved are the threads, shared down so that `cfg.workers`
    runs fit side by side (a Ray actor's CPUs may be fractional)."""
    cluster_cpus = cluster.get("CPU", 0.0)
    cpus = min(os.cpu_count() or 1, int(cluster_cpus)) if cluster_cpus >= 1 else None
    threads = threads_per_worker(cfg, cpus)
    num_cpus = float(threads)
    if cluster_cpus > 0:
        num_cpus = min(num_cpus, cluster_cpus / max(cfg.workers, 1))
    num_gpus = 1.0 if device != "cpu" and cluster.get("GPU", 0.0) > 0 else 0.0
    return threads, num_cpus, num_gpus


def threads_per_worker(cfg: EvaluateConfig, cpus: int | None = None) -> int:
    """`torch_threads` when set; else the CPUs shared out evenly among the workers (at least 1),
    so that side-by-side runs do not oversubscribe the cores."""
    if cfg.torch_threads > 0:
        return cfg.torch_threads
    return max(1, (cpus or os.cpu_count() or 1) // max(cfg.workers, 1))


class RunTrainer:
    """The executor's worker: built once per actor (the shared setup crosses the wire once), then
    trains one planned run per call. Threads are set here: Ray sets OMP_NUM_THREADS=1 in actors.
    The held-out shards are checked here too, so an unreadable one fails the stage before any run
    trains, with its name."""

    def __init__(self, cfg: EvaluateConfig, setup: Any, own_gpu: bool):
        from colorfilter.models.runtime import set_threads

        set_threads(cfg.torch_threads)
        check_heldout(setup.eval_paths)
        if own_gpu:  # Ray shows the actor only its GPU, as cuda:0
            setup = replace(setup, device="cuda")
        self.cfg, self.setup = cfg, setup

    def __call__(self, run: PlannedRun) -> dict[str, Any]:
        from colorfilter.evaluation import train as train_module

        log.info("evaluate: training %s (%d chunks)", run.spec.name, len(run.order))
        return train_module.train_and_evaluate(
            run.index, run.order, self.cfg, self.setup, run.spec.seed, run.spec.name
        )


def check_heldout(paths: Sequence[Path | Location]) -> None:
    """Each held-out shard's parquet footer reads (a truncated or foreign file is named)."""
    import pyarrow as pa

    from colorfilter.io.transfer import open_parquet

    for path in paths:
        try:
            with open_parquet(path) as parquet:
                parquet.metadata  # noqa: B018 - reading the footer is the check
        except (pa.ArrowException, OSError, DamagedDataError) as error:
            raise BadDataError(
                f"held-out shard {path} is not readable parquet ({error}): rerun "
                "`colorfilter prepare` for data.downstream_eval"
            ) from error
