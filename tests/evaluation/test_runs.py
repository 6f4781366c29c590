"""How side-by-side evaluation runs share a machine: threads per run, GPU per worker."""

from __future__ import annotations

from colorfilter.evaluation.config import EvaluateConfig
from colorfilter.evaluation.runs import RunSpec, threads_per_worker, worker_device


def test_threads_are_shared_among_workers_unless_set() -> None:
    assert threads_per_worker(EvaluateConfig(workers=2), cpus=8) == 4
    assert threads_per_worker(EvaluateConfig(workers=3), cpus=8) == 2
    assert threads_per_worker(EvaluateConfig(workers=4), cpus=2) == 1  # never zero
    assert threads_per_worker(EvaluateConfig(workers=2, torch_threads=3), cpus=2) == 3


def test_workers_spread_over_the_gpus() -> None:
    assert [worker_device("auto", slot, 2) for slot in range(3)] == ["cuda:0", "cuda:1", "cuda:0"]
    assert worker_device("cuda", 5, 4) == "cuda:1"
    assert worker_device("auto", 1, 0) == "auto"  # no GPU: each worker resolves to the CPU
    assert worker_device("cuda:3", 1, 4) == "cuda:3"  # an explicit device is kept
    assert worker_device("cpu", 1, 4) == "cpu"


def test_run_names_say_method_tau_chunks_and_seed() -> None:
    assert RunSpec("color", 8.0, 1536, 2).name == "color-tau8-n1536-seed2"
    assert RunSpec("random", 1.0, 100, 0).name == "random-tau1-n100-seed0"
