"""Cascade benchmark (JSON): what the distilled prefilter keeps of CoLoR's selection, and its cost.

On a run directory whose pool is fully scored by the LM pair (the demo after `colorfilter run
configs/demo.yaml`), for each sample fraction the real `distill` stage runs in a scratch copy of
the run (the LM pair scores the sample, the cheap scorer is trained and scores the pool). Then,
for each keep ratio and tau, from the exact scores of the full run:
- the share of pool chunks and tokens the LM pair scores (sample + candidates),
- the measured recall of the exact top 1/tau (the share of it among the LM-scored chunks),
- the recall the cascade would estimate from its held-out sample (at the threshold its own
  selection would draw: the k-th best exact score among the LM-scored chunks) with its 95%
  interval, and whether the measured recall lies inside;
plus the cheap scorer's throughput (features + prediction, tokens per CPU-second, and the whole
task) and training time. With --score-timing, the real score stage runs twice in scratch copies,
exactly and as a cascade (keep ratio 3, tau 16, 1% sample), and their wall times are compared.

  python scripts/bench_cascade.py --run-dir outputs/demo --work /tmp/bench-cascade \
      --score-timing > bench_cascade.json        # ~15 min on 2 cores
  python scripts/bench_cascade.py --synthetic-train 20000000   # training time and memory at C4
                                                               # scale (random tokens, 50k vocab)

Everything the grid reports is measured on the same data the cheap scorer's recipe was chosen
on (the demo); the recipe itself (features, model, penalties) is not tuned per cell.
"""

from __future__ import annotations

import argparse
import json
import math
import resource
import shutil
import sys
import time
from pathlib import Path

import numpy as np

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))

from colorfilter.config import load_config  # noqa: E402
from colorfilter.distill.fidelity import recall_estimate  # noqa: E402
from colorfilter.distill.sample import SampleSpec  # noqa: E402
from colorfilter.io.token_shards import list_shards  # noqa: E402
from colorfilter.pipeline.stages import run_stage  # noqa: E402

COPIED = ("config.yaml", "tokenizer", "tokens", "models/prior", "models/conditional")


def scratch_copy(run_dir: Path, target: Path) -> Path:
    """The run's tokens, tokenizer and models under `target` (no scores, no selections)."""
    if target.exists():
        shutil.rmtree(target)
    for name in COPIED:
        source, dest = run_dir / name, target / name
        dest.parent.mkdir(parents=True, exist_ok=True)
        if source.is_dir():
            shutil.copytree(source, dest, ignore=shutil.ignore_patterns("checkpoint"))
        else:
            shutil.copy2(source, dest)
    return target


def config_for(run_dir: Path, out: Path, **overrides):
    settings = {"output_dir": str(out), "cascade.enabled": "true", **overrides}
    return load_config(run_dir / "config.yaml", [f"{k}={v}" for k, v in settings.items()])


def read_columns(folder: Path, columns: list[str]) -> dict[str, np.ndarray]:
    import pyarrow.parquet as pq

    table = pq.read_table(list_shards(folder), columns=columns).sort_by("seq_id")
    return {name: table.column(name).to_numpy() for name in columns}


def top_k(seq_id: np.ndarray, key: np.ndarray, k: int) -> np.ndarray:
    """Rows of the k largest keys, ties by smaller seq_id (as colorfilter's top-k)."""
    return np.lexsort((seq_id, -key))[:k]


def grid_for_fraction(args, run_dir: Path, exact: dict, fraction: float) -> tuple[list, dict]:
    work = scratch_copy(run_dir, Path(args.work) / f"sample-{fraction:g}")
    config = config_for(run_dir, work, **{"cascade.sample_fraction": fraction,
                                          "cascade.min_tau": min(args.taus)})  # fmt: skip
    started = time.perf_counter()
    stats = run_stage("distill", config, overwrite=True)
    distill_s = time.perf_counter() - started
    cheap = read_columns(work / "scores" / "cheap", ["seq_id", "cheap_score", "n_tokens"])
    assert np.array_equal(cheap["seq_id"], exact["seq_id"]), "cheap and exact rows differ"
    holdout = read_columns(work / "models" / "cheap", ["seq_id", "score", "cheap_score"])
    seq_id, n = exact["seq_id"], exact["seq_id"].size
    sample = SampleSpec.of(config).in_sample(seq_id)
    cheap_order = np.lexsort((seq_id, -cheap["cheap_score"].astype(np.float64)))
    held_rows = np.searchsorted(seq_id, holdout["seq_id"])
    tokens = cheap["n_tokens"].astype(np.int64)
    cells = []
    for tau in args.taus:
        k = max(1, math.floor(n / tau))
        top = np.zeros(n, bool)
        top[top_k(seq_id, exact["score"], k)] = True
        for keep in args.keep:
            candidate = np.zeros(n, bool)
            candidate[cheap_order[: math.ceil(keep * n / tau)]] = True
            scored = sample | candidate
            threshold = float(np.sort(exact["score"][scored])[::-1][k - 1])
            estimate = recall_estimate(holdout["score"].astype(np.float64),
                                       candidate[held_rows], threshold, float(sample.mean()))
            measured = float((top & scored).sum() / k)
            low, high = estimate["ci95"]
            cells.append({
                "sample_fraction": fraction, "keep_ratio": keep, "tau": tau,
                "lm_share_chunks": round(float(scored.mean()), 4),
                "lm_share_tokens": round(float(tokens[scored].sum() / tokens.sum()), 4),
                "recall_measured": round(measured, 4),
                "recall_estimated": estimate["estimate"], "ci95": estimate["ci95"],
                "held_out_top_chunks": estimate["held_out_top_chunks"],
                "inside_ci": bool(low <= measured <= high),
            })  # fmt: skip
    model = stats["cheap_model"]
    facts = {
        "sample_fraction": fraction,
        "train_chunks": model["fidelity"]["model"]["train_chunks"],
        "train_seconds": model["seconds"],
        "alpha": model["fidelity"]["model"]["alpha"],
        "held_out_spearman": model["fidelity"].get("spearman"),
        "cheap_tokens_per_cpu_s": stats["cheap_scores"]["tokens_per_cpu_s"],
        "distill_seconds": round(distill_s, 1),
    }
    return cells, facts


def whole_task_rate(args, run_dir: Path) -> dict:
    """The cheap scorer as a task does it (read the shard, features, predict, write), one core."""
    from colorfilter.distill.cheap import CheapTask, load_cheap_model, score_cheap_shard
    from colorfilter.io.location import Location

    work = Path(args.work) / f"sample-{args.fractions[0]:g}"
    model = load_cheap_model(Location.parse(str(work / "models" / "cheap")))
    shards = list_shards(run_dir / "tokens" / "pool")
    out = Path(args.work) / "cheap-rate"
    out.mkdir(parents=True, exist_ok=True)
    tokens, start = 0, time.perf_counter()
    for shard in shards:
        task = CheapTask(Location.parse(str(shard)), Location.parse(str(out / shard.name)))
        tokens += score_cheap_shard(task, model)["tokens"]
    seconds = time.perf_counter() - start
    return {"tokens": tokens, "seconds": round(seconds, 3),
            "tokens_per_s_one_core": round(tokens / seconds)}  # fmt: skip


def score_timing(args, run_dir: Path) -> dict:
    """The score stage's wall time: exact, and as a cascade (keep ratio 3, tau 16, 1% sample)."""
    exact_dir = scratch_copy(run_dir, Path(args.work) / "score-exact")
    exact = load_config(run_dir / "config.yaml", [f"output_dir={exact_dir}"])
    start = time.perf_counter()
    run_stage("score", exact, overwrite=True)
    exact_s = time.perf_counter() - start
    cascade_dir = scratch_copy(run_dir, Path(args.work) / "score-cascade")
    cascade = config_for(run_dir, cascade_dir, **{"cascade.sample_fraction": 0.01,
                                                  "cascade.keep_ratio": 3, "selection.tau": "[16]"})
    start = time.perf_counter()
    distill = run_stage("distill", cascade, overwrite=True)
    distill_s = time.perf_counter() - start
    start = time.perf_counter()
    scored = run_stage("score", cascade)
    cascade_s = time.perf_counter() - start
    return {
        "exact_score_s": round(exact_s, 1),
        "cascade_score_s": round(cascade_s, 1),
        "cascade_score_over_exact": round(cascade_s / exact_s, 3),
        "cascade_distill_s": round(distill_s, 1),
        "cascade_distill_plus_score_over_exact": round((distill_s + cascade_s) / exact_s, 3),
        "lm_share_chunks": scored["cascade"]["lm_share_chunks"],
        "distill_sample_tokens": distill["sample"]["tokens_scored_now"],
    }


def synthetic_training(positions: int, seed: int = 0) -> dict:
    """Fit time and peak memory of the cheap scorer on `positions` random training positions
    (512-token chunks from a 50k vocabulary, deltas from a random per-token table)."""
    from colorfilter.distill.features import Chunks, FeatureSpec, log_ratio, ngram_counts
    from colorfilter.distill.model import TrainingSet, fit

    rng = np.random.default_rng(seed)
    rows = max(4, positions // 511)
    offsets = np.arange(rows + 1, dtype=np.int64) * 512
    chunks = Chunks(rng.integers(0, 50_000, offsets[-1]), offsets)
    truth = rng.normal(0, 1, 50_000)
    position = np.arange(chunks.values.size) % 512
    deltas = truth[chunks.values[position >= 1]] + rng.normal(0, 0.5, rows * 511)
    scores = deltas.reshape(rows, 511).mean(axis=1)
    train = TrainingSet(np.arange(rows, dtype=np.uint64), chunks, deltas, scores)
    spec = FeatureSpec((1, 2), 18)
    priors = log_ratio(ngram_counts(chunks.take(np.arange(min(rows, 64))), spec),
                       ngram_counts(chunks, spec))  # fmt: skip
    before = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss
    start = time.perf_counter()
    model = fit(train, spec, priors, [0.1, 1.0, 10.0, 100.0], seed)
    return {
        "train_positions": int(deltas.size),
        "fit_seconds_with_cv": round(time.perf_counter() - start, 1),
        "peak_rss_mb": round(resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024, 1),
        "rss_before_fit_mb": round(before / 1024, 1),
        "alpha": model.info["alpha"],
    }


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--run-dir", default="outputs/demo")
    parser.add_argument("--work", default="/tmp/bench-cascade")
    parser.add_argument("--fractions", default="0.01,0.02,0.05")
    parser.add_argument("--keep", default="2,3,4")
    parser.add_argument("--taus", default="4,8,16")
    parser.add_argument("--score-timing", action="store_true")
    parser.add_argument("--synthetic-train", type=int, default=0,
                        help="only measure training on this many random positions")
    args = parser.parse_args()
    if args.synthetic_train:
        print(json.dumps(synthetic_training(args.synthetic_train), indent=2))
        return
    args.fractions = [float(f) for f in args.fractions.split(",")]
    args.keep = [float(k) for k in args.keep.split(",")]
    args.taus = [float(t) for t in args.taus.split(",")]
    run_dir = Path(args.run_dir).resolve()
    exact = read_columns(run_dir / "scores" / "pool", ["seq_id", "score"])
    cells, models = [], []
    for fraction in args.fractions:
        fraction_cells, facts = grid_for_fraction(args, run_dir, exact, fraction)
        cells += fraction_cells
        models.append(facts)
    result = {
        "run_dir": str(run_dir),
        "pool_chunks": int(exact["seq_id"].size),
        "cells": cells,
        "calibration": {"cells": len(cells), "inside_ci": sum(c["inside_ci"] for c in cells)},
        "cheap_models": models,
        "cheap_task_one_core": whole_task_rate(args, run_dir),
    }
    if args.score_timing:
        result["score_stage"] = score_timing(args, run_dir)
    print(json.dumps(result, indent=2))


if __name__ == "__main__":
    main()
