"""The benchmark scripts run end to end (tiny settings) and print the JSON they promise."""

from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path

SCRIPTS = Path(__file__).resolve().parents[2] / "scripts"


def run_script(name: str, *args: str) -> dict:
    done = subprocess.run(
        [sys.executable, str(SCRIPTS / name), *args], capture_output=True, text=True, timeout=300
    )
    assert done.returncode == 0, done.stderr[-2000:]
    return json.loads(done.stdout)


def test_gpu_benchmark_smoke_runs_on_cpu():
    report = run_script("bench_score_gpu.py", "--device", "cpu", "--tiny")
    assert [r["batch_size"] for r in report["eager"]] == [2, 4]
    assert all(r["tokens_per_s"] > 0 for r in report["eager"])
    shard = report["shard_path"]
    assert shard["rows"] == 3 * shard["batch_size"] and report["memory"]["peak_host_rss_mb"] > 0
    assert report["naive"]["tokens_per_s"] > 0 and report["best_vs_naive"] > 0


def test_cpu_benchmark_measures_the_bare_loop(tmp_path):
    report = run_script(
        "bench_score.py", "--models", "tiny", "--modes", "bare", "--seconds", "0.2",
        "--seq-len", "32", "--batch-size", "4", "--work", str(tmp_path),
    )  # fmt: skip
    tiny = report["models"]["tiny"]
    assert tiny["bare"]["tokens_per_s"] > 0 and tiny["bare"]["peak_host_rss_mb"] > 0
