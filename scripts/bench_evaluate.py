"""Evaluation-run benchmark: target-model training throughput with 1, 2, ... side-by-side workers,
as JSON on stdout.

It trains the same set of target runs (`evaluate.preset`, random chunks of the pool, one seed per
run) once per `--workers` value, through the evaluate stage's own `run_all` (executor tasks on
the config's executor), into a temporary directory, so a run directory's eval/ is never touched.
Needs a run directory that `colorfilter run` has prepared and scored (the evaluate stage's
inputs).

  python scripts/bench_evaluate.py --config configs/demo.yaml              # ~3.5 min on 2 cores
  python scripts/bench_evaluate.py --config configs/demo.yaml --workers 1,2,4 --runs 8
"""

from __future__ import annotations

import argparse
import json
import tempfile
import time
from dataclasses import replace
from pathlib import Path


def bench(config_path: str, workers: int, runs: int, tokens: int, threads: int) -> dict:
    """Train `runs` random-data target runs of `tokens` tokens with `workers` at a time."""
    import numpy as np

    from colorfilter.config import load_config
    from colorfilter.evaluation.plan import RunSpec, plan_indexed_run, round_to_batches
    from colorfilter.io.token_shards import list_shards
    from colorfilter.models.data import read_chunk_index
    from colorfilter.pipeline.evaluate import target_setup
    from colorfilter.pipeline.evaluate_runs import run_all

    config = load_config(config_path)
    cfg = replace(config.evaluate, workers=workers, torch_threads=threads, progress=False)
    index = read_chunk_index(list_shards(config.output_path / "tokens" / "pool"))
    pool = index.take(np.flatnonzero(index.n_tokens == config.seq_len))  # full-length chunks
    setup = target_setup(config)
    n_chunks = round_to_batches(tokens // config.seq_len, cfg.batch_size)
    planned = [
        plan_indexed_run(RunSpec("random", 1.0, n_chunks, seed), pool, cfg, setup)
        for seed in range(runs)
    ]
    with tempfile.TemporaryDirectory() as runs_dir:
        started = time.perf_counter()
        records = run_all(
            planned, cfg, setup, Path(runs_dir), True, config.executor, config.ray
        )  # Ray actors, `workers` at a time (executor: local trains them one after another)
        wall = time.perf_counter() - started
    trained = sum(r["train_tokens"] for r in records.values())
    return {
        "workers": workers,
        "torch_threads_per_run": sorted({r["torch_threads"] for r in records.values()}),
        "runs": runs,
        "train_tokens_per_run": n_chunks * config.seq_len,
        "wall_s": round(wall, 1),
        "train_tokens_per_s": round(trained / wall),
        "mean_run_train_s": round(float(np.mean([r["train_time_s"] for r in records.values()])), 1),
        "heldout_loss": [round(r["heldout_loss"], 4) for r in records.values()],
    }


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--config", default="configs/demo.yaml")
    parser.add_argument("--workers", default="1,2", help="comma-separated worker counts")
    parser.add_argument("--runs", type=int, default=4, help="target runs per worker count")
    parser.add_argument("--tokens", type=int, default=196608, help="training tokens per run")
    parser.add_argument(
        "--threads", type=int, default=0, help="torch threads per run (0: the CPUs shared)"
    )
    args = parser.parse_args()
    results = [
        bench(args.config, int(w), args.runs, args.tokens, args.threads)
        for w in args.workers.split(",")
    ]
    base = results[0]["train_tokens_per_s"]
    for result in results:
        result["speedup"] = round(result["train_tokens_per_s"] / base, 2)
    print(json.dumps({"config": args.config, "results": results}, indent=2))


if __name__ == "__main__":
    main()
