"""Evaluation runs: what decides each one, its record on disk, and training the unfinished ones,
one after another or `evaluate.workers` at a time in worker processes.

Tiny target models on a CPU leave cores idle (a batch of 4 x 128 tokens cannot keep 2 threads
busy), and a multi-GPU node can train one target per GPU, so runs are trained side by side.
Only the parent process writes records, each as soon as its run finishes, so a killed
evaluation keeps every finished run and a rerun trains only the rest.
"""

from __future__ import annotations

import datetime
import logging
import os
from collections.abc import Iterator
from dataclasses import asdict, dataclass, replace
from pathlib import Path
from typing import Any

import numpy as np

from colorfilter.configtools import stable_hash
from colorfilter.evaluation.config import EvaluateConfig
from colorfilter.evaluation.plan import (
    Pool,
    full_chunks,
    order_digest,
    repeated_order,
    selection_digest,
)
from colorfilter.io.atomic import read_json, write_json_atomic
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
    return stable_hash(decided_by)


def run_all(
    runs: list[PlannedRun], cfg: EvaluateConfig, setup: Any, runs_dir: Path, overwrite: bool
) -> dict[str, dict[str, Any]]:
    """Each run's record, by name: finished ones read back, the others trained and written."""
    records: dict[str, dict[str, Any]] = {}
    todo = []
    for run in runs:
        record = None if overwrite else _finished_record(run, runs_dir)
        if record is None:
            todo.append(run)
        else:
            log.info("evaluate: %s already finished; skipping", run.spec.name)
            records[run.spec.name] = record
    from colorfilter.progress import Progress

    progress = Progress("evaluate", len(todo), unit="chunks")  # runs done/total, ETA, last loss
    for run, result in _train(todo, cfg, setup):
        records[run.spec.name] = _write_record(run, result, runs_dir)
        progress.update(1, run.spec.n_chunks, note=_last_run_note(run, result))
    if todo:
        progress.close(f"({len(runs) - len(todo)} runs already finished, skipped)")
    return {run.spec.name: records[run.spec.name] for run in runs}


def _last_run_note(run: PlannedRun, result: dict[str, Any]) -> str:
    loss = result.get("heldout_loss")
    return f"last: {run.spec.name} held-out {loss:.4f}" if loss is not None else run.spec.name


def _finished_record(run: PlannedRun, runs_dir: Path) -> dict[str, Any] | None:
    path = runs_dir / f"{run.spec.name}.json"
    if not path.exists():
        return None
    record = read_json(path)
    return record if record.get("run_hash") == run.run_hash else None


def _write_record(run: PlannedRun, result: dict[str, Any], runs_dir: Path) -> dict[str, Any]:
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
    path = runs_dir / f"{run.spec.name}.json"
    write_json_atomic(path, record)
    return read_json(path)


def _train(
    todo: list[PlannedRun], cfg: EvaluateConfig, setup: Any
) -> Iterator[tuple[PlannedRun, dict[str, Any]]]:
    """(run, result) as each run finishes: in this process, or in `cfg.workers` processes."""
    from colorfilter.evaluation import train as train_module

    if cfg.workers > 1:  # a lone run trains with a worker's threads too: the same numerics
        cfg = replace(cfg, torch_threads=threads_per_worker(cfg))
        if len(todo) > 1:
            yield from _train_in_workers(todo, cfg, setup)
            return
    for run in todo:
        log.info("evaluate: training %s (%d chunks)", run.spec.name, len(run.order))
        result = train_module.train_and_evaluate(
            run.index, run.order, cfg, setup, run.spec.seed, run.spec.name
        )
        yield run, result


def threads_per_worker(cfg: EvaluateConfig, cpus: int | None = None) -> int:
    """`torch_threads` when set; else the CPUs shared out evenly among the workers (at least 1),
    so that side-by-side runs do not oversubscribe the cores."""
    if cfg.torch_threads > 0:
        return cfg.torch_threads
    return max(1, (cpus or os.cpu_count() or 1) // max(cfg.workers, 1))


def worker_device(device: str, slot: int, cuda_count: int) -> str:
    """Worker `slot`'s device: on a GPU node, GPU slot mod count; an explicit index or the CPU
    stays as configured."""
    if device in ("auto", "cuda") and cuda_count > 0:
        return f"cuda:{slot % cuda_count}"
    return device


def _train_in_workers(
    todo: list[PlannedRun], cfg: EvaluateConfig, setup: Any
) -> Iterator[tuple[PlannedRun, dict[str, Any]]]:
    import multiprocessing
    from concurrent.futures import ProcessPoolExecutor, as_completed

    context = multiprocessing.get_context("spawn")  # never fork a process that holds torch
    slots = context.Value("i", 0)
    executor = ProcessPoolExecutor(
        cfg.workers, mp_context=context, initializer=_take_slot, initargs=(slots,)
    )
    log.info(
        "evaluate: training %d runs, %d at a time (%d torch threads each)",
        len(todo),
        cfg.workers,
        cfg.torch_threads,
    )
    # Longest first, so the last runs to start are short ones and no worker idles for long.
    longest_first = sorted(todo, key=lambda run: -run.spec.n_chunks)
    futures = {executor.submit(_train_in_worker, run, cfg, setup): run for run in longest_first}
    failure: BaseException | None = None
    try:
        for future in as_completed(futures):
            if future.cancelled():
                continue
            run = futures[future]
            try:
                result = future.result()
            except Exception as error:  # keep what the runs still in flight finish, then raise
                failure = failure or error
                for pending in futures:
                    pending.cancel()
                continue
            log.info("evaluate: trained %s (held-out %.4f)", run.spec.name, result["heldout_loss"])
            yield run, result
    finally:
        executor.shutdown(wait=True, cancel_futures=True)
    if failure is not None:
        raise failure


_SLOT = 0  # this worker process's number, from 0


def _take_slot(slots: Any) -> None:
    global _SLOT
    with slots.get_lock():
        _SLOT = slots.value
        slots.value += 1


def _train_in_worker(run: PlannedRun, cfg: EvaluateConfig, setup: Any) -> dict[str, Any]:
    import torch

    from colorfilter.evaluation.train import train_and_evaluate

    count = torch.cuda.device_count() if torch.cuda.is_available() else 0
    setup = replace(setup, device=worker_device(setup.device, _SLOT, count))
    return train_and_evaluate(run.index, run.order, cfg, setup, run.spec.seed, run.spec.name)
