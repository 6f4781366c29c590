"""Benchmark the prepare stage (tokenize + chunk + write) on the bundled sample; prints JSON.

Usage: python scripts/bench_prepare.py [--workers 1,2] [--config configs/demo.yaml]
Ray starts once before timing; each run writes to a fresh output directory.
"""

from __future__ import annotations

import argparse
import json
import sys
import tempfile
import time


def run_once(config_path: str, workers: int, out_dir: str) -> dict:
    from colorfilter.config import load_config
    from colorfilter.pipeline.prepare import run_prepare

    config = load_config(
        config_path,
        [f"output_dir={out_dir}", "executor=ray", f"prepare.num_workers={workers}",
         f"prepare.worker_cpus={2 / workers if workers <= 2 else 1}",
         "data.downstream_train=[]", "data.downstream_eval=[]"],
    )
    start = time.perf_counter()
    stats = run_prepare(config)["pool"]
    seconds = time.perf_counter() - start
    return {
        "workers": workers,
        "seconds": round(seconds, 2),
        "documents": stats["documents"],
        "tokens": stats["tokens"],
        "chunks": stats["chunks"],
        "text_mb": round(stats["bytes_text"] / 1e6, 2),
        "mb_per_s": round(stats["bytes_text"] / 1e6 / seconds, 2),
        "tokens_per_s": round(stats["tokens"] / seconds),
    }


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("--config", default="configs/demo.yaml")
    parser.add_argument("--workers", default="1,2")
    args = parser.parse_args()
    from colorfilter.config import RayConfig
    from colorfilter.pipeline.executor import init_ray

    init_ray(RayConfig(num_cpus=2))
    results = []
    for workers in (int(w) for w in args.workers.split(",")):
        with tempfile.TemporaryDirectory() as out_dir:
            run_once(args.config, workers, out_dir + "/warm")  # warm file cache and imports
            results.append(run_once(args.config, workers, out_dir + "/run"))
    json.dump({"benchmark": "prepare", "results": results}, sys.stdout, indent=2)
    print()


if __name__ == "__main__":
    main()
