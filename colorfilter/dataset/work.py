"""The work directory of one select plan, and its map and reduce phases on the executor.

A plan is every selection written together (their ids, configs, inputs). Its work directory
holds the selections' index files, the map tasks' runs and records, and the reducers' records;
it belongs to one plan hash (`plan.json`): another plan wipes it, the same plan resumes from it.
Everything in it is written atomically under deterministic names.
"""

from __future__ import annotations

import math
import os
import shutil
from collections.abc import Callable, Iterable, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from colorfilter.config import RayConfig
from colorfilter.dataset.merge import ReduceTask, ReduceWorker, finished_reduce
from colorfilter.dataset.runs import MapSettings, MapTask, MapWorker, finished_map
from colorfilter.io.atomic import read_json_object, remove_stale_temps, write_json_atomic
from colorfilter.progress import Progress

PLAN_NAME = "plan.json"


@dataclass(frozen=True)
class Execution:
    """Where map and reduce tasks run: in this process, or on a Ray actor pool."""

    executor: str = "local"  # local | ray
    num_workers: int = 0  # actors (0: one per CPU); reducers per selection = 2 x workers
    worker_cpus: float = 1.0
    ray: RayConfig = field(default_factory=RayConfig)

    def workers(self) -> int:
        if self.executor == "local":
            return 1
        return self.num_workers or max(1, int((os.cpu_count() or 1) // max(self.worker_cpus, 1e-6)))

    def map(self, factory: Any, args: tuple, tasks: list) -> Iterable[tuple[Any, Any]]:
        from colorfilter.pipeline.executor import WorkerSpec, map_tasks

        threads = str(max(1, math.ceil(self.worker_cpus)))
        spec = WorkerSpec(
            factory, args, num_cpus=self.worker_cpus,
            env_vars={"RAYON_NUM_THREADS": threads, "TOKENIZERS_PARALLELISM": "true"},
        )  # fmt: skip
        return map_tasks(
            spec, tasks, executor=self.executor, num_workers=self.num_workers, ray_cfg=self.ray
        )


def open_work_dir(work_dir: Path, plan_hash: str) -> bool:
    """Make `work_dir` this plan's; True when it resumes an earlier run of the same plan."""
    plan = read_json_object(work_dir / PLAN_NAME)
    if plan is not None and plan.get("plan_hash") == plan_hash:
        remove_stale_temps(work_dir)
        return True
    shutil.rmtree(work_dir, ignore_errors=True)
    work_dir.mkdir(parents=True, exist_ok=True)
    write_json_atomic(work_dir / PLAN_NAME, {"plan_hash": plan_hash})
    return False


def run_maps(tasks: Sequence[MapTask], settings: MapSettings, execution: Execution) -> list[dict]:
    """Every map task's record, in task order; finished tasks of this plan are not rerun."""
    records: dict[int, dict] = {}
    for task in tasks:
        if (
            record := finished_map(settings.work_dir, task, settings.plan_hash, settings.keys)
        ) is not None:
            records[task.index] = record
    todo = [task for task in tasks if task.index not in records]
    progress = Progress("select: map", len(todo), unit="rows")
    for task, record in execution.map(MapWorker, (settings,), todo):
        records[task.index] = record
        progress.update(1, record["token_rows"])
    progress.close(f"({len(tasks) - len(todo)} shards already done, skipped)")
    return [records[task.index] for task in tasks]


def run_reduces(
    tasks: Sequence[ReduceTask],
    execution: Execution,
    on_done: Callable[[ReduceTask, dict[str, int]], None],
) -> None:
    """Run the unfinished reducers; `on_done` sees every reducer (finished ones first)."""
    todo = []
    for task in tasks:
        files = finished_reduce(task)
        if files is None:
            todo.append(task)
        else:
            on_done(task, files)
    progress = Progress("select: reduce", len(todo), unit="shards")
    for task, files in execution.map(ReduceWorker, (), todo):
        on_done(task, files)
        progress.update(1, len(files))
    progress.close(f"({len(tasks) - len(todo)} reducers already done, skipped)")
