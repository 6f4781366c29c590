"""The work directory of one select plan, and its map and reduce phases on the executor.

A plan is every selection written together (their ids, configs, inputs). Its work directory
holds the selections' index files, the map tasks' runs and records, and the reducers' records;
it belongs to one plan hash (`plan.json`): another plan wipes it, the same plan resumes from it.
Everything in it is written whole or not at all under deterministic names, on local disk or a
bucket alike (a Location); tasks' completion records are colorfilter.io.commit records.
"""

from __future__ import annotations

from collections.abc import Callable, Iterable, Sequence
from contextlib import closing
from dataclasses import replace
from typing import Any, Protocol

from colorfilter.dataset.merge import ReduceTask, finished_reduces, reduce_range
from colorfilter.dataset.runs import MapSettings, MapTask, MapWorker, finished_maps
from colorfilter.io import storage
from colorfilter.io.atomic import remove_stale_temps
from colorfilter.io.commit import read_unit, write_unit
from colorfilter.io.location import Location
from colorfilter.progress import Progress

PLAN_NAME = "plan.done.json"  # the plan's record (colorfilter.io.commit), written first


class Mapper(Protocol):
    """Where map and reduce tasks run (colorfilter.pipeline.execution.Execution)."""

    def workers(self) -> int: ...

    def map(self, factory: Any, args: tuple, tasks: list) -> Iterable[tuple[Any, Any]]: ...


def open_work_dir(work_dir: Location, plan_hash: str) -> bool:
    """Make `work_dir` this plan's; True when it resumes an earlier run of the same plan."""
    plan = read_unit(work_dir.join(PLAN_NAME))
    if plan is not None and plan.meta.get("plan_hash") == plan_hash:
        if work_dir.is_local:  # on a bucket an aborted write leaves nothing to clean
            remove_stale_temps(work_dir.path)
        return True
    storage.remove(work_dir, recursive=True)
    storage.makedirs(work_dir)
    write_unit(work_dir.join(PLAN_NAME), {}, meta={"plan_hash": plan_hash})
    return False


class SelectWorker:
    """One worker type for both phases: a map task writes runs; a reduce task merges the runs
    its task names (filled in by the driver once every map is done and checked)."""

    def __init__(self, settings: MapSettings):
        self.settings = settings
        self.map = MapWorker(settings)

    def __call__(self, task: MapTask | ReduceTask) -> Any:
        if isinstance(task, MapTask):
            return self.map(task)
        return reduce_range(task)


def run_phases(
    maps: Sequence[MapTask],
    settings: MapSettings,
    reduces: Sequence[ReduceTask],
    execution: Mapper,
    on_mapped: Callable[[list[dict]], dict[str, list[str]]],
    on_done: Callable[[ReduceTask, dict[str, dict]], None],
) -> None:
    """Unfinished maps, then unfinished reducers, each phase one executor call.

    Reducers are handed out only once every map is done: a reducer never holds a worker slot
    that a map lost with its node needs, so the executor's re-queueing and capacity wait work
    for select as for the other stages.

    `on_mapped` sees every map record (task order) once all maps are done and returns each
    selection's runs, which releases the reducers; `on_done` then sees every reducer (finished
    ones first). Finished tasks of this plan are not rerun."""
    records = finished_maps(settings.work_dir, maps, settings.plan_hash, settings.keys)
    todo_maps = [task for task in maps if task.index not in records]
    finished = finished_reduces(reduces)
    todo_reduces = [task for task in reduces if task not in finished]
    progress = Progress("select: map", len(todo_maps), unit="rows")
    reducing: list[Progress] = []

    def release() -> list[ReduceTask]:
        """Check the maps, report the finished reducers, and name each reducer's runs."""
        progress.close(f"({len(maps) - len(todo_maps)} shards already done, skipped)")
        runs = on_mapped([records[task.index] for task in maps])
        for task, files in finished.items():
            on_done(task, files)
        reducing.append(Progress("select: reduce", len(todo_reduces), unit="shards"))
        return [replace(task, runs=tuple(runs[task.key])) for task in todo_reduces]

    if todo_maps:
        stream = execution.map(SelectWorker, (settings,), todo_maps)
        with closing(stream):  # an error here stops (kills) the workers at once
            for task, result in stream:
                records[task.index] = result
                progress.update(1, result["token_rows"])
    ready_reduces = release()
    if ready_reduces:
        stream = execution.map(SelectWorker, (settings,), ready_reduces)
        with closing(stream):
            for task, result in stream:
                on_done(task, result)
                reducing[0].update(1, len(result))
    reducing[0].close(f"({len(finished)} reducers already done, skipped)")
