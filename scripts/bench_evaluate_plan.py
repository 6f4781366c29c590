#!/usr/bin/env python3
"""Benchmark evaluate's planning (everything before the first target model trains): driver peak
RSS and time at 10^7 and 10^8 pool rows; print JSON.

For each size it builds a synthetic run directory with scripts/bench_scale.py's builder (token
shards as prepare writes them with a `source` label, 1 in 50 "books"; score shards; the bundled
tokenizer), adds a held-out split and the stage markers (RunLayout.finish_stage, so `require`
passes), then runs in child processes, each measured by its own ru_maxrss:
  - `plan`: colorfilter.pipeline.evaluate.plan_evaluation (selections of every method and tau,
    the label oracle, budgets, every run's chunks and order, the report's pool numbers);
  - `select_plan`: select's own planning of the same methods and taus
    (pipeline.select.plan_selections, all at once, as `colorfilter select` does): the shared
    floor of time and memory;
  - `imports`: the interpreter with colorfilter's planning modules imported (the RSS floor);
  - `old_plan` (with --old-src DIR, a checkout of an earlier colorfilter, e.g. `git archive
    f0d6855 colorfilter | tar -x -C DIR`): that version's planning, for a before/after ratio
    (it holds ~36 bytes per pool row and more: only use it at the smaller sizes).
Target runs train on a fixed budget (--train-chunks), as a real evaluation sets
evaluate.train_tokens: each planned run holds its own chunks (~32 bytes each), not the pool's.

    python scripts/bench_evaluate_plan.py --rows 1e6                  # ~1 min on 2 cores
    python scripts/bench_evaluate_plan.py --rows 1e7 1e8 --tmp /tmp/bench-eval   # ~40 min
"""

from __future__ import annotations

import argparse
import json
import os
import resource
import shutil
import subprocess
import sys
import time
from pathlib import Path

REPO = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(REPO / "scripts"))  # bench_scale's builder
if sys.argv[1:2] != ["--child"]:  # a child imports the colorfilter of its PYTHONPATH
    sys.path.insert(0, str(REPO))

METHODS = ["color", "random", "conditional_only", "prior_only", "label_oracle"]


def build(root: Path, args: argparse.Namespace, n_rows: int) -> Path:
    """bench_scale's run directory plus a held-out split, stage markers and an evaluate config."""
    import pyarrow.parquet as pq
    from bench_scale import build_run

    from colorfilter.io import storage
    from colorfilter.layout import RunLayout

    config_path = build_run(root, n_rows, args.seq_len, args.rows_per_shard, args.taus)
    first = sorted((root / "tokens" / "pool").glob("*.parquet"))[0]
    heldout = root / "tokens" / "downstream_eval"
    heldout.mkdir(parents=True)
    pq.write_table(pq.read_table(first).slice(0, 64), heldout / "00000-00000.parquet")
    run = RunLayout.at(str(root))
    tokenizer_files = [info.location for info in storage.find(run.tokenizer)]
    run.finish_stage("prepare", tokenizer_files,
                     {"tokenizer_sha256": storage.folder_sha256(run.tokenizer)})  # fmt: skip
    storage.write_json(run.score_stats, {"rows": n_rows})
    run.finish_stage("score", [run.score_stats], {})
    config = json.loads(config_path.read_text())
    config["executor"] = "local"
    config["evaluate"] = {
        "methods": METHODS,
        "taus": args.taus,
        "preset": "micro",
        "target_source": ["books"],
        "train_tokens": args.train_chunks * args.seq_len,
        "random_multiples": [1, 2, 4, 8],
        "batch_size": 16,
    }
    config_path.write_text(json.dumps(config))
    return config_path


def child(kind: str, config_path: str) -> dict:
    """One measurement, in this (child) process."""
    from colorfilter.config import load_config
    from colorfilter.pipeline import evaluate  # the planning modules, imported
    from colorfilter.pipeline.select import plan_selections

    config = load_config(config_path)
    start = time.perf_counter()
    out: dict = {}
    if kind == "plan":
        plan = evaluate.plan_evaluation(config)
        out = {"runs": len(plan.runs), "planned_chunks": sum(len(r.index) for r in plan.runs)}
    elif kind == "select_plan":
        methods = [m for m in config.evaluate.methods if m != "label_oracle"]
        config.selection.methods, config.selection.tau = methods, config.evaluate.taus
        out = {"selections": len(plan_selections(config))}
    elif kind == "old_plan":
        out = old_plan(config)
    seconds = time.perf_counter() - start
    peak = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024  # KiB on Linux
    return {"seconds": round(seconds, 2), "peak_rss_mib": round(peak, 1), **out}


def old_plan(config) -> dict:
    """An earlier version's evaluate planning (up to its list of planned runs)."""
    from colorfilter.evaluation.plan import Pool
    from colorfilter.pipeline import evaluate as old
    from colorfilter.pipeline.evaluate_runs import plan_run

    cfg = config.evaluate
    token_paths, source = old._checked_inputs(config, cfg, old.RunLayout.of(config))
    pool = Pool.read(token_paths)
    pool_scores = old._pool_scores(pool, old._read_scores(source, pool))
    selections = old._selections(config, cfg, source)
    if "label_oracle" in cfg.methods:
        selections.update(old._oracle_selections(cfg, pool, pool_scores["score"]))
    budgets = old._budgets(cfg, pool, selections, config.seq_len)
    method_specs, curve_specs = old._plan_runs(cfg, pool, selections, budgets, config.seq_len)
    setup = old.target_setup(config)
    runs = [
        plan_run(spec, selections[(spec.method, spec.tau)], pool, cfg, setup)
        for spec in dict.fromkeys(method_specs + curve_specs)
    ]
    return {"runs": len(runs), "planned_chunks": sum(len(r.index) for r in runs)}


def measure(kind: str, config_path: Path, source: Path = REPO) -> dict:
    env = {**os.environ, "PYTHONPATH": str(source), "RAY_USAGE_STATS_ENABLED": "0"}
    command = [sys.executable, __file__, "--child", kind, str(config_path)]
    done = subprocess.run(command, env=env, cwd=source, capture_output=True, text=True)
    if done.returncode:
        raise RuntimeError(f"{kind} failed:\n{done.stderr[-3000:]}")
    return json.loads(done.stdout.strip().splitlines()[-1])


def bench(n_rows: int, args: argparse.Namespace) -> dict:
    root = Path(args.tmp) / f"run-{n_rows}"
    shutil.rmtree(root, ignore_errors=True)
    root.mkdir(parents=True)
    start = time.perf_counter()
    config_path = build(root, args, n_rows)
    result: dict = {
        "rows": n_rows,
        "token_shards": len(list((root / "tokens" / "pool").glob("*.parquet"))),
        "build_s": round(time.perf_counter() - start, 1),
        "imports": measure("imports", config_path),
        "plan": measure("plan", config_path),
        "select_plan": measure("select_plan", config_path),
    }
    if args.old_src and n_rows <= args.old_max_rows:
        result["old_plan"] = measure("old_plan", config_path, Path(args.old_src))
    plan = result["plan"]
    plan["bytes_per_pool_row"] = round(plan["peak_rss_mib"] * 2**20 / n_rows, 2)
    plan["time_vs_select_plan"] = round(plan["seconds"] / result["select_plan"]["seconds"], 2)
    if "old_plan" in result:
        plan["rss_vs_old"] = round(plan["peak_rss_mib"] / result["old_plan"]["peak_rss_mib"], 3)
        plan["time_vs_old"] = round(plan["seconds"] / result["old_plan"]["seconds"], 3)
    if not args.keep:
        shutil.rmtree(root, ignore_errors=True)
        config_path.unlink()
    print(json.dumps(result), file=sys.stderr, flush=True)  # progress, one size at a time
    return result


def parse_args(argv: list[str]) -> argparse.Namespace:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--rows", type=float, nargs="+", default=[1e7, 1e8])
    parser.add_argument("--seq-len", type=int, default=8, help="short chunks: the planning "
                        "reads no token, so only the build time depends on it")  # fmt: skip
    parser.add_argument("--rows-per-shard", type=int, default=65536)
    parser.add_argument("--taus", type=float, nargs="+", default=[4, 8, 16])
    parser.add_argument("--train-chunks", type=int, default=65536, help="chunks per method run")
    parser.add_argument("--tmp", default="/tmp/colorfilter-bench-evaluate-plan")
    parser.add_argument("--old-src", default="", help="an earlier checkout to compare with")
    parser.add_argument("--old-max-rows", type=float, default=1e7)
    parser.add_argument("--keep", action="store_true", help="keep the run directories")
    return parser.parse_args(argv)


def main(argv: list[str]) -> None:
    if argv[:1] == ["--child"]:
        print(json.dumps(child(argv[1], argv[2])))
        return
    args = parse_args(argv)
    results = [bench(int(rows), args) for rows in args.rows]
    report = {
        "machine": {"cores": os.cpu_count(), "note": "shared with other jobs while measured"},
        "settings": {
            "methods": METHODS,
            "taus": args.taus,
            "seq_len": args.seq_len,
            "rows_per_shard": args.rows_per_shard,
            "train_chunks": args.train_chunks,
        },
        "results": results,
        "target": {"plan_peak_rss_mib_max_at_1e8_rows": 2048},
    }
    print(json.dumps(report, indent=2))


if __name__ == "__main__":
    main(sys.argv[1:])
