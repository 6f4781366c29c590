"""Training throughput and MFU of an auxiliary-model preset on one device (default: olmo-150m).

Runs the real optimizer step of `colorfilter.models.training` (masked loss, z-loss, AdamW, grad
clipping, bf16 autocast on GPU) on synthetic tokens and prints one JSON object:

    python scripts/bench_train_gpu.py                      # olmo-150m, seq 512, bf16, ~1-2 min
    python scripts/bench_train_gpu.py --compile            # with torch.compile
    python scripts/bench_train_gpu.py --device cpu --preset micro --steps 2   # a smoke test

The micro-batch is the memory plan's (colorfilter/models/memory.py) unless --micro-batch-size:
`peak_memory_gib` (torch.cuda.max_memory_allocated over the timed steps) checks `planned_peak_gib`.

MFU = flops_per_token * tokens/s / peak, with flops_per_token = 6 * (matmul parameters) +
12 * layers * d_model * seq_len (attention scores, PaLM's convention), and the peak dense bf16
FLOP/s of the GPU from a table by name (override with --peak-tflops).
"""

from __future__ import annotations

import argparse
import json
import sys
import time

import numpy as np
import pyarrow as pa

# Dense bf16 peak FLOP/s by GPU name fragment (first match wins; more specific names first).
PEAK_BF16_FLOPS = (
    ("H100 PCIe", 756e12),
    ("H100", 989e12),
    ("H200", 989e12),
    ("GH200", 989e12),
    ("B200", 2250e12),
    ("A100", 312e12),
    ("L40S", 362e12),
    ("A10G", 70e12),
    ("L4", 121e12),
    ("4090", 165e12),
)


def parse_args(argv: list[str] | None = None) -> argparse.Namespace:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--preset", default="olmo-150m")
    parser.add_argument("--vocab-size", type=int, default=50280, help="GPT-NeoX's, as the paper")
    parser.add_argument("--seq-len", type=int, default=512)
    parser.add_argument("--batch-size", type=int, default=256, help="sequences per step")
    parser.add_argument("--micro-batch-size", type=int, default=0, help="0: the memory plan's")
    parser.add_argument("--steps", type=int, default=20, help="timed steps")
    parser.add_argument("--warmup", type=int, default=3, help="untimed steps first (compile)")
    parser.add_argument("--device", default="auto")
    parser.add_argument("--dtype", default="auto", help="auto, bfloat16 or float32")
    parser.add_argument("--compile", action="store_true")
    parser.add_argument("--z-loss", type=float, default=1e-4)
    parser.add_argument("--max-seconds", type=float, default=150.0, help="stop timing early")
    parser.add_argument("--peak-tflops", type=float, default=0.0, help="override the table")
    return parser.parse_args(argv)


def synthetic_batches(args: argparse.Namespace, total_steps: int, vocab: int):
    """One global batch of random full-length chunks, reused for every step."""
    from colorfilter.models.data import RankBatches

    rng = np.random.default_rng(0)
    tokens = rng.integers(1, vocab, size=(args.batch_size, args.seq_len), dtype=np.int32)
    chunks = pa.array(list(tokens), type=pa.list_(pa.int32()))
    order = np.tile(np.arange(args.batch_size), total_steps)
    n_tokens = np.full(args.batch_size, args.seq_len, dtype=np.int32)
    return RankBatches(order, n_tokens, chunks, np.arange(args.batch_size), args.batch_size, 0, 1)


def peak_flops(device, override_tflops: float) -> tuple[str, float | None]:
    import torch

    if device.type != "cuda":
        return "cpu", override_tflops * 1e12 if override_tflops else None
    name = torch.cuda.get_device_name(device)
    if override_tflops:
        return name, override_tflops * 1e12
    return name, next((flops for key, flops in PEAK_BF16_FLOPS if key in name), None)


def run(args: argparse.Namespace) -> dict:
    import torch

    from colorfilter.models.config import TrainConfig
    from colorfilter.models.plan import runtime_plan
    from colorfilter.models.presets import build_model, count_parameters, train_flops_per_token
    from colorfilter.models.runtime import DistContext, autocast_dtype, resolve_device
    from colorfilter.models.training import (
        LoopSpec,
        StepContext,
        build_optimizer,
        optimizer_step,
        wrap_model,
    )

    device = resolve_device(args.device)
    model = build_model(args.preset, args.vocab_size, args.seq_len, seed=0).to(device).train()
    cfg = TrainConfig(batch_size=args.batch_size, micro_batch_size=args.micro_batch_size,
                      dtype=args.dtype, compile=args.compile, z_loss=args.z_loss)
    dist, amp = DistContext(), autocast_dtype(args.dtype, device)
    optimizer = build_optimizer(model, cfg, device)
    runner = wrap_model(model, cfg, device, dist)
    total_steps = args.warmup + args.steps
    batches = synthetic_batches(args, total_steps, args.vocab_size)
    plan = runtime_plan("bench", model, cfg, args.seq_len, total_steps, device, 1)
    spec = LoopSpec(total_steps, args.seq_len, 0, checkpoint_dir=None, config_hash="bench",
                    micro_batch_size=plan.micro.micro_batch)
    ctx = StepContext(cfg, spec, device, dist, amp)

    def step(index: int) -> float:
        return optimizer_step(ctx, runner, model, optimizer, batches, index, cfg.lr)[0]

    def sync() -> None:
        if device.type == "cuda":
            torch.cuda.synchronize(device)

    losses = [step(i) for i in range(args.warmup)]
    sync()
    if device.type == "cuda":
        torch.cuda.reset_peak_memory_stats(device)
    started, timed = time.perf_counter(), 0
    for index in range(args.warmup, total_steps):
        losses.append(step(index))
        timed += 1
        if time.perf_counter() - started > args.max_seconds:
            break
    sync()
    seconds = time.perf_counter() - started
    tokens_per_s = timed * args.batch_size * args.seq_len / seconds
    flops_per_token = train_flops_per_token(model.config, args.seq_len)
    gpu, peak = peak_flops(device, args.peak_tflops)
    achieved = flops_per_token * tokens_per_s
    return {
        "preset": args.preset,
        "architecture": type(model).__name__,
        "parameters": count_parameters(model),
        "device": gpu,
        "autocast": str(amp).replace("torch.", "") if amp is not None else "float32",
        "compile": args.compile,
        "seq_len": args.seq_len,
        "batch_size": args.batch_size,
        "micro_batch_size": plan.micro.micro_batch,
        "micro_batch_source": plan.micro.source,
        "planned_peak_gib": plan.micro.peak_gb,
        "timed_steps": timed,
        "step_time_s": seconds / max(timed, 1),
        "tokens_per_s": tokens_per_s,
        "flops_per_token": flops_per_token,
        "achieved_tflops": achieved / 1e12,
        "peak_tflops": peak / 1e12 if peak else None,
        "mfu": achieved / peak if peak else None,
        "peak_memory_gib": (torch.cuda.max_memory_allocated(device) / 2**30
                            if device.type == "cuda" else None),
        "loss_first": losses[0],
        "loss_last": losses[-1],
    }


def main(argv: list[str] | None = None) -> int:
    args = parse_args(argv)
    print(json.dumps(run(args), indent=2))
    return 0


if __name__ == "__main__":
    sys.exit(main())
