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


def test_cpu_benchmark_measures_the_bare_loop_against_the_gemm_peak(tmp_path):
    report = run_script(
        "bench_score.py", "--models", "tiny", "--modes", "peak,bare", "--seconds", "0.2",
        "--seq-len", "32", "--batch-size", "4", "--work", str(tmp_path),
    )  # fmt: skip
    tiny = report["models"]["tiny"]
    assert tiny["bare"]["tokens_per_s"] > 0 and tiny["bare"]["peak_host_rss_mb"] > 0
    assert tiny["peak"]["gflops"] > 0 and 0 < tiny["bare"]["of_peak"] < 1.5


def test_flops_per_token_counts_every_matmul_weight(tmp_path):
    """2 x (weights of every nn.Linear, lm head included) + the attention term."""
    import importlib.util

    import torch

    from colorfilter.models.presets import build_model

    spec = importlib.util.spec_from_file_location("bench_score", SCRIPTS / "bench_score.py")
    bench = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(bench)
    model = build_model("tiny", 512, 64, seed=0)
    model.save_pretrained(tmp_path)
    linear = sum(m.weight.numel() for m in model.modules() if isinstance(m, torch.nn.Linear))
    config = model.config
    attention = 4 * config.num_hidden_layers * 64 * config.hidden_size
    assert bench.forward_flops_per_token(tmp_path, 64) == 2 * linear + attention


def test_precision_benchmark_compares_each_precision_with_fp32(model_pair, tmp_path):
    from tests.scoring.conftest import random_chunks, write_token_shard

    # chunks cut shorter than the models' positions (24): rows are padded to the longest chunk
    # read, as a run's seq_len, not to max_position_embeddings (8192 for SmolLM2-135M)
    chunks = [chunk[:16] for chunk in random_chunks(64, seed=3)]
    write_token_shard(tmp_path / "tokens" / "00000.parquet", chunks)
    report = run_script(
        "bench_precision.py", "--prior", str(model_pair[0]), "--conditional", str(model_pair[1]),
        "--tokens", str(tmp_path / "tokens"), "--pad-id", "0",
        "--precisions", "fp32,bf16", "--tau", "4", "--batch-size", "16", "--threads", "1",
    )  # fmt: skip
    assert report["rows"] == 64 and report["seq_len"] == 16 and report["fp32"]["score_std"] > 0
    bf16 = report["vs_fp32"]["bf16"]
    assert bf16["ran"] == {"name": "bf16", "weights": "bfloat16", "autocast": "none",
                           "device": "cpu"}  # fmt: skip
    assert 0 < bf16["mean_abs_score_diff"] <= bf16["max_abs_score_diff"] < 0.5
    assert 0 <= bf16["top_1/4_overlap"] <= 1 and bf16["tokens_per_s"] > 0


def test_gpu_check_stops_at_once_without_a_gpu():
    import os

    import pytest
    import torch

    if torch.cuda.is_available():
        pytest.skip("a GPU is visible: the check would run for minutes")
    done = subprocess.run(
        ["bash", str(SCRIPTS / "gpu_check.sh")], capture_output=True, text=True, timeout=120,
        env={**os.environ, "PYTHON": sys.executable},
    )  # fmt: skip
    assert done.returncode == 2
    assert json.loads(done.stdout) == {
        "ok": False, "error": "no usable CUDA GPU: AssertionError: torch sees no CUDA device"
    }  # fmt: skip
