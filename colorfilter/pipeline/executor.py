"""Run independent units of work (one input file, one token shard) locally or on a Ray actor pool.

A worker is built once per actor by a picklable factory (so models and tokenizers load once and
nothing unpicklable crosses the wire) and then called once per task. Ray restarts a crashed actor
and retries its unfinished task; results stream back in completion order.
"""

from __future__ import annotations

import os
from collections.abc import Callable, Iterator
from dataclasses import dataclass, field
from typing import Any

from colorfilter.config import RayConfig

QUIET_RAY_ENV = {
    "RAY_USAGE_STATS_ENABLED": "0",
    "RAY_AUTH_MODE": "disabled",
    "RAY_ENABLE_UV_RUN_RUNTIME_ENV": "0",
}


@dataclass
class WorkerSpec:
    """How to build a worker: `factory(*args)` returns a callable `worker(task) -> result`."""

    factory: Callable[..., Callable[[Any], Any]]
    args: tuple = ()
    num_cpus: float = 1.0
    num_gpus: float = 0.0
    env_vars: dict[str, str] = field(default_factory=dict)


def init_ray(ray_cfg: RayConfig) -> Any:
    """Start (or join) Ray once per process; quiet, small and dashboard-free for local runs."""
    import ray

    if ray.is_initialized():
        return ray
    for key, value in QUIET_RAY_ENV.items():
        os.environ.setdefault(key, value)
    if ray_cfg.address:
        ray.init(address=ray_cfg.address, log_to_driver=True)
    else:
        ray.init(
            num_cpus=ray_cfg.num_cpus,
            object_store_memory=ray_cfg.object_store_memory_mb * 1024 * 1024,
            include_dashboard=False,
            log_to_driver=True,
        )
    return ray


class _Actor:
    def __init__(self, factory: Callable, args: tuple):
        self.worker = factory(*args)

    def run(self, index: int, task: Any) -> tuple[int, Any]:
        return index, self.worker(task)

    def pid(self) -> int:
        return os.getpid()


def map_tasks(
    spec: WorkerSpec,
    tasks: list[Any],
    *,
    executor: str,
    num_workers: int,
    ray_cfg: RayConfig,
    max_restarts: int = 3,
    max_task_retries: int = 3,
) -> Iterator[tuple[Any, Any]]:
    """Yield (task, result) pairs as tasks finish."""
    if not tasks:
        return
    if executor == "local":
        worker = spec.factory(*spec.args)
        for task in tasks:
            yield task, worker(task)
        return
    ray = init_ray(ray_cfg)
    from ray.util import ActorPool

    size = max(1, min(num_workers or _auto_workers(ray, spec), len(tasks)))
    actor_cls = ray.remote(
        num_cpus=spec.num_cpus,
        num_gpus=spec.num_gpus,
        max_restarts=max_restarts,
        max_task_retries=max_task_retries,
        runtime_env={"env_vars": spec.env_vars} if spec.env_vars else None,
    )(_Actor)
    actors = [actor_cls.remote(spec.factory, spec.args) for _ in range(size)]
    try:
        pool = ActorPool(actors)
        calls = pool.map_unordered(lambda actor, it: actor.run.remote(*it), list(enumerate(tasks)))
        for index, result in calls:
            yield tasks[index], result
    finally:
        for actor in actors:
            ray.kill(actor)


def _auto_workers(ray: Any, spec: WorkerSpec) -> int:
    resources = ray.cluster_resources()
    if spec.num_gpus:
        return max(1, int(resources.get("GPU", 0) // spec.num_gpus))
    return max(1, int(resources.get("CPU", 1) // max(spec.num_cpus, 1e-6)))
