"""Faults during scoring: a killed actor, a killed driver. Final scores equal an undisturbed run."""

from __future__ import annotations

import os
import shutil
import signal
import subprocess
import sys
import threading
import time
from pathlib import Path

import pyarrow.parquet as pq
import pytest

from colorfilter.io.token_shards import list_shards
from colorfilter.pipeline.stages import run_stage
from tests.conftest import save_random_models
from tests.pipeline.test_prepare import make_config

REPO = Path(__file__).resolve().parents[2]


@pytest.fixture
def run_dir(tmp_path, tokenizer_dir, c4_inputs):
    """A prepared run with two small random models saved as the prior and the conditional."""

    config = make_config(tmp_path, tokenizer_dir, c4_inputs, **{
        "prepare.rows_per_shard": 48, "score.batch_size": 8, "score.worker_cpus": 0.5,
        "score.num_workers": 2, "score.torch_threads": 1, "executor": "ray",
        "prepare.worker_cpus": 0.5,
    })  # fmt: skip
    run_stage("prepare", config)
    save_random_models(config)
    return config


def score_table(config) -> dict:
    paths = list_shards(config.output_path / "scores" / "pool")
    table = pq.read_table(paths).sort_by("seq_id")
    return {name: table.column(name).to_pylist() for name in table.column_names}


def copy_run(config, target: Path):
    """The same prepared run under another output_dir (scores not yet computed)."""
    shutil.copytree(config.output_path, target, ignore=shutil.ignore_patterns("scores"))
    from dataclasses import replace

    return replace(config, output_dir=str(target))


def scoring_actor_pids() -> list[int]:
    """Pids of this session's actor workers (children of our own raylet)."""
    import psutil
    import ray

    raylet = ray._private.worker._global_node.all_processes["raylet"][0].process.pid
    pids = []
    for child in psutil.Process(raylet).children(recursive=True):
        try:
            if "_Actor" in " ".join(child.cmdline()):
                pids.append(child.pid)
        except psutil.Error:
            continue
    return pids


def test_killed_scoring_actor_is_restarted_and_redone(run_dir, ray_session, tmp_path):
    reference = copy_run(run_dir, tmp_path / "reference")
    run_stage("score", reference)
    score_dir = run_dir.output_path / "scores" / "pool"
    killed = []

    def kill_one_actor() -> None:
        deadline = time.time() + 120
        while time.time() < deadline and not killed:
            actors = scoring_actor_pids()
            if actors and score_records(score_dir):
                os.kill(actors[0], signal.SIGKILL)
                killed.append(actors[0])
            time.sleep(0.05)

    killer = threading.Thread(target=kill_one_actor)
    killer.start()
    stats = run_stage("score", run_dir)
    killer.join()
    assert killed, "no scoring actor was killed: the test did not exercise a restart"
    assert stats["shards_skipped"] == 0 and stats["rows"] == len(score_table(reference)["seq_id"])
    assert score_table(run_dir) == score_table(reference)


def finished(done_dir: Path) -> list[Path]:
    """Completion records in place (not the temp file of one being written)."""
    return [p for p in done_dir.glob("*.json") if not p.name.startswith(".tmp-")]


def file_records(split_dir: Path) -> list[Path]:
    """Prepare's per-file completion records in place (<file>.done.json beside the shards)."""
    return sorted(p for p in split_dir.glob("*.done.json") if not p.name.startswith(".tmp-"))


def score_records(score_dir: Path) -> list[Path]:
    """Score shards' completion records in place (a temp file's name ends otherwise)."""
    return sorted(score_dir.glob("*.done.json"))


def test_killed_driver_resumes_without_redoing_finished_shards(run_dir, tmp_path):
    reference = copy_run(run_dir, tmp_path / "reference")
    run_stage("score", reference)
    config_path = run_dir.output_path / "config.yaml"
    command = [
        sys.executable,
        "-m",
        "colorfilter",
        "score",
        str(config_path),
        "--set",
        "executor=local",
    ]
    env = {**os.environ, "PYTHONPATH": str(REPO)}
    done_dir = run_dir.output_path / "scores" / "pool"
    driver = subprocess.Popen(command, env=env, stdout=subprocess.PIPE, stderr=subprocess.STDOUT)
    deadline = time.time() + 120
    while time.time() < deadline and len(score_records(done_dir)) < 2:
        time.sleep(0.05)
    driver.send_signal(signal.SIGKILL)  # kill -9 mid-run: no cleanup code runs
    driver.wait()
    finished_before = {p.name: p.stat().st_mtime_ns for p in score_records(done_dir)}
    total = len(list_shards(run_dir.output_path / "tokens" / "pool"))
    assert 0 < len(finished_before) < total, "the driver was not killed mid-run"
    rerun = subprocess.run(command, env=env, capture_output=True, text=True, check=True)
    assert f"({len(finished_before)} shards already done, skipped)" in rerun.stderr
    for name, mtime in finished_before.items():
        assert (done_dir / name).stat().st_mtime_ns == mtime  # not recomputed
    assert score_table(run_dir) == score_table(reference)
    assert not list((run_dir.output_path / "scores" / "pool").glob(".tmp-*"))
