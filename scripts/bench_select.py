#!/usr/bin/env python3
"""Benchmark the streaming exact top-k on synthetic score shards; print JSON.

For each size: write score shards (the scoring stage's schema, float32 losses quantised to
1/4096 so scores tie heavily) one shard at a time, then run the selection in a fresh child
process per tau (and once for all taus sharing passes), so each peak RSS is the selection's own.
At sizes <= --verify-max-rows a further child checks the result against numpy's full lexsort and
reports what that full sort costs in time and memory.

    python scripts/bench_select.py --sizes 1e7,1e8 --shards 200 --tmp /tmp/bench
"""

from __future__ import annotations

import argparse
import json
import resource
import shutil
import subprocess
import sys
import time
from pathlib import Path

import numpy as np
import pyarrow as pa
import pyarrow.parquet as pq

QUANTUM = 1.0 / 4096


def peak_rss_mib() -> float:
    """This process's peak resident set size (Linux reports ru_maxrss in KiB)."""
    return resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024


def current_rss_mib() -> float:
    with open("/proc/self/statm") as handle:
        return int(handle.read().split()[1]) * resource.getpagesize() / 2**20


def generate(directory: Path, n_rows: int, n_shards: int, seed: int = 0) -> list[Path]:
    """Write shards one by one (bounded memory); seq_ids are unique but shuffled in each shard."""
    directory.mkdir(parents=True, exist_ok=True)
    rng = np.random.default_rng(seed)
    bounds = np.linspace(0, n_rows, n_shards + 1).astype(np.int64)
    paths = []
    for shard, (start, stop) in enumerate(zip(bounds[:-1], bounds[1:])):
        rows = int(stop - start)
        prior_loss = np.round(rng.normal(3.5, 0.35, rows) / QUANTUM) * QUANTUM
        cond_loss = prior_loss - np.round(rng.normal(0.05, 0.12, rows) / QUANTUM) * QUANTUM
        table = pa.table({
            "seq_id": (start + rng.permutation(rows)).astype(np.uint64),
            "prior_loss": prior_loss.astype(np.float32),
            "cond_loss": cond_loss.astype(np.float32),
            "score": (prior_loss - cond_loss).astype(np.float32),
            "n_tokens": np.full(rows, 512, np.int32),
        })
        paths.append(directory / f"scores-{shard:05d}.parquet")
        pq.write_table(table, paths[-1])
    return paths


def child_select(directory: Path, taus: list[float], max_buffer_rows: int, save: bool) -> dict:
    """Run in a fresh process: stream the top-k for `taus` and report time and memory."""
    from colorfilter.selection import ParquetSource, n_selected, topk

    paths = sorted(directory.glob("*.parquet"))
    baseline = current_rss_mib()
    source = ParquetSource(paths)
    start = time.perf_counter()
    ks = [n_selected(source.num_rows(), tau) for tau in taus]
    result = topk(source, ks, key="score", direction="max", max_buffer_rows=max_buffer_rows)
    seconds = time.perf_counter() - start
    if save:
        for tau, k in zip(taus, ks):
            np.save(directory / f"selected-tau{tau:g}.npy", result.seq_ids[k])
    return {
        "taus": taus, "k": ks, "total_seconds": round(seconds, 3),
        "passes": [{"seconds": round(p.seconds, 3), "modes": list(p.modes),
                    "buffered_rows": p.buffered_rows} for p in result.passes],
        "baseline_rss_mib": round(baseline, 1), "peak_rss_mib": round(peak_rss_mib(), 1),
        "answer_mib": round(sum(ks) * 8 / 2**20, 1),
    }


def child_verify(directory: Path, taus: list[float]) -> dict:
    """Run in a fresh process: full lexsort of all rows; compare with the saved selections."""
    from colorfilter.selection import n_selected

    start = time.perf_counter()
    table = pq.read_table(sorted(directory.glob("*.parquet")), columns=["seq_id", "score"])
    seq_id, score = table["seq_id"].to_numpy(), table["score"].to_numpy()
    del table
    order = np.lexsort((seq_id, -score.astype(np.float64)))
    seconds = time.perf_counter() - start
    equal = {}
    for tau in taus:
        expected = np.sort(seq_id[order[: n_selected(len(seq_id), tau)]])
        equal[f"{tau:g}"] = bool(np.array_equal(
            expected, np.load(directory / f"selected-tau{tau:g}.npy")))
    return {"equal": equal, "full_sort_seconds": round(seconds, 3),
            "full_sort_peak_rss_mib": round(peak_rss_mib(), 1)}


def run_child(*args: str) -> dict:
    command = [sys.executable, __file__, "--child", *args]
    done = subprocess.run(command, check=True, capture_output=True, text=True)
    return json.loads(done.stdout.strip().splitlines()[-1])


def bench_size(n_rows: int, args: argparse.Namespace) -> dict:
    directory = Path(args.tmp) / f"scores-{n_rows}"
    start = time.perf_counter()
    paths = generate(directory, n_rows, args.shards)
    report = {
        "rows": n_rows, "shards": len(paths),
        "parquet_mib": round(sum(p.stat().st_size for p in paths) / 2**20, 1),
        "generate_seconds": round(time.perf_counter() - start, 1),
        "max_buffer_rows": args.max_buffer_rows, "runs": [],
    }
    verify = n_rows <= args.verify_max_rows
    buffer = str(args.max_buffer_rows)
    for tau in args.taus:
        report["runs"].append(run_child("select", str(directory), f"{tau:g}", buffer, str(verify)))
    all_taus = ",".join(f"{tau:g}" for tau in args.taus)
    report["runs"].append(run_child("select", str(directory), all_taus, buffer, "False"))
    if verify:
        report["verify"] = run_child("verify", str(directory), all_taus)
    if not args.keep:
        shutil.rmtree(directory)
    return report


def parse_args(argv: list[str]) -> argparse.Namespace:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--sizes", default="1e7,1e8", help="comma-separated row counts")
    parser.add_argument("--shards", type=int, default=200)
    parser.add_argument("--tmp", default="/tmp/colorfilter-bench-select")
    parser.add_argument("--taus", default="16,64")
    parser.add_argument("--max-buffer-rows", type=int, default=None,
                        help="boundary rows buffered (default: the library's)")
    parser.add_argument("--verify-max-rows", type=float, default=1e7)
    parser.add_argument("--keep", action="store_true", help="keep the generated shards")
    args = parser.parse_args(argv)
    args.sizes = [int(float(size)) for size in args.sizes.split(",")]
    args.taus = [float(tau) for tau in args.taus.split(",")]
    if args.max_buffer_rows is None:
        from colorfilter.selection.topk import DEFAULT_MAX_BUFFER_ROWS

        args.max_buffer_rows = DEFAULT_MAX_BUFFER_ROWS
    return args


def main(argv: list[str]) -> None:
    if argv and argv[0] == "--child":
        kind, directory, taus = argv[1], Path(argv[2]), [float(t) for t in argv[3].split(",")]
        if kind == "select":
            print(json.dumps(child_select(directory, taus, int(argv[4]), argv[5] == "True")))
        else:
            print(json.dumps(child_verify(directory, taus)))
        return
    args = parse_args(argv)
    for n_rows in args.sizes:
        print(json.dumps(bench_size(n_rows, args)), flush=True)


if __name__ == "__main__":
    main(sys.argv[1:])
