"""Stopping and sharing the machine: SIGTERM to a scoring driver stops it cleanly (exit 143,
actors gone, finished shards kept) and the same command continues to the undisturbed scores;
two runs on one machine at once each start a private Ray, whatever address file is lying around.
"""

from __future__ import annotations

import os
import signal
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import pytest

from colorfilter.config import save_resolved
from colorfilter.errors import EXIT_TERMINATED
from colorfilter.pipeline.stages import run_stage
from tests.cluster.nodes import prepare_scoring_run
from tests.pipeline.test_faults import copy_run, score_records, score_table
from tests.pipeline.test_prepare import make_config, shard_digests
from tests.pipeline.test_resume import mtimes, temp_files

REPO = Path(__file__).resolve().parents[2]
SLOW_BOOT = "from tests.cluster.nodes import slow_cli_main; slow_cli_main()"


@pytest.fixture
def ray_tmpdir():
    """A Ray temp root of our own, holding a stale address file as a killed `ray start` leaves."""
    root = Path(tempfile.mkdtemp(prefix="rp", dir="/tmp"))  # short: Ray's socket paths
    (root / "ray").mkdir()
    (root / "ray" / "ray_current_cluster").write_text("127.0.0.1:6553")  # nobody listens
    yield root
    subprocess.run(["rm", "-rf", str(root)], check=False)


def env_for(ray_tmpdir: Path) -> dict[str, str]:
    env = {**os.environ, "PYTHONPATH": str(REPO), "RAY_TMPDIR": str(ray_tmpdir)}
    env.pop("RAY_ADDRESS", None)
    return env


def processes_using(path: Path) -> list[int]:
    import psutil

    pids = []
    for proc in psutil.process_iter(["cmdline"]):
        try:
            if any(str(path) in part for part in proc.info["cmdline"] or []):
                pids.append(proc.pid)
        except psutil.Error:
            continue
    return pids


def test_sigterm_mid_score_stops_cleanly_and_the_same_command_continues(
    tmp_path, tokenizer_dir, c4_inputs, ray_tmpdir
):
    config = prepare_scoring_run(tmp_path, tokenizer_dir, c4_inputs)
    reference = copy_run(config, tmp_path / "reference")
    run_stage("score", reference)
    args = ["score", str(save_resolved(config)), "--set", "executor=ray", "--set",
            "ray.num_cpus=2", "--set", "device=cpu"]  # fmt: skip
    env, done_dir = env_for(ray_tmpdir), config.output_path / "scores" / "pool"
    pipes = {"stdout": subprocess.PIPE, "stderr": subprocess.PIPE, "text": True}
    driver = subprocess.Popen([sys.executable, "-c", SLOW_BOOT, *args], env=env, **pipes)
    deadline = time.monotonic() + 120
    while time.monotonic() < deadline and driver.poll() is None and not score_records(done_dir):
        time.sleep(0.05)
    driver.send_signal(signal.SIGTERM)
    sent = time.monotonic()
    _out, err = driver.communicate(timeout=60)
    stop_s = time.monotonic() - sent
    assert driver.returncode == EXIT_TERMINATED, err[-3000:]
    assert "SIGTERM: stopping" in err and "Traceback" not in err
    for _ in range(100):  # the private Ray (and so every actor) goes with the driver
        if not processes_using(ray_tmpdir):
            break
        time.sleep(0.1)
    assert not processes_using(ray_tmpdir)
    kept = score_records(done_dir)
    total = len(list((config.output_path / "tokens" / "pool").glob("*.parquet")))
    assert 0 < len(kept) < total, "the driver was not stopped mid-stage"
    kept_mtimes = mtimes(kept)

    start = time.monotonic()
    rerun = subprocess.run([sys.executable, "-m", "colorfilter", *args], env=env,
                           capture_output=True, text=True)  # fmt: skip
    rerun_s = time.monotonic() - start
    assert rerun.returncode == 0, rerun.stderr[-3000:]
    assert f"({len(kept)} shards already done, skipped)" in rerun.stderr
    assert mtimes(kept) == kept_mtimes  # finished shards were not redone
    assert score_table(config) == score_table(reference)
    assert not temp_files(config.output_path / "scores")
    print(f"\nSIGTERM: driver exited 143 after {stop_s:.1f} s; rerun {rerun_s:.1f} s")


def test_two_runs_on_one_machine_each_get_a_private_ray(
    tmp_path, tokenizer_dir, c4_inputs, ray_tmpdir
):
    reference = make_config(tmp_path, tokenizer_dir, c4_inputs, out="reference")
    run_stage("prepare", reference)
    runs = []
    for name in ("first", "second"):
        config = make_config(tmp_path, tokenizer_dir, c4_inputs, out=name, **{
            "executor": "ray", "ray.num_cpus": 1, "prepare.num_workers": 1})  # fmt: skip
        command = [sys.executable, "-m", "colorfilter", "prepare", str(save_resolved(config))]
        runs.append(
            (
                config,
                subprocess.Popen(
                    command,
                    env=env_for(ray_tmpdir),
                    text=True,
                    stdout=subprocess.PIPE,
                    stderr=subprocess.PIPE,
                ),
            )
        )
    for config, run in runs:
        _out, err = run.communicate(timeout=240)
        assert run.returncode == 0, err[-3000:]
        for split in ("pool", "downstream_train", "downstream_eval"):
            ours = shard_digests(config.output_path / "tokens" / split)
            assert ours == shard_digests(reference.output_path / "tokens" / split)
    assert (ray_tmpdir / "ray" / "ray_current_cluster").exists()  # stale, and not used
