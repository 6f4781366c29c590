"""Where select's and DSIR's tasks run: in this process, or on the run's Ray actor pool.

The dataset package describes its map and reduce phases with a `Mapper` (colorfilter.dataset.
work); this is the one it gets, so the dataset package never imports the executor.
"""

from __future__ import annotations

import math
import os
from collections.abc import Iterable
from dataclasses import dataclass, field
from typing import Any

from colorfilter.config import RayConfig
from colorfilter.pipeline.executor import WorkerSpec, map_tasks


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
        threads = str(max(1, math.ceil(self.worker_cpus)))
        env = {"RAYON_NUM_THREADS": threads, "TOKENIZERS_PARALLELISM": "true"}
        if self.executor != "local":  # set in the actor, not as a runtime env: a runtime env
            factory, args = WithEnv, (factory, args, env)  # needs new worker processes
        spec = WorkerSpec(factory, args, num_cpus=self.worker_cpus)
        return map_tasks(
            spec, tasks, executor=self.executor, num_workers=self.num_workers, ray_cfg=self.ray
        )


class WithEnv:
    """A worker built after setting environment variables in its process (before the tokenizer
    starts its thread pool), so an actor can use one of Ray's already started worker processes."""

    def __init__(self, factory: Any, args: tuple, env: dict[str, str]):
        os.environ.update(env)
        self.worker = factory(*args)

    def __call__(self, task: Any) -> Any:
        return self.worker(task)
