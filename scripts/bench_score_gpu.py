"""GPU scoring benchmark: the olmo-150m prior/conditional pair at seq 512, tokens/s and MFU.

Random weights (speed does not depend on them). Eager (--precision, default bf16) over a
batch-size sweep, then torch.compile at the best size, then the same scorer over token shards
on disk (reader thread, pinned memory) to show that I/O hides behind compute. Prints JSON;
finishes in ~2-3 minutes.

  python scripts/bench_score_gpu.py                       # on a CUDA machine
  python scripts/bench_score_gpu.py --device cpu --tiny   # smoke test (seconds)

MFU = achieved FLOP/s / peak bf16 FLOP/s, with forward FLOPs per token per model =
2 x matmul params + 4 x layers x d_model x seq_len (attention, PaLM's convention), x 2 models.
"""

from __future__ import annotations

import argparse
import json
import sys
import tempfile
import time
from pathlib import Path

import numpy as np

PEAK_BF16_TFLOPS = {"H200": 989.0, "H100": 989.0, "A100": 312.0, "L40S": 362.0, "A10": 125.0}


def build_pair(root: Path, tiny: bool, seq_len: int, intermediate_size: int | None) -> list[Path]:
    from colorfilter.models.presets import build_model

    preset, vocab = ("micro", 512) if tiny else ("olmo-150m", 50280)
    extra = {"intermediate_size": intermediate_size} if intermediate_size else {}
    dirs = []
    for role, seed in (("prior", 0), ("conditional", 1)):
        build_model(preset, vocab, seq_len, seed=seed, **extra).save_pretrained(root / role)
        dirs.append(root / role)
    return dirs


def forward_flops_per_token(model_dir: Path, seq_len: int) -> float:
    from transformers import AutoConfig

    from colorfilter.models.presets import train_flops_per_token

    return train_flops_per_token(AutoConfig.from_pretrained(model_dir), seq_len) / 3.0


def peak_flops(device: str, override_tflops: float | None) -> float | None:
    if override_tflops:
        return override_tflops * 1e12
    if not device.startswith("cuda"):
        return None
    import torch

    name = torch.cuda.get_device_name(device)
    for key, tflops in PEAK_BF16_TFLOPS.items():
        if key in name:
            return tflops * 1e12
    return None


def synchronize(device: str) -> None:
    import torch

    if device.startswith("cuda"):
        torch.cuda.synchronize(device)


def measure(scorer, batch_size: int, seq_len: int, vocab: int, seconds: float, device: str):
    """Tokens/s of scorer.score on in-memory full batches (first call: warm-up / compile)."""
    rng = np.random.default_rng(0)
    batches = [rng.integers(1, vocab, (batch_size, seq_len)) for _ in range(2)]
    n_tokens = np.full(batch_size, seq_len)
    tick = time.perf_counter()
    scorer.score(batches[0], n_tokens)
    synchronize(device)
    warmup = time.perf_counter() - tick
    tokens, start, i = 0, time.perf_counter(), 0
    while time.perf_counter() - start < seconds or i < 2:
        scorer.score(batches[i % 2], n_tokens)  # returns host arrays: synchronised per batch
        tokens, i = tokens + batch_size * seq_len, i + 1
    elapsed = time.perf_counter() - start
    return {
        "batch_size": batch_size,
        "tokens_per_s": round(tokens / elapsed),
        "batches": i,
        "warmup_s": round(warmup, 1),
    }


def with_mfu(result: dict, flops_per_token: float, peak: float | None) -> dict:
    achieved = result["tokens_per_s"] * 2 * flops_per_token  # two models
    result["tflops"] = round(achieved / 1e12, 2)
    result["mfu"] = round(achieved / peak, 3) if peak else None
    return result


def naive_loop(model_dirs: list[Path], args, vocab: int) -> dict:
    """The issue's baseline: model(ids, labels=ids).loss one sequence at a time, both models."""
    import torch
    from transformers import AutoModelForCausalLM

    from colorfilter.scoring.config import PRECISIONS

    weights, autocast = PRECISIONS[args.precision]
    dtype = getattr(torch, weights)
    amp = None if autocast == "none" else getattr(torch, autocast)
    models = [
        AutoModelForCausalLM.from_pretrained(d, dtype=dtype).to(args.device).eval()
        for d in model_dirs
    ]
    ids = torch.randint(1, vocab, (8, 1, args.seq_len), device=args.device)
    tokens, i, start = 0, 0, time.perf_counter()
    autocast_ctx = torch.autocast(args.device.split(":")[0], dtype=amp, enabled=amp is not None)
    with torch.inference_mode(), autocast_ctx:
        while time.perf_counter() - start < args.seconds or i < 2:
            for model in models:
                model(ids[i % 8], labels=ids[i % 8]).loss.item()  # .item(): per-sequence sync
            tokens, i = tokens + args.seq_len, i + 1
    elapsed = time.perf_counter() - start
    return {"tokens_per_s": round(tokens / elapsed), "sequences": i}


def shard_path(scorer, args, vocab: int, batch_size: int, work: Path) -> dict:
    """The production per-shard loop on a token shard written here."""
    import pyarrow as pa

    from colorfilter.io.atomic import write_parquet_atomic
    from colorfilter.scoring.shard import ScoreTask, ShardScoring, score_token_shard

    rows = batch_size * args.shard_batches
    ids = np.random.default_rng(1).integers(1, vocab, (rows, args.seq_len), dtype=np.int32)
    offsets = pa.array(np.arange(0, ids.size + 1, args.seq_len, dtype=np.int32))
    table = pa.table(
        {
            "seq_id": pa.array(np.arange(rows, dtype=np.uint64)),
            "input_ids": pa.ListArray.from_arrays(offsets, pa.array(ids.ravel())),
        }
    )
    write_parquet_atomic(work / "tokens.parquet", table)
    task = ScoreTask(work / "tokens.parquet", work / "scores.parquet")
    stats = score_token_shard(task, scorer, ShardScoring(batch_size, args.seq_len, 0, 2))
    keep = ("rows", "tokens", "seconds", "tokens_per_s", "input_wait_s")
    return {k: stats[k] for k in keep} | {"batch_size": batch_size}


def run(args: argparse.Namespace) -> dict:
    import torch

    from colorfilter.scoring.config import ScoreConfig
    from colorfilter.scoring.torch_backend import TorchPairScorer

    device = args.device
    work = Path(tempfile.mkdtemp(prefix="bench-gpu-"))
    started = time.perf_counter()
    prior_dir, cond_dir = build_pair(work, args.tiny, args.seq_len, args.intermediate_size)
    vocab = json.loads((prior_dir / "config.json").read_text())["vocab_size"]
    flops = forward_flops_per_token(prior_dir, args.seq_len)
    peak = peak_flops(device, args.peak_tflops)
    report = {
        "device": torch.cuda.get_device_name(device) if device.startswith("cuda") else "cpu",
        "model": "micro" if args.tiny else "olmo-150m",
        "seq_len": args.seq_len,
        "precision": args.precision,
        "forward_gflops_per_token_per_model": round(flops / 1e9, 3),
        "peak_tflops": peak / 1e12 if peak else None,
        "build_s": round(time.perf_counter() - started, 1),
    }
    sizes = [int(b) for b in args.batch_sizes.split(",")]
    eager_cfg = ScoreConfig(precision=args.precision, batch_size=max(sizes))
    scorer = TorchPairScorer(prior_dir, cond_dir, eager_cfg, device=device)
    report["eager"] = [
        with_mfu(measure(scorer, b, args.seq_len, vocab, args.seconds, device), flops, peak)
        for b in sizes
    ]
    best = max(report["eager"], key=lambda r: r["tokens_per_s"])["batch_size"]
    if args.compile:
        cfg = ScoreConfig(precision=args.precision, batch_size=best, compile=True)
        scorer = TorchPairScorer(prior_dir, cond_dir, cfg, device=device)
        result = measure(scorer, best, args.seq_len, vocab, args.seconds, device)
        report["compiled"] = with_mfu(result, flops, peak)
    report["shard_path"] = with_mfu(shard_path(scorer, args, vocab, best, work), flops, peak)
    report["memory"] = scorer.memory_stats()
    report["logits_block_tokens"] = scorer.block_tokens
    del scorer
    report["naive"] = with_mfu(naive_loop([prior_dir, cond_dir], args, vocab), flops, peak)
    fastest = max(
        [*report["eager"], report.get("compiled", {"tokens_per_s": 0})],
        key=lambda r: r["tokens_per_s"],
    )
    report["best_vs_naive"] = round(fastest["tokens_per_s"] / report["naive"]["tokens_per_s"], 2)
    report["total_s"] = round(time.perf_counter() - started, 1)
    return report


def parse_args(argv: list[str] | None = None) -> argparse.Namespace:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--device", default="cuda")
    parser.add_argument("--tiny", action="store_true", help="micro model, short run (smoke test)")
    parser.add_argument("--seq-len", type=int, default=512)
    parser.add_argument("--batch-sizes", default="64,128,256")
    parser.add_argument("--seconds", type=float, default=10.0, help="per measurement")
    parser.add_argument("--precision", default="bf16", help="score.precision, e.g. bf16")
    parser.add_argument("--compile", action=argparse.BooleanOptionalAction, default=True)
    parser.add_argument("--shard-batches", type=int, default=40, help="batches in the shard run")
    parser.add_argument("--intermediate-size", type=int, default=None, help="e.g. 4096")
    parser.add_argument("--peak-tflops", type=float, default=None, help="for MFU if unknown GPU")
    args = parser.parse_args(argv)
    if args.tiny:  # seconds, not minutes, on a laptop CPU
        args.seq_len, args.batch_sizes, args.seconds = 64, "2,4", min(args.seconds, 0.5)
        args.shard_batches, args.compile = 3, args.compile and args.device != "cpu"
    return args


def main() -> None:
    args = parse_args()
    if args.device.startswith("cuda"):
        import torch

        if not torch.cuda.is_available():
            sys.exit("no CUDA device visible; use --device cpu --tiny for a smoke test")
    print(json.dumps(run(args), indent=2))


if __name__ == "__main__":
    main()
