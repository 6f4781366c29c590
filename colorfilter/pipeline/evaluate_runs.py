"""Evaluation runs: training the unfinished ones as executor tasks, in this process one after
another (`executor: local`), or `evaluate.workers` at a time on Ray actors, one GPU each on a
GPU cluster.

Tiny target models on a CPU leave cores idle (a batch of 4 x 128 tokens cannot keep 2 threads
busy), and a GPU cluster can train one target per GPU, so runs are trained side by side.
Only the driver writes records (colorfilter.evaluation.records: one commit unit per run), each
as soon as its run finishes, so a killed evaluation keeps every finished run and a rerun trains
only the rest; a lost node's run is trained again elsewhere. What each run trains on, and its
run hash, is colorfilter.evaluation.plan's.
"""

from __future__ import annotations

import logging
import os
from collections.abc import Iterator, Sequence
from dataclasses import replace
from pathlib import Path
from typing import Any

import pyarrow as pa

from colorfilter.config import RayConfig
from colorfilter.errors import BadDataError, DamagedDataError
from colorfilter.evaluation import train as train_module
from colorfilter.evaluation.config import EvaluateConfig
from colorfilter.evaluation.plan import PlannedRun, RunSpec
from colorfilter.evaluation.records import finished_records, write_record
from colorfilter.io.location import Location, as_location
from colorfilter.io.transfer import open_parquet
from colorfilter.models.runtime import set_threads
from colorfilter.pipeline.executor import WorkerSpec, init_ray, map_tasks
from colorfilter.progress import Progress

__all__ = ["RunSpec", "RunTrainer", "run_all", "run_resources", "threads_per_worker"]

log = logging.getLogger(__name__)


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
    finished = {} if overwrite else finished_records(runs, runs_dir)
    todo = []
    for run in runs:
        record = finished.get(run.spec.name)
        if record is None:
            todo.append(run)
        else:
            log.info("evaluate: %s already finished; skipping", run.spec.name)
            records[run.spec.name] = record
    progress = Progress("evaluate", len(todo), unit="chunks")  # runs done/total, ETA, last loss
    for run, result in _train(todo, cfg, setup, executor, ray_cfg or RayConfig()):
        records[run.spec.name] = write_record(run, result, runs_dir)
        progress.update(1, run.spec.n_chunks, note=_last_run_note(run, result))
    if todo:
        progress.close(f"({len(runs) - len(todo)} runs already finished, skipped)")
    return {run.spec.name: records[run.spec.name] for run in runs}


def _last_run_note(run: PlannedRun, result: dict[str, Any]) -> str:
    loss = result.get("heldout_loss")
    return f"last: {run.spec.name} held-out {loss:.4f}" if loss is not None else run.spec.name


def _train(
    todo: list[PlannedRun], cfg: EvaluateConfig, setup: Any, executor: str, ray_cfg: RayConfig
) -> Iterator[tuple[PlannedRun, dict[str, Any]]]:
    """(run, result) as each run finishes: executor tasks, `cfg.workers` of them side by side.

    `executor: local` trains in this process, one run after another; on Ray each run is a task
    on an actor that holds one GPU where the cluster has them, else `threads` CPUs.
    """
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
        set_threads(cfg.torch_threads)
        check_heldout(setup.eval_paths)
        if own_gpu:  # Ray shows the actor only its GPU, as cuda:0
            setup = replace(setup, device="cuda")
        self.cfg, self.setup = cfg, setup

    def __call__(self, run: PlannedRun) -> dict[str, Any]:
        log.info("evaluate: training %s (%d chunks)", run.spec.name, len(run.order))
        return train_module.train_and_evaluate(
            run.index, run.order, self.cfg, self.setup, run.spec.seed, run.spec.name
        )


def check_heldout(paths: Sequence[Path | Location]) -> None:
    """Each held-out shard's parquet footer reads (a truncated or foreign file is named)."""
    for path in paths:
        try:
            with open_parquet(path) as parquet:
                parquet.metadata  # noqa: B018 - reading the footer is the check
        except (pa.ArrowException, OSError, DamagedDataError) as error:
            raise BadDataError(
                f"held-out shard {path} is not readable parquet ({error}): rerun "
                "`colorfilter prepare` for data.downstream_eval"
            ) from error
