"""A memory model of training one rank, and the micro-batch plan chosen from it.

Peak bytes on one rank while training with micro-batch b of seq_len L (P parameters, V vocab):

  static        fp32 weights 4P + fp32 grads 4P + AdamW moments 8P (+ DDP's buckets 4P)
  forward fixed under autocast, the bf16 copies of every matmul weight, cached for backward
  per token     activations saved for backward (SAVED_BYTES_PER_TOKEN: linear in d_model, the
                MLP width, heads and layers, plus 4 bytes per vocab entry for the fp32 logits the
                loss keeps), the live bf16 logits (2V under autocast) and the loss backward's
                fp32 logit gradients (LOSS_BACKWARD_BYTES_PER_V x V), all alive at once when
                backward starts

The saved-activation coefficients were read off HF's eager Llama/OLMo-2 modules with SDPA
attention by counting the tensors autograd saves (`saved_tensors_hooks`, CPU, bf16 autocast and
fp32; tests/models/test_memory.py re-measures them on shapes the fit never saw). They are an
upper bound for torch.compile, which fuses and saves less. The loss-backward term and the
headroom (USABLE_FRACTION, CUDA_RESERVED_GB) are modelled, not yet measured on a GPU:
scripts/gpu_check.sh compares the plan with `torch.cuda.max_memory_allocated`.
"""

from __future__ import annotations

import os
from dataclasses import dataclass
from typing import Any

GIB = 1 << 30
# bytes saved per token: {architecture: {autocast?: (per d*layer, per mlp*layer, per head*layer,
# per layer, per d, constant)}}; + 4 * V for the fp32 logits the loss saves.
SAVED_BYTES_PER_TOKEN: dict[str, dict[bool, tuple[float, ...]]] = {
    "olmo2": {True: (50, 8, 4, 16, 10, 20), False: (56, 16, 4, 16, 12, 20)},
    "llama": {True: (34, 8, 4, 8, 10, 20), False: (40, 16, 4, 8, 12, 20)},
}
LOGITS_SAVED_BYTES_PER_V = 4  # the loss's fp32 copy of the logits
LOSS_BACKWARD_BYTES_PER_V = 10  # fp32 grads of logsumexp and gather, then their bf16 cast
USABLE_FRACTION = 0.9  # of a GPU's memory: allocator fragmentation and NCCL buffers
CUDA_RESERVED_GB = 1.5  # CUDA context, cuBLAS/cuDNN workspaces, compile's caches
DEFAULT_GPU_MEMORY_GB = 80.0  # planning without a GPU (H100/H200 class)
HOST_USABLE_FRACTION = 0.5  # on CPU, of the memory the OS says is available


@dataclass(frozen=True)
class ModelShape:
    """The sizes the memory model needs, read from a transformers config."""

    architecture: str  # llama | olmo2 (others are planned as llama)
    hidden: int
    layers: int
    heads: int
    intermediate: int
    vocab: int
    params: int  # all parameters
    matmul_params: int  # weights of nn.Linear layers (cast to bf16 under autocast)


def model_shape(config: Any) -> ModelShape:
    """Shape of the model `config` describes, counted on torch's meta device (no memory)."""
    import torch
    from transformers import AutoModelForCausalLM

    with torch.device("meta"):
        model = AutoModelForCausalLM.from_config(config)
    params = sum(p.numel() for p in model.parameters())
    matmul = sum(m.weight.numel() for m in model.modules() if isinstance(m, torch.nn.Linear))
    return ModelShape(
        architecture="olmo2" if config.model_type == "olmo2" else "llama",
        hidden=config.hidden_size,
        layers=config.num_hidden_layers,
        heads=config.num_attention_heads,
        intermediate=config.intermediate_size,
        vocab=config.vocab_size,
        params=params,
        matmul_params=matmul,
    )


def saved_bytes_per_token(shape: ModelShape, amp: bool) -> float:
    """Activation bytes autograd keeps per token until backward (logits included)."""
    per_dl, per_ml, per_hl, per_l, per_d, const = SAVED_BYTES_PER_TOKEN[shape.architecture][amp]
    layers = shape.layers
    return (
        layers * (per_dl * shape.hidden + per_ml * shape.intermediate + per_hl * shape.heads)
        + layers * per_l
        + per_d * shape.hidden
        + const
        + LOGITS_SAVED_BYTES_PER_V * shape.vocab
    )


def peak_bytes_per_token(shape: ModelShape, amp: bool) -> float:
    """Saved activations plus the loss's live logits and backward transients, per token."""
    live_logits = 2 * shape.vocab if amp else 0
    return saved_bytes_per_token(shape, amp) + live_logits + LOSS_BACKWARD_BYTES_PER_V * shape.vocab


def static_bytes(shape: ModelShape, distributed: bool) -> int:
    """Weights, grads and AdamW state (fp32), plus DDP's gradient buckets when data-parallel."""
    return (4 + 4 + 8 + (4 if distributed else 0)) * shape.params


def forward_fixed_bytes(shape: ModelShape, amp: bool) -> int:
    """Autocast's bf16 weight copies, kept from forward until backward."""
    return 2 * shape.matmul_params if amp else 0


def peak_bytes(shape: ModelShape, seq_len: int, micro: int, amp: bool, distributed: bool) -> float:
    """Estimated peak memory of one rank training micro-batches of `micro` sequences."""
    activations = micro * seq_len * peak_bytes_per_token(shape, amp)
    return static_bytes(shape, distributed) + forward_fixed_bytes(shape, amp) + activations


def usable_bytes(device_gb: float, device_type: str = "cuda") -> float:
    """What a plan may fill of a device with `device_gb` GB (GiB) of memory."""
    if device_type == "cuda":
        return (device_gb * USABLE_FRACTION - CUDA_RESERVED_GB) * GIB
    return device_gb * HOST_USABLE_FRACTION * GIB


def divisors(n: int) -> list[int]:
    return [d for d in range(1, n + 1) if n % d == 0]


def choose_micro_batch(
    shape: ModelShape, seq_len: int, local_batch: int, amp: bool, distributed: bool, budget: float
) -> int:
    """The largest divisor of the local batch whose peak fits `budget` bytes (at least 1)."""
    fitting = [
        d
        for d in divisors(local_batch)
        if peak_bytes(shape, seq_len, d, amp, distributed) <= budget
    ]
    return max(fitting, default=1)


def detect_device_gb(device: Any) -> float | None:
    """Total memory of a CUDA device, or the host's available memory for the CPU, in GiB."""
    if device.type == "cuda":
        import torch

        return torch.cuda.get_device_properties(device).total_memory / GIB
    try:
        pages, page_size = os.sysconf("SC_AVPHYS_PAGES"), os.sysconf("SC_PAGE_SIZE")
    except (ValueError, OSError):
        return None
    return pages * page_size / GIB


@dataclass(frozen=True)
class MicroBatchPlan:
    """How one rank splits its share of each global batch."""

    micro_batch: int
    accumulation: int  # micro-batches per optimizer step on this rank
    local_batch: int
    peak_gb: float
    budget_gb: float
    source: str  # "configured" | "planned" | "whole batch"

    @property
    def fits(self) -> bool:
        return self.peak_gb <= self.budget_gb


def plan_micro_batch(
    shape: ModelShape,
    seq_len: int,
    batch_size: int,
    world_size: int,
    amp: bool,
    device_type: str,
    device_gb: float,
    configured: int = 0,
) -> MicroBatchPlan:
    """The micro-batch to train with: `configured` if set, else the largest that fits.

    On the CPU an unset micro-batch stays the whole local batch whenever that fits in half the
    available host memory (the CPU demo's behaviour, bit for bit); only larger runs are split.
    """
    local = max(1, batch_size // world_size)
    budget = usable_bytes(device_gb, device_type)
    distributed = world_size > 1
    if configured > 0:
        micro, source = min(configured, local), "configured"
    elif device_type != "cuda" and peak_bytes(shape, seq_len, local, amp, distributed) <= budget:
        micro, source = local, "whole batch"
    else:
        micro = choose_micro_batch(shape, seq_len, local, amp, distributed, budget)
        source = "planned"
    peak = peak_bytes(shape, seq_len, micro, amp, distributed)
    return MicroBatchPlan(micro, -(-local // micro), local, peak / GIB, budget / GIB, source)
