"""Run independent units of work (one input file, one token shard) locally or on Ray actors.

A worker is built once per actor by a picklable factory (so models and tokenizers load once and
nothing unpicklable crosses the wire) and then called once per task; results stream back in
completion order. On Ray our own loop over `ray.wait` schedules one task per actor at a time,
so it outlives nodes: a task whose actor or node dies goes back to the queue (healthy actors'
results are kept), the dead actor is replaced, and idle actors are released once the queue is
empty so their CPUs/GPUs can host replacements. Transient errors are retried with backoff, fatal
ones raise the worker's own ColorFilterError (see pipeline/retry.py). With no worker alive for
`ray.capacity_wait_s` the stage stops; finished units keep their records and a rerun resumes.
"""

from __future__ import annotations

import os
import sys
import time
from collections.abc import Callable, Iterator
from dataclasses import dataclass, field
from typing import Any

from colorfilter import interrupts
from colorfilter.config import RayConfig
from colorfilter.errors import ColorFilterError, ServiceError
from colorfilter.io.faults import service_failure
from colorfilter.io.redact import redact
from colorfilter.pipeline.cluster import join_cluster
from colorfilter.pipeline.retry import (
    FATAL,
    backoff_s,
    classify_error,
    describe_task,
    is_lost_worker,
    named_fault,
    one_line,
)

QUIET_RAY_ENV = {
    "RAY_USAGE_STATS_ENABLED": "0",
    "RAY_AUTH_MODE": "disabled",
    "RAY_ENABLE_UV_RUN_RUNTIME_ENV": "0",
}
RAY_JOB_ENV = "RAY_JOB_CONFIG_JSON_ENV_VAR"  # set by Ray for a job's entrypoint (with RAY_ADDRESS)
POLL_S = 0.5


@dataclass
class WorkerSpec:
    """How to build a worker: `factory(*args)` returns a callable `worker(task) -> result`."""

    factory: Callable[..., Callable[[Any], Any]]
    args: tuple = ()
    num_cpus: float = 1.0
    num_gpus: float = 0.0
    env_vars: dict[str, str] = field(default_factory=dict)
    resources: dict[str, float] = field(default_factory=dict)  # custom Ray resources per actor


def ray_address(ray_cfg: RayConfig) -> str:
    """The configured address; inside a Ray job its cluster; else "local": a private new Ray.

    Never whatever `ray start` (or a killed run's stale address file) left on the machine.
    """
    if ray_cfg.address:
        return ray_cfg.address
    if os.environ.get(RAY_JOB_ENV) and os.environ.get("RAY_ADDRESS"):
        return "auto"
    return "local"


def init_ray(ray_cfg: RayConfig) -> Any:
    """Start a private Ray (or join the configured one) once per process; quiet, no dashboard."""
    import ray

    if ray.is_initialized():
        return ray
    for key, value in QUIET_RAY_ENV.items():
        os.environ.setdefault(key, value)
    address = ray_address(ray_cfg)
    with interrupts.keep_handlers():  # ray.init replaces our SIGTERM handler with its own
        if address != "local":  # probed first: an address nothing answers at fails fast
            join_cluster(ray, address, ray_cfg.connect_timeout_s)
        else:
            ray.init(
                address="local",
                num_cpus=ray_cfg.num_cpus,
                object_store_memory=ray_cfg.object_store_memory_mb * 1024 * 1024,
                include_dashboard=False,
                log_to_driver=True,
            )
    return ray


class _Actor:
    """Builds the worker in `setup()` (not `__init__`), so a factory's error comes back whole."""

    def __init__(self, factory: Callable, args: tuple):
        self.factory, self.args, self.worker = factory, args, None

    def setup(self) -> dict:
        self.worker = self.factory(*self.args)
        import ray

        return {"pid": os.getpid(), "node_id": ray.get_runtime_context().get_node_id()}

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
) -> Iterator[tuple[Any, Any]]:
    """Yield (task, result) pairs as tasks finish. Lost actors are replaced while capacity
    exists (`ray_cfg.capacity_wait_s`) and every task gets `ray_cfg.max_task_attempts` tries.
    """
    if not tasks:
        return
    if executor == "local":
        yield from _map_local(spec, tasks, ray_cfg)
        return
    ray = init_ray(ray_cfg)
    size = max(1, min(num_workers or _auto_workers(ray, spec), len(tasks)))
    yield from _Scheduler(ray, spec, tasks, size, ray_cfg).run()


def _map_local(spec: WorkerSpec, tasks: list[Any], cfg: RayConfig) -> Iterator[tuple[Any, Any]]:
    worker = spec.factory(*spec.args)
    for task in tasks:
        attempt = 0
        while True:
            try:
                result = worker(task)
                break
            except Exception as exc:  # noqa: BLE001 - classified, fatal ones re-raised
                attempt += 1
                _check_retry(task, exc, attempt, cfg)
                time.sleep(backoff_s(attempt, cfg.retry_backoff_s))
        yield task, result


def _check_retry(task: Any, exc: BaseException, attempt: int, cfg: RayConfig) -> None:
    """Raise if `exc` is fatal (the worker's own error) or the task is out of attempts: a
    service that stayed down is one ServiceError naming its endpoint (exit 2)."""
    if classify_error(exc) == FATAL:
        _raise_fatal(exc, task)
    if attempt >= cfg.max_task_attempts:
        service = service_failure(exc)
        if service is not None:
            raise ServiceError(
                f"{describe_task(task)}: {service} (after {attempt} attempts, "
                "ray.max_task_attempts)"
            ) from None
        raise ColorFilterError(
            f"{describe_task(task)} failed {attempt} times (ray.max_task_attempts), last: "
            f"{redact(one_line(exc))}; rerun to resume"
        ) from exc


def _raise_fatal(exc: BaseException, task: Any = None) -> None:
    """Raise the worker's own ColorFilterError (one line for the user); a raw out-of-space or
    damaged-data error (from a writer or reader that did not name its file) as one line naming
    the task's files; else `exc` as it is."""
    ours = _user_error(exc) or named_fault(exc, task)
    if ours is None:
        raise exc
    if ours is exc:
        raise ours
    raise ours from None  # not the remote stack trace around it


def _user_error(exc: BaseException) -> ColorFilterError | None:
    seen = set()
    while exc is not None and id(exc) not in seen:
        seen.add(id(exc))
        if isinstance(exc, ColorFilterError) and not type(exc).__name__.startswith("RayTaskError"):
            return exc.with_traceback(None)
        exc = getattr(exc, "cause", None) or exc.__cause__
    return None


@dataclass
class _Slot:
    """One actor: its setup call until it is ready, then at most one task in flight."""

    actor: Any
    setup_ref: Any
    ready: bool = False
    index: int | None = None
    ref: Any = None


class _Scheduler:
    """The loop over `ray.wait` that hands out tasks, re-queues lost ones, replaces actors."""

    def __init__(self, ray: Any, spec: WorkerSpec, tasks: list[Any], size: int, cfg: RayConfig):
        self.ray, self.tasks, self.size, self.cfg = ray, tasks, size, cfg
        self.actor_cls = ray.remote(
            num_cpus=spec.num_cpus,
            num_gpus=spec.num_gpus,
            resources=spec.resources or None,
            max_restarts=0,
            max_task_retries=0,
            runtime_env={"env_vars": spec.env_vars} if spec.env_vars else None,
        )(_Actor)
        self.spec = spec
        self.pending: dict[int, float] = {i: 0.0 for i in range(len(tasks))}  # index: not before
        self.attempts = [0] * len(tasks)
        self.slots: list[_Slot] = []
        self.done = 0
        self.no_worker_since: float | None = time.monotonic()
        self.spawn_after = 0.0
        self.last_worker_error = ""
        self.setup_failures = 0

    def run(self) -> Iterator[tuple[Any, Any]]:
        try:
            while self.done < len(self.tasks):
                with interrupts.deferred():  # a SIGTERM is raised between Ray calls, not in one
                    self._release_idle()
                    self._spawn()
                    self._assign()
                    results = self._collect()
                    self._check_capacity()
                yield from results
        finally:
            for slot in self.slots:
                self.ray.kill(slot.actor, no_restart=True)

    def _in_flight(self) -> int:
        return sum(slot.index is not None for slot in self.slots)

    def _release_idle(self) -> None:
        """With nothing left to hand out, free idle actors' CPUs/GPUs for replacements."""
        if self.pending:
            return
        for slot in [s for s in self.slots if s.index is None]:
            self._drop(slot)

    def _spawn(self) -> None:
        wanted = min(self.size, len(self.pending) + self._in_flight())
        if time.monotonic() < self.spawn_after:
            return
        while len(self.slots) < wanted:
            actor = self.actor_cls.remote(self.spec.factory, self.spec.args)
            self.slots.append(_Slot(actor, actor.setup.remote()))

    def _assign(self) -> None:
        now = time.monotonic()
        for slot in self.slots:
            if not slot.ready or slot.index is not None:
                continue
            due = [i for i, t in self.pending.items() if t <= now]
            if not due:
                return
            index = min(due)
            del self.pending[index]
            slot.index, slot.ref = index, slot.actor.run.remote(index, self.tasks[index])

    def _collect(self) -> list[tuple[Any, Any]]:
        by_ref = {}
        for slot in self.slots:
            by_ref[slot.ref if slot.ready else slot.setup_ref] = slot
        by_ref.pop(None, None)
        if not by_ref:
            time.sleep(POLL_S)
            return []
        refs = list(by_ref)
        ready, _ = self.ray.wait(refs, num_returns=1, timeout=POLL_S)
        if ready:
            ready, _ = self.ray.wait(refs, num_returns=len(refs), timeout=0)
        results = []
        for ref in ready:
            slot = by_ref[ref]
            if not slot.ready:
                self._finish_setup(slot)
                continue
            index = slot.index
            try:
                _, result = self.ray.get(ref)
            except Exception as exc:  # noqa: BLE001 - classified; fatal ones re-raised
                self._task_failed(slot, index, exc)
                continue
            slot.index = slot.ref = None
            self.done += 1
            results.append((self.tasks[index], result))
        return results

    def _finish_setup(self, slot: _Slot) -> None:
        try:
            self.ray.get(slot.setup_ref)
        except Exception as exc:  # noqa: BLE001 - classified; fatal ones re-raised
            if not is_lost_worker(exc) and classify_error(exc) == FATAL:
                _raise_fatal(exc)
            self.last_worker_error = one_line(exc)
            self.setup_failures += 1
            if self.setup_failures >= self.cfg.max_task_attempts * self.size:
                raise ColorFilterError(
                    f"workers failed to start {self.setup_failures} times in a row, last: "
                    f"{self.last_worker_error}; rerun to resume"
                ) from exc
            self.spawn_after = time.monotonic() + backoff_s(
                self.setup_failures, self.cfg.retry_backoff_s
            )
            self._drop(slot)
            return
        slot.ready, self.setup_failures = True, 0

    def _task_failed(self, slot: _Slot, index: int, exc: BaseException) -> None:
        self.attempts[index] += 1
        _check_retry(self.tasks[index], exc, self.attempts[index], self.cfg)
        if is_lost_worker(exc):  # the actor or its node is gone: replace it, redo at once
            self.last_worker_error = one_line(exc, limit=120)
            _note(f"lost a worker ({self.last_worker_error}); its task goes to another one")
            self._drop(slot)
            self.pending[index] = 0.0
            return
        slot.index = slot.ref = None  # a transient error: the actor is fine, retry later
        delay = backoff_s(self.attempts[index], self.cfg.retry_backoff_s)
        _note(f"{one_line(exc, limit=120)}; retry {self.attempts[index]} in {delay:g} s")
        self.pending[index] = time.monotonic() + delay

    def _drop(self, slot: _Slot) -> None:
        self.slots.remove(slot)
        self.ray.kill(slot.actor, no_restart=True)

    def _check_capacity(self) -> None:
        """Stop once no worker is ready and the live nodes cannot host one, for the whole wait."""
        if any(slot.ready for slot in self.slots) or self._placeable():
            self.no_worker_since = None
            return
        now = time.monotonic()
        if self.no_worker_since is None:
            self.no_worker_since = now
            _note(
                f"no node can host a worker ({self._needs()}) for {len(self.tasks) - self.done} "
                f"pending tasks; waiting up to {self.cfg.capacity_wait_s:g} s for capacity"
            )
        waited = now - self.no_worker_since
        if waited > self.cfg.capacity_wait_s:
            left = len(self.tasks) - self.done
            last = self.last_worker_error and f" (last worker error: {self.last_worker_error})"
            raise ColorFilterError(
                f"no capacity for {left} pending tasks after {waited:.0f} s: no node can host a "
                f"worker ({self._needs()}){last}; finished units are kept, rerun to resume "
                "(ray.capacity_wait_s sets the wait)"
            )

    def _placeable(self) -> bool:
        """Whether the live nodes together have what one actor needs (busy or not)."""
        total = self.ray.cluster_resources()
        needs = {"CPU": self.spec.num_cpus, "GPU": self.spec.num_gpus, **self.spec.resources}
        return all(total.get(name, 0.0) >= amount for name, amount in needs.items() if amount)

    def _needs(self) -> str:
        needs = {"CPU": self.spec.num_cpus, "GPU": self.spec.num_gpus, **self.spec.resources}
        return ", ".join(f"{v:g} {k}" for k, v in needs.items() if v)


def _note(message: str) -> None:
    print(f"executor: {message}", file=sys.stderr, flush=True)


def _auto_workers(ray: Any, spec: WorkerSpec) -> int:
    resources = ray.cluster_resources()
    if spec.num_gpus:
        return max(1, int(resources.get("GPU", 0) // spec.num_gpus))
    return max(1, int(resources.get("CPU", 1) // max(spec.num_cpus, 1e-6)))
