"""The integration scripts run end to end on a small run and print the JSON they promise."""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

import pytest

SCRIPTS = Path(__file__).resolve().parents[2] / "scripts"


def run_script(name: str, *args: str) -> dict:
    env = {**os.environ, "PYTHONPATH": str(SCRIPTS.parent)}
    done = subprocess.run([sys.executable, str(SCRIPTS / name), *args], capture_output=True,
                          text=True, timeout=300, env=env)  # fmt: skip
    assert done.returncode == 0, done.stderr[-2000:]
    return json.loads(done.stdout)


def test_check_api_scores_finds_no_difference(run_dir):
    report = run_script("check_api_scores.py", "--run-dir", str(run_dir), "--threads", "1")
    assert report["chunks"] > 0 and report["within_tolerance"]
    assert max(report["max_abs_delta"].values()) <= 1e-5


@pytest.mark.slow
def test_integrations_benchmark_reports_every_path(run_dir):
    pytest.importorskip("datatrove")
    report = run_script("bench_integrations.py", "--run-dir", str(run_dir), "--chunks", "64",
                        "--repeats", "1", "--threads", "1")  # fmt: skip
    assert report["chunks"] == 64 and report["documents"] > 0
    assert set(report["ratios_vs_stage_tokens_per_s"]) == {"datatrove", "ray"}
    for runs in report["runs"].values():
        assert runs[0]["tokens"] > 0 and runs[0]["tokens_per_s"] > 0
        assert runs[0]["tokens_per_cpu_s"] > 0
