"""A training plan without training: micro-batch, memory, steps, tokens and an estimated time.

Used by `colorfilter plan` (both stages of a config, for N GPUs of some memory), by each stage at
start-up (its micro-batch), and to warn when `device: auto` fell back to a CPU that would take
hours. Time estimates are FLOP counts over an assumed rate: on GPU `mfu` x the bf16 peak (default
40% of 989 TFLOP/s, an H100/H200); on CPU CPU_TRAIN_GFLOPS_PER_THREAD per torch thread, measured
here (the demo's tiny prior: 8.45 MFLOP/token x 8.2k tokens/s on 2 threads = 35 GFLOP/s each).
"""

from __future__ import annotations

import logging
from dataclasses import asdict, dataclass
from typing import Any

from colorfilter.models.config import TrainConfig
from colorfilter.models.memory import (
    DEFAULT_GPU_MEMORY_GB,
    MicroBatchPlan,
    detect_device_gb,
    model_shape,
    plan_micro_batch,
)
from colorfilter.models.presets import train_flops_per_token

log = logging.getLogger(__name__)

CPU_TRAIN_GFLOPS_PER_THREAD = 35.0
GPU_PEAK_TFLOPS = 989.0  # H100 / H200 dense bf16
GPU_MFU = 0.4
SLOW_CPU_RUN_S = 3600.0  # `device: auto` on a CPU warns above this


@dataclass(frozen=True)
class StagePlan:
    """What one stage would do on `world_size` devices of one kind."""

    stage: str
    device: str  # cuda | cpu
    world_size: int
    device_memory_gb: float
    micro: MicroBatchPlan
    steps: int | None  # None: the data decides and is not prepared yet
    tokens: int | None
    flops_per_token: float
    estimated_s: float | None

    def as_dict(self) -> dict[str, Any]:
        data = asdict(self)
        data["micro"]["fits"] = self.micro.fits
        return data


def estimated_seconds(
    tokens: int, flops_per_token: float, device: str, world_size: int, threads: int = 1
) -> float:
    """Seconds to train on `tokens` at the assumed rates (see the module docstring)."""
    if device == "cuda":
        rate = world_size * GPU_PEAK_TFLOPS * 1e12 * GPU_MFU
    else:
        rate = world_size * max(1, threads) * CPU_TRAIN_GFLOPS_PER_THREAD * 1e9
    return tokens * flops_per_token / rate


@dataclass(frozen=True)
class Hardware:
    """What a stage would train on: `world_size` devices of one kind."""

    device: str  # cuda | cpu
    world_size: int = 1
    device_gb: float | None = None  # memory per device; None: the config's, else 80 GB
    threads: int = 1  # torch threads per rank on CPU


def plan_stage(
    stage: str,
    model_config: Any,
    cfg: TrainConfig,
    seq_len: int,
    n_sequences: int | None,
    hardware: Hardware,
) -> StagePlan:
    """Plan `stage` over `n_sequences` training sequences (None: unknown yet)."""
    device, world_size = hardware.device, hardware.world_size
    amp = cfg.dtype in ("bfloat16", "bf16") or (cfg.dtype == "auto" and device == "cuda")
    gb = hardware.device_gb or cfg.gpu_memory_gb or DEFAULT_GPU_MEMORY_GB
    micro = plan_micro_batch(
        model_shape(model_config), seq_len, cfg.batch_size, world_size, amp, device, gb,
        cfg.micro_batch_size,
    )  # fmt: skip
    steps = None if n_sequences is None else n_sequences // cfg.batch_size
    if steps is not None and cfg.max_steps > 0:
        steps = min(steps, cfg.max_steps)
    tokens = None if steps is None else steps * cfg.batch_size * seq_len
    flops = train_flops_per_token(model_config, seq_len)
    seconds = None
    if tokens is not None:
        seconds = estimated_seconds(tokens, flops, device, world_size, hardware.threads)
    return StagePlan(stage, device, world_size, gb, micro, steps, tokens, flops, seconds)


def runtime_plan(
    stage: str, model: Any, cfg: TrainConfig, seq_len: int, steps: int, device: Any, world_size: int
) -> StagePlan:
    """The plan a starting stage trains with, on its real device (memory detected)."""
    import torch

    detected = detect_device_gb(device)
    gb = cfg.gpu_memory_gb or detected or DEFAULT_GPU_MEMORY_GB
    threads = torch.get_num_threads()
    n_sequences = steps * cfg.batch_size
    hardware = Hardware(device.type, world_size, gb, threads)
    return plan_stage(stage, model.config, cfg, seq_len, n_sequences, hardware)


def warn_if_slow_on_cpu(plan: StagePlan, device_setting: str) -> bool:
    """Warn loudly when `device: auto` found no GPU and the run would take hours here."""
    if device_setting != "auto" or plan.device != "cpu" or plan.estimated_s is None:
        return False
    if plan.estimated_s < SLOW_CPU_RUN_S:
        return False
    log.warning(
        "\n%s\n%s: no GPU found (device: auto), so it trains on the CPU: %d steps, %.3g tokens, "
        "about %s here (estimated at %.0f GFLOP/s per thread). Run it on a GPU node, or set "
        "device: cpu to silence this.\n%s",
        "!" * 78, plan.stage, plan.steps, plan.tokens, format_duration(plan.estimated_s),
        CPU_TRAIN_GFLOPS_PER_THREAD, "!" * 78,
    )  # fmt: skip
    return True


def format_duration(seconds: float | None) -> str:
    if seconds is None:
        return "unknown"
    if seconds < 3600:
        return f"{seconds / 60:.1f} min"
    if seconds < 2 * 86400:
        return f"{seconds / 3600:.1f} h"
    return f"{seconds / 86400:.1f} days"


def format_plan(plan: StagePlan) -> str:
    """A few aligned lines for humans."""
    micro = plan.micro
    fits = "fits" if micro.fits else "DOES NOT FIT"
    steps = "unknown (run prepare first)" if plan.steps is None else f"{plan.steps:,}"
    tokens = "unknown" if plan.tokens is None else f"{plan.tokens:,}"
    where = f"{plan.world_size} x {plan.device}" + (
        f" ({plan.device_memory_gb:g} GB each)" if plan.device == "cuda" else ""
    )
    return "\n".join(
        [
            f"{plan.stage}: on {where}",
            f"  micro-batch   {micro.micro_batch} x {micro.accumulation} accumulation steps "
            f"= {micro.local_batch} sequences per rank per step ({micro.source})",
            f"  peak memory   {micro.peak_gb:.1f} GB per rank of {micro.budget_gb:.1f} usable "
            f"({fits})",
            f"  steps         {steps}",
            f"  tokens        {tokens}",
            f"  estimated     {format_duration(plan.estimated_s)} "
            f"({plan.flops_per_token / 1e9:.2f} GFLOP/token)",
        ]
    )
