"""CPU scoring benchmark: tokens/s of the scorer along every path, as JSON on stdout.

For each model (random weights, saved and loaded like real checkpoints), each in a fresh child
process so that its peak memory is its own:
  bare   our TorchPairScorer.score over in-memory batches in one process: the limit here
  plain  the obvious batched way: model(ids).logits (full fp32 [B, L, V]) + cross_entropy
  naive  model(ids, labels=ids).loss one sequence at a time, for both models
  shard  score_token_shard over token shards on disk (reader thread + atomic writes), in-process
  ray    the full `colorfilter score` CLI path on a prepared run directory (Ray actor pool)
  peak   not a scorer: fp32 GEMM (2048^3, torch.mm) GFLOP/s with the same threads, the ceiling
Tokens are sequence tokens through both models (a pair-token/s; double it for model-token/s).
Each mode also reports `gflops` (forward FLOPs of both models per token, 2N + 4 n_layer seq d,
times tokens/s) and, where `peak` ran, `of_peak`: how close a path is to what the cores can do.

  python scripts/bench_score.py                       # tiny and llama-135m, all modes (~6 min)
  python scripts/bench_score.py --models tiny --modes bare,naive --seconds 10
  python scripts/bench_score.py --run-dir outputs/demo --config configs/demo.yaml --modes ray
"""

from __future__ import annotations

import argparse
import json
import os
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import numpy as np

MODELS = {  # name -> how to build it (presets where they fit, SmolLM2-135M's shape otherwise)
    "tiny": {"preset": "tiny", "vocab": 4096},
    "llama-135m": {
        "llama": dict(
            hidden_size=576,
            num_hidden_layers=30,
            num_attention_heads=9,
            num_key_value_heads=3,
            intermediate_size=1536,
            vocab_size=49152,
            tie_word_embeddings=True,
        ),  # fmt: skip
    },
    "olmo-150m": {"preset": "olmo-150m", "vocab": 50280},
}
MODES = ("peak", "bare", "plain", "naive", "shard", "ray")


def build_pair(name: str, root: Path, seq_len: int) -> tuple[Path, Path]:
    """Save a random prior and conditional of the named shape under root."""
    import torch
    from transformers import LlamaConfig, LlamaForCausalLM

    spec = MODELS[name]
    dirs = []
    for role, seed in (("prior", 0), ("conditional", 1)):
        torch.manual_seed(seed)
        if "preset" in spec:
            from colorfilter.models.presets import build_model

            model = build_model(spec["preset"], spec["vocab"], seq_len, seed=seed)
        else:
            model = LlamaForCausalLM(LlamaConfig(max_position_embeddings=seq_len, **spec["llama"]))
        model.save_pretrained(root / role)
        dirs.append(root / role)
    return dirs[0], dirs[1]


def vocab_size(model_dir: Path) -> int:
    return json.loads((model_dir / "config.json").read_text())["vocab_size"]


def random_batches(vocab: int, batch_size: int, seq_len: int, count: int) -> list[np.ndarray]:
    rng = np.random.default_rng(0)
    return [rng.integers(1, vocab, (batch_size, seq_len)) for _ in range(count)]


def timed_loop(step, batches: list, seconds: float) -> dict:
    """Run step(batch) (after one warm-up) until `seconds` pass; tokens/s over full batches."""
    step(batches[0])
    tokens, start, i = 0, time.perf_counter(), 0
    while time.perf_counter() - start < seconds:
        tokens += step(batches[i % len(batches)])
        i += 1
    elapsed = time.perf_counter() - start
    return {"tokens": tokens, "seconds": round(elapsed, 2), "tokens_per_s": round(tokens / elapsed)}


def run_bare(args, prior_dir: Path, cond_dir: Path) -> dict:
    from colorfilter.scoring.config import ScoreConfig
    from colorfilter.scoring.torch_backend import TorchPairScorer

    cfg = ScoreConfig(batch_size=args.batch_size, torch_threads=args.threads)
    scorer = TorchPairScorer(prior_dir, cond_dir, cfg, device="cpu")
    batches = random_batches(vocab_size(prior_dir), args.batch_size, args.seq_len, 4)
    n_tokens = np.full(args.batch_size, args.seq_len)

    def step(ids):
        scorer.score(ids, n_tokens)
        return ids.size

    return {**timed_loop(step, batches, args.seconds), "logits_block": scorer.block_tokens}


def run_peak(args, prior_dir: Path, cond_dir: Path) -> dict:
    """fp32 GEMM throughput: the most any fp32 scorer could reach on these cores."""
    import torch

    size = 2048
    a, b = torch.randn(size, size), torch.randn(size, size)
    torch.mm(a, b)
    count, start = 0, time.perf_counter()
    while time.perf_counter() - start < min(args.seconds, 5.0):
        torch.mm(a, b)
        count += 1
    elapsed = time.perf_counter() - start
    return {"gemm": f"{size}^3 fp32", "gflops": round(2 * size**3 * count / elapsed / 1e9, 1)}


def forward_flops_per_token(model_dir: Path, seq_len: int) -> float:
    """Forward FLOPs of one model per token: a third of the project's training count (as
    bench_score_gpu.py), i.e. 2 x matmul weights (LM head included) + 4 n_layer d seq_len."""
    from transformers import AutoConfig

    from colorfilter.models.presets import train_flops_per_token

    return train_flops_per_token(AutoConfig.from_pretrained(model_dir), seq_len) / 3.0


def load_models(prior_dir: Path, cond_dir: Path) -> list:
    from colorfilter.scoring.torch_backend import load_causal_lm

    return [load_causal_lm(d, "float32", "cpu") for d in (prior_dir, cond_dir)]


def run_plain(args, prior_dir: Path, cond_dir: Path) -> dict:
    import torch
    import torch.nn.functional as F

    models = load_models(prior_dir, cond_dir)
    batches = random_batches(vocab_size(prior_dir), args.batch_size, args.seq_len, 4)

    def step(ids):
        ids = torch.from_numpy(ids)
        with torch.inference_mode():
            for model in models:
                logits = model(input_ids=ids).logits.float()
                F.cross_entropy(
                    logits[:, :-1].flatten(0, 1), ids[:, 1:].flatten(), reduction="none"
                )
        return ids.numel()

    return timed_loop(step, batches, args.seconds)


def run_naive(args, prior_dir: Path, cond_dir: Path) -> dict:
    import torch

    models = load_models(prior_dir, cond_dir)
    sequences = random_batches(vocab_size(prior_dir), 1, args.seq_len, 8)

    def step(ids):
        ids = torch.from_numpy(ids)
        with torch.inference_mode():
            for model in models:
                model(input_ids=ids, labels=ids).loss.item()
        return ids.numel()

    return timed_loop(step, sequences, args.seconds)


def write_token_shards(directory: Path, vocab: int, seq_len: int, rows: int, shards: int) -> None:
    """Token shards in the shared format, full-length random chunks."""
    import pyarrow as pa

    from colorfilter.io.atomic import write_parquet_atomic
    from colorfilter.io.token_shards import TOKEN_SCHEMA, make_seq_ids

    rng = np.random.default_rng(1)
    per_shard = -(-rows // shards)
    for index in range(shards):
        ids = rng.integers(1, vocab, (per_shard, seq_len), dtype=np.int32)
        offsets = np.arange(0, ids.size + 1, seq_len, dtype=np.int32)
        columns = {
            "seq_id": make_seq_ids(index, 0, per_shard),
            "input_ids": pa.ListArray.from_arrays(pa.array(offsets), pa.array(ids.ravel())),
            "n_tokens": pa.array(np.full(per_shard, seq_len, dtype=np.int32)),
            "source_file": [f"pool-{index}.jsonl"] * per_shard,
            "doc_first": pa.array(np.arange(per_shard)),
            "doc_last": pa.array(np.arange(per_shard)),
            "doc_offset": pa.array(np.zeros(per_shard, dtype=np.int32)),
            "source": ["web"] * per_shard,
        }
        table = pa.table(columns, schema=TOKEN_SCHEMA)
        write_parquet_atomic(directory / f"pool-{index:05d}.parquet", table)


def pool_rows(args, rate: float | None) -> int:
    """Enough chunks for ~args.seconds of scoring at `rate` tokens/s (a guess if unknown)."""
    tokens = (rate or 2000.0) * args.seconds
    return max(4 * args.batch_size, int(tokens // args.seq_len))


def run_shard(args, prior_dir: Path, cond_dir: Path) -> dict:
    from colorfilter.io.token_shards import list_shards
    from colorfilter.scoring.config import ScoreConfig
    from colorfilter.scoring.shard import ShardScoring, score_shards
    from colorfilter.scoring.torch_backend import TorchPairScorer

    work = Path(tempfile.mkdtemp(prefix="bench-shard-", dir=args.work))
    write_token_shards(
        work / "tokens", vocab_size(prior_dir), args.seq_len, pool_rows(args, args.rate), 4
    )
    cfg = ScoreConfig(batch_size=args.batch_size, torch_threads=args.threads)
    scorer = TorchPairScorer(prior_dir, cond_dir, cfg, device="cpu")
    scorer.score(*random_batches(vocab_size(prior_dir), 2, args.seq_len, 1), [args.seq_len] * 2)
    start = time.perf_counter()
    how = ShardScoring(args.batch_size, args.seq_len, pad_id=0)
    stats = score_shards(list_shards(work / "tokens"), work / "scores", scorer, how)
    elapsed = time.perf_counter() - start
    tokens = sum(s["tokens"] for s in stats)
    waited = sum(s["input_wait_s"] for s in stats)
    return {
        "tokens": tokens,
        "seconds": round(elapsed, 2),
        "tokens_per_s": round(tokens / elapsed),
        "input_wait_s": round(waited, 3),
    }


def run_child(args) -> dict:
    """One measurement in this (fresh) process."""
    import torch

    torch.set_num_threads(args.threads)
    prior_dir, cond_dir = Path(args.model_dir) / "prior", Path(args.model_dir) / "conditional"
    runner = {
        "peak": run_peak,
        "bare": run_bare,
        "plain": run_plain,
        "naive": run_naive,
        "shard": run_shard,
    }
    result = runner[args.one](args, prior_dir, cond_dir)
    from colorfilter.scoring.base import host_peak_rss_mb

    return {**result, "peak_host_rss_mb": round(host_peak_rss_mb())}


def spawn(mode: str, args, model_dir: Path, rate: float | None) -> dict:
    """Run one mode in a child process; parse the JSON line it prints last."""
    command = [
        sys.executable, __file__, "--one", mode, "--model-dir", str(model_dir),
        "--seq-len", str(args.seq_len), "--batch-size", str(args.batch_size),
        "--seconds", str(args.seconds), "--threads", str(args.threads), "--work", args.work,
        "--rate", str(rate or 0),
    ]  # fmt: skip
    done = subprocess.run(command, capture_output=True, text=True)
    if done.returncode != 0:
        return {"error": done.stderr.strip().splitlines()[-1:]}
    return json.loads(done.stdout.strip().splitlines()[-1])


def make_run_dir(run_dir: Path, model_dir: Path, args, rate: float | None) -> None:
    """A prepared run directory: pool token shards, a tokenizer (eos = pad = 0), both models."""
    from tokenizers import Tokenizer, models
    from transformers import PreTrainedTokenizerFast

    vocab = vocab_size(model_dir / "prior")
    rows = pool_rows(args, rate)
    shards = 4 * args.ray_workers
    write_token_shards(run_dir / "tokens" / "pool", vocab, args.seq_len, rows, shards)
    words = {"<|endoftext|>": 0, "[UNK]": 1}
    tokenizer = Tokenizer(models.WordLevel(words, unk_token="[UNK]"))
    eos = "<|endoftext|>"
    wrapped = PreTrainedTokenizerFast(tokenizer_object=tokenizer, eos_token=eos, pad_token=eos)
    wrapped.save_pretrained(run_dir / "tokenizer")
    (run_dir / "models").mkdir(parents=True, exist_ok=True)
    for role in ("prior", "conditional"):
        (run_dir / "models" / role).symlink_to((model_dir / role).resolve())


def run_ray(args, model_dir: Path | None, rate: float | None) -> dict:
    """`colorfilter score` end to end; rates from its stats.json (per-shard unix times)."""
    if args.run_dir:
        run_dir, config = Path(args.run_dir), Path(args.config)
    else:
        run_dir = Path(tempfile.mkdtemp(prefix="bench-run-", dir=args.work))
        make_run_dir(run_dir, model_dir, args, rate)
        config = run_dir / "bench.yaml"
        config.write_text(f"device: cpu\ntokenizer: {run_dir / 'tokenizer'}\n")
    overrides = [
        f"output_dir={run_dir}", "executor=ray", f"ray.num_cpus={args.threads}",
        "ray.object_store_memory_mb=300", f"score.batch_size={args.batch_size}",
        f"score.num_workers={args.ray_workers}", f"score.worker_cpus={args.ray_worker_cpus}",
    ]  # fmt: skip
    if not args.run_dir:
        overrides.append(f"seq_len={args.seq_len}")
    command = [sys.executable, "-m", "colorfilter", "score", str(config), "--overwrite"]
    for item in overrides:
        command += ["--set", item]
    start = time.perf_counter()
    done = subprocess.run(command, capture_output=True, text=True)
    wall = time.perf_counter() - start
    if done.returncode != 0:
        return {"error": done.stderr.strip().splitlines()[-3:]}
    stats = json.loads((run_dir / "scores" / "pool" / "stats.json").read_text())
    shards = stats["per_shard"]
    tokens = sum(s["tokens"] for s in shards)
    window = max(s["finished_at"] for s in shards) - min(s["started_at"] for s in shards)
    return {
        "tokens": tokens,
        "tokens_per_s": round(tokens / window),  # steady state: first shard start to last end
        "stage_tokens_per_s": stats.get("tokens_per_s"),  # includes actor start + model load
        "cli_wall_s": round(wall, 1),  # includes interpreter, Ray start, actor start
        "seconds": round(window, 2),
        "workers": args.ray_workers,
        "worker_cpus": args.ray_worker_cpus,
        "peak_host_rss_mb_per_actor": max(s.get("peak_host_rss_mb", 0) for s in shards),
        "input_wait_s": round(sum(s.get("input_wait_s", 0) for s in shards), 3),
    }


def bench_model(name: str, args) -> dict:
    """All requested modes for one model shape."""
    model_dir = Path(tempfile.mkdtemp(prefix=f"bench-{name}-", dir=args.work))
    build_pair(name, model_dir, args.seq_len)
    results: dict = {}
    rate = None
    for mode in args.modes:
        if mode == "ray":
            results[mode] = run_ray(args, model_dir, rate)
        else:
            results[mode] = spawn(mode, args, model_dir, rate)
        if mode == "bare":
            rate = results[mode].get("tokens_per_s")
        print(f"[bench] {name} {mode}: {results[mode]}", file=sys.stderr, flush=True)
    pair_flops = 2 * forward_flops_per_token(model_dir / "prior", args.seq_len)
    peak = results.get("peak", {}).get("gflops")
    for result in results.values():
        if "tokens_per_s" in result:
            result["gflops"] = round(result["tokens_per_s"] * pair_flops / 1e9, 1)
            if peak:
                result["of_peak"] = round(result["gflops"] / peak, 3)
    bare = results.get("bare", {}).get("tokens_per_s")
    for mode, result in results.items():
        if bare and "tokens_per_s" in result and mode != "bare":
            result["vs_bare"] = round(result["tokens_per_s"] / bare, 3)
    naive = results.get("naive", {}).get("tokens_per_s")
    if naive:
        for mode in ("bare", "ray", "shard"):
            if "tokens_per_s" in results.get(mode, {}):
                results[mode]["vs_naive"] = round(results[mode]["tokens_per_s"] / naive, 2)
    return results


def parse_args(argv: list[str] | None = None) -> argparse.Namespace:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--models", default="tiny,llama-135m", help=f"from {sorted(MODELS)}")
    parser.add_argument("--modes", default=",".join(MODES), help=f"from {MODES}")
    parser.add_argument("--seq-len", type=int, default=256)
    parser.add_argument("--batch-size", type=int, default=16)
    parser.add_argument("--seconds", type=float, default=25.0, help="per measurement")
    parser.add_argument("--threads", type=int, default=os.cpu_count() or 1)
    parser.add_argument("--ray-workers", type=int, default=2)
    parser.add_argument("--ray-worker-cpus", type=float, default=1.0)
    parser.add_argument("--run-dir", help="a prepared run directory for the ray mode")
    parser.add_argument("--config", help="its config (with --run-dir)")
    parser.add_argument("--work", default=None, help="scratch directory (default: a temp dir)")
    parser.add_argument("--one", choices=[m for m in MODES if m != "ray"], help=argparse.SUPPRESS)
    parser.add_argument("--model-dir", help=argparse.SUPPRESS)
    parser.add_argument("--rate", type=float, default=0.0, help=argparse.SUPPRESS)
    args = parser.parse_args(argv)
    if args.run_dir and not args.config:
        parser.error("--run-dir needs --config")
    args.modes = [m for m in args.modes.split(",") if m]
    return args


def main() -> None:
    args = parse_args()
    if args.one:
        print(json.dumps(run_child(args)))
        return
    with tempfile.TemporaryDirectory(prefix="bench-score-") as scratch:
        args.work = args.work or scratch
        started = time.time()
        report = {
            "machine": {"cpus": os.cpu_count(), "threads": args.threads},
            "seq_len": args.seq_len,
            "batch_size": args.batch_size,
            "seconds_per_measurement": args.seconds,
            "load_average_at_start": os.getloadavg()[0],
            "models": {m: bench_model(m, args) for m in args.models.split(",") if m},
        }
        report["total_seconds"] = round(time.time() - started)
    print(json.dumps(report, indent=2))


if __name__ == "__main__":
    main()
