"""The executor's error policy on a real local Ray and in-process: transient errors are retried,
fatal ones raise the worker's own error at once, and a stage with no capacity stops clearly."""

from __future__ import annotations

import os
import time
from pathlib import Path

import pytest

from colorfilter.config import RayConfig
from colorfilter.errors import BadDataError, ColorFilterError, ConfigError
from colorfilter.pipeline.executor import WorkerSpec, map_tasks, ray_address

FAST = RayConfig(max_task_attempts=3, retry_backoff_s=0.05, capacity_wait_s=2.0)


class FlakyWorker:
    """Fails the first `failures` tries of every task with `error`, then doubles the task."""

    def __init__(self, state_dir: str, failures: int, error: str):
        self.state_dir, self.failures, self.error = Path(state_dir), failures, error

    def __call__(self, task: int) -> int:
        tries = len(list(self.state_dir.glob(f"{task}-*")))
        (self.state_dir / f"{task}-{tries}-{os.getpid()}").touch()
        if tries < self.failures:
            raise {
                "timeout": TimeoutError("read timed out from the object store"),
                "bad": BadDataError(f"shard {task}: 3 bad records (max_bad_fraction)"),
            }[self.error]
        return 2 * task


def broken_factory() -> None:
    raise ConfigError("no model at /nowhere: run `colorfilter train-prior` first")


def tries(state_dir: Path) -> dict[int, int]:
    counts: dict[int, int] = {}
    for path in state_dir.iterdir():
        task = int(path.name.split("-")[0])
        counts[task] = counts.get(task, 0) + 1
    return counts


@pytest.mark.parametrize("executor", ["local", "ray"])
def test_transient_errors_are_retried_with_backoff(executor, tmp_path, ray_session):
    spec = WorkerSpec(FlakyWorker, (str(tmp_path), 2, "timeout"), num_cpus=0.5)
    start = time.perf_counter()
    results = dict(map_tasks(spec, list(range(4)), executor=executor, num_workers=2, ray_cfg=FAST))
    assert results == {i: 2 * i for i in range(4)}
    assert tries(tmp_path) == {i: 3 for i in range(4)}  # 2 failures + the success, no more
    if executor == "local":  # 0.05 s then 0.1 s of backoff per task
        assert time.perf_counter() - start >= 4 * 0.15


@pytest.mark.parametrize("executor", ["local", "ray"])
def test_transient_errors_fail_after_max_attempts(executor, tmp_path, ray_session):
    spec = WorkerSpec(FlakyWorker, (str(tmp_path), 99, "timeout"), num_cpus=0.5)
    with pytest.raises(ColorFilterError, match=r"failed 3 times .* TimeoutError: read timed out"):
        list(map_tasks(spec, [7], executor=executor, num_workers=1, ray_cfg=FAST))
    assert tries(tmp_path) == {7: 3}


@pytest.mark.parametrize("executor", ["local", "ray"])
def test_fatal_errors_fail_at_once_with_the_workers_own_error(executor, tmp_path, ray_session):
    spec = WorkerSpec(FlakyWorker, (str(tmp_path), 1, "bad"), num_cpus=0.5)
    with pytest.raises(BadDataError) as caught:
        list(map_tasks(spec, [5], executor=executor, num_workers=1, ray_cfg=FAST))
    assert str(caught.value) == "shard 5: 3 bad records (max_bad_fraction)"  # no remote trace
    assert type(caught.value) is BadDataError and tries(tmp_path) == {5: 1}


def test_a_failing_worker_factory_raises_its_own_error(ray_session):
    spec = WorkerSpec(broken_factory, num_cpus=0.5)
    with pytest.raises(ConfigError) as caught:
        list(map_tasks(spec, [1, 2], executor="ray", num_workers=2, ray_cfg=FAST))
    assert str(caught.value) == "no model at /nowhere: run `colorfilter train-prior` first"


def test_no_capacity_stops_with_a_clear_error_after_the_wait(tmp_path, ray_session):
    spec = WorkerSpec(FlakyWorker, (str(tmp_path), 0, "timeout"), resources={"absent-gpu": 1})
    start = time.perf_counter()
    with pytest.raises(
        ColorFilterError,
        match=r"no capacity for 3 pending tasks after 2 s: "
        r"no node can host a worker \(1 CPU, 1 absent-gpu\).*rerun to resume",
    ):
        list(map_tasks(spec, [1, 2, 3], executor="ray", num_workers=2, ray_cfg=FAST))
    assert 2.0 <= time.perf_counter() - start < 10
    assert not list(tmp_path.iterdir())


def test_ray_address_is_private_unless_configured_or_inside_a_ray_job(monkeypatch):
    monkeypatch.delenv("RAY_JOB_CONFIG_JSON_ENV_VAR", raising=False)
    monkeypatch.setenv("RAY_ADDRESS", "http://127.0.0.1:8265")  # e.g. for `colorfilter submit`
    assert ray_address(RayConfig()) == "local"
    assert ray_address(RayConfig(address="ray://head:10001")) == "ray://head:10001"
    monkeypatch.setenv("RAY_JOB_CONFIG_JSON_ENV_VAR", "{}")  # what Ray sets for a job
    assert ray_address(RayConfig()) == "auto"
