"""One-GPU DDP smoke run: the real training step through DDP, then torch.compile (JSON).

A single rank in an NCCL process group, wrapped exactly as `models/training.py wrap_model` does
for multi-rank runs (DDP first, then compile), with gradient accumulation (so `no_sync` runs), on
one fixed batch: the loss must fall. On CPU (`--device cpu`) it uses gloo and no compile.

  python scripts/gpu_ddp_smoke.py                 # on a CUDA machine (~1 min with compile)
  python scripts/gpu_ddp_smoke.py --device cpu    # the same path on CPU (seconds)
"""

from __future__ import annotations

import argparse
import json
import os
import sys
import time

import numpy as np
import pyarrow as pa


def run(args: argparse.Namespace) -> dict:
    import torch
    import torch.distributed as dist

    from colorfilter.models.config import TrainConfig
    from colorfilter.models.data import RankBatches
    from colorfilter.models.presets import build_model
    from colorfilter.models.runtime import DistContext, autocast_dtype
    from colorfilter.models.training import (
        LoopSpec,
        StepContext,
        build_optimizer,
        optimizer_step,
        wrap_model,
    )

    device = torch.device(args.device if args.device != "cuda" else "cuda:0")
    os.environ.setdefault("MASTER_ADDR", "127.0.0.1")
    os.environ.setdefault("MASTER_PORT", "29531")
    backend = "nccl" if device.type == "cuda" else "gloo"
    dist.init_process_group(backend, rank=0, world_size=1)

    class OneRank(DistContext):  # a one-rank group that still takes the data-parallel path
        distributed = True

    context = OneRank(0, 1)
    model = build_model(args.preset, args.vocab, args.seq_len, seed=0).to(device).train()
    cfg = TrainConfig(batch_size=args.batch, micro_batch_size=args.batch // 2, lr=1e-3,
                      compile=device.type == "cuda", warmup_steps=0)  # fmt: skip
    runner = wrap_model(model, cfg, device, context)
    optimizer = build_optimizer(model, cfg, device)
    tokens = np.random.default_rng(0).integers(1, args.vocab, (args.batch, args.seq_len))
    chunks = pa.array(list(tokens.astype(np.int32)), type=pa.list_(pa.int32()))
    order = np.tile(np.arange(args.batch), args.steps)
    lengths = np.full(args.batch, args.seq_len, dtype=np.int32)
    batches = RankBatches(order, lengths, chunks, np.arange(args.batch), args.batch, 0, 1)
    spec = LoopSpec(args.steps, args.seq_len, 0, checkpoint_dir=None, config_hash="smoke")
    ctx = StepContext(cfg, spec, device, context, autocast_dtype("auto", device))
    started, losses = time.perf_counter(), []
    for step in range(args.steps):
        losses.append(optimizer_step(ctx, runner, model, optimizer, batches, step, cfg.lr)[0])
    dist.destroy_process_group()
    return {
        "ok": bool(np.isfinite(losses).all() and losses[-1] < losses[0] - 0.1),
        "wrapped_as": _wrapping(runner),
        "device": str(device),
        "steps": args.steps,
        "accumulation": 2,
        "loss_first": losses[0],
        "loss_last": losses[-1],
        "seconds": round(time.perf_counter() - started, 1),
    }


def _wrapping(runner) -> str:
    """E.g. OptimizedModule(DistributedDataParallel(Olmo2ForCausalLM)): compile outermost."""
    names = []
    while runner is not None:
        names.append(type(runner).__name__)
        runner = getattr(runner, "_orig_mod", None) or getattr(runner, "module", None)
    return "(".join(names) + ")" * (len(names) - 1)


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--device", default="cuda")
    parser.add_argument("--preset", default="tiny")
    parser.add_argument("--vocab", type=int, default=512)
    parser.add_argument("--seq-len", type=int, default=64)
    parser.add_argument("--batch", type=int, default=8)
    parser.add_argument("--steps", type=int, default=12)
    args = parser.parse_args()
    if args.device == "cuda":
        import torch

        if not torch.cuda.is_available():
            print(json.dumps({"ok": False, "error": "no CUDA device visible"}))
            return 2
    report = run(args)
    print(json.dumps(report, indent=2))
    return 0 if report["ok"] else 1


if __name__ == "__main__":
    sys.exit(main())
