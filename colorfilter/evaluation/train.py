"""One evaluation run: a fresh target model trained on a fixed token budget, then held-out loss.

It reuses the models package's loop (masked loss, AdamW, cosine annealed exactly to the run's last
step), so a target run differs from an auxiliary-model run only in its data.
"""

from __future__ import annotations

import time
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np

from colorfilter.evaluation.config import EvaluateConfig
from colorfilter.evaluation.multiple_choice import accuracy
from colorfilter.models.config import TrainConfig
from colorfilter.models.data import ChunkIndex, load_rank_batches
from colorfilter.models.losses import evaluate_loss
from colorfilter.models.presets import build_model
from colorfilter.models.runtime import DistContext, resolve_device, set_threads
from colorfilter.models.training import LoopSpec, train_loop


@dataclass(frozen=True)
class TargetSetup:
    """What every run of one evaluation shares: the model's shape and the held-out split."""

    vocab_size: int
    pad_id: int
    eos_id: int | None
    bos_id: int | None
    seq_len: int
    eval_paths: list[Path]
    device: str
    mc_items: tuple = ()  # multiple_choice.McItem, for rank-classification accuracy
    mc_digest: str = ""  # multiple_choice.items_digest of mc_items ("" when there are none)


def train_config(cfg: EvaluateConfig) -> TrainConfig:
    """The models package's TrainConfig for a target run (no checkpoints: runs are short)."""
    return TrainConfig(
        batch_size=cfg.batch_size,
        lr=cfg.lr,
        warmup_steps=cfg.warmup_steps,
        min_lr_ratio=cfg.min_lr_ratio,
        dtype=cfg.dtype,
        checkpoint_every=0,
        eval_batch_size=cfg.eval_batch_size,
        eval_max_chunks=cfg.eval_max_chunks,
        torch_threads=cfg.torch_threads,
        progress=cfg.progress,
    )


def train_and_evaluate(
    index: ChunkIndex,
    order: np.ndarray,
    cfg: EvaluateConfig,
    setup: TargetSetup,
    seed: int,
    name: str,
) -> dict[str, Any]:
    """Train a fresh `cfg.preset` model (init seed `seed`) on `order`; return its numbers."""
    import torch

    started = time.perf_counter()
    set_threads(cfg.torch_threads)
    device = resolve_device(setup.device)
    train_cfg = train_config(cfg)
    steps = len(order) // cfg.batch_size
    model = build_model(
        cfg.preset,
        setup.vocab_size,
        setup.seq_len,
        seed=seed,
        pad_token_id=setup.pad_id,
        eos_token_id=setup.eos_id,
        bos_token_id=setup.bos_id,
    )
    batches = load_rank_batches(index, order, cfg.batch_size, steps)
    # checkpoint_every=0: the loop never writes this path, and it never exists to resume from.
    spec = LoopSpec(
        steps, setup.seq_len, setup.pad_id, Path("/nonexistent") / name, "eval", desc=name
    )
    state = train_loop(model, batches, train_cfg, spec, device, DistContext())
    heldout = evaluate_loss(
        model,
        setup.eval_paths,
        setup.seq_len,
        setup.pad_id,
        cfg.eval_batch_size,
        device,
        cfg.dtype,
        cfg.eval_max_chunks,
    )
    last = state.history[-10:]
    mc = {}
    if setup.mc_items:
        mc = accuracy(model, setup.mc_items, setup.pad_id, cfg.eval_batch_size, device)
    return {
        "train_tokens": int(state.tokens_seen),
        "steps": int(state.step),
        "heldout_loss": float(heldout),
        **mc,
        "final_train_loss": float(np.mean([r["train_loss"] for r in last])) if last else None,
        "train_time_s": state.elapsed_s,
        "wall_time_s": time.perf_counter() - started,
        "device": str(device),
        # Thread counts change float rounding, and a short run at a high lr can amplify that.
        "torch_threads": torch.get_num_threads(),
    }
