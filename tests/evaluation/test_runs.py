"""How side-by-side evaluation runs share a machine: threads, CPUs and GPUs per run."""

from __future__ import annotations

import pytest

from colorfilter.evaluation.config import EvaluateConfig
from colorfilter.pipeline.evaluate_runs import RunSpec, run_resources, threads_per_worker


def test_threads_are_shared_among_workers_unless_set() -> None:
    assert threads_per_worker(EvaluateConfig(workers=2), cpus=8) == 4
    assert threads_per_worker(EvaluateConfig(workers=3), cpus=8) == 2
    assert threads_per_worker(EvaluateConfig(workers=4), cpus=2) == 1  # never zero
    assert threads_per_worker(EvaluateConfig(workers=2, torch_threads=3), cpus=2) == 3


def test_each_run_holds_its_threads_or_one_gpu_on_the_cluster() -> None:
    two = EvaluateConfig(workers=2)
    # the demo on 2 cores: 1 thread and 1 CPU per run, two side by side
    assert run_resources(two, "cpu", {"CPU": 2.0}) == (1, 1.0, 0.0)
    # explicit threads beyond the cluster's share: the CPUs reserved shrink so both runs fit
    assert run_resources(EvaluateConfig(workers=2, torch_threads=3), "cpu", {"CPU": 2.0}) == (
        3,
        1.0,
        0.0,
    )
    assert run_resources(EvaluateConfig(workers=3), "cpu", {"CPU": 2.0})[1] == pytest.approx(2 / 3)
    # one GPU per run wherever the cluster has GPUs, unless the device is the CPU
    assert run_resources(two, "auto", {"CPU": 16.0, "GPU": 8.0})[2] == 1.0
    assert run_resources(two, "cuda", {"CPU": 16.0, "GPU": 1.0})[2] == 1.0
    assert run_resources(two, "cpu", {"CPU": 16.0, "GPU": 8.0})[2] == 0.0
    assert run_resources(two, "auto", {"CPU": 16.0})[2] == 0.0
    # executor local: no cluster, the threads of a worker on this machine
    threads = threads_per_worker(two)
    assert run_resources(two, "cpu", {}) == (threads, float(threads), 0.0)


def test_run_names_say_method_tau_chunks_and_seed() -> None:
    assert RunSpec("color", 8.0, 1536, 2).name == "color-tau8-n1536-seed2"
    assert RunSpec("random", 1.0, 100, 0).name == "random-tau1-n100-seed0"
