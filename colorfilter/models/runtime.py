"""Where training runs: device, autocast dtype, and data-parallel ranks (torchrun or Ray Train)."""

from __future__ import annotations

import contextlib
import os
from dataclasses import dataclass
from typing import Any


def resolve_device(device: str = "auto") -> Any:
    """A torch.device; "auto" means the local rank's GPU when there is one, else the CPU."""
    import torch

    if device == "auto":
        device = "cuda" if torch.cuda.is_available() else "cpu"
    resolved = torch.device(device)
    if resolved.type == "cuda" and resolved.index is None:
        resolved = torch.device("cuda", int(os.environ.get("LOCAL_RANK", "0")))
    return resolved


def autocast_dtype(dtype: str, device: Any) -> Any:
    """The autocast dtype for `dtype` on `device`, or None for plain fp32."""
    import torch

    if dtype == "auto":
        return torch.bfloat16 if device.type == "cuda" else None
    if dtype in ("float32", "fp32"):
        return None
    if dtype in ("bfloat16", "bf16"):
        return torch.bfloat16
    raise ValueError(f"unknown dtype {dtype!r}: use auto, float32 or bfloat16")


def autocast(device: Any, dtype: Any) -> contextlib.AbstractContextManager:
    """An autocast context for `dtype` (None: no autocast)."""
    import torch

    if dtype is None:
        return contextlib.nullcontext()
    return torch.autocast(device_type=device.type, dtype=dtype)


def set_threads(torch_threads: int) -> None:
    """Set torch's CPU threads when asked (Ray sets OMP_NUM_THREADS=1 in workers)."""
    import torch

    if torch_threads > 0:
        torch.set_num_threads(torch_threads)


@dataclass(frozen=True)
class DistContext:
    """This process's place among data-parallel ranks."""

    rank: int = 0
    world_size: int = 1

    @property
    def is_main(self) -> bool:
        return self.rank == 0

    @property
    def distributed(self) -> bool:
        return self.world_size > 1

    def barrier(self) -> None:
        if self.distributed:
            import torch.distributed as dist

            dist.barrier()

    def sum(self, value: float, device: Any) -> float:
        """Sum a float over ranks."""
        if not self.distributed:
            return value
        import torch
        import torch.distributed as dist

        tensor = torch.tensor([value], dtype=torch.float64, device=device)
        dist.all_reduce(tensor)
        return float(tensor.item())


def dist_context(device: Any) -> DistContext:
    """Join the process group if launched data-parallel (torchrun sets WORLD_SIZE; Ray Train
    initialises the group itself), else a single-process context."""
    import torch.distributed as dist

    if not dist.is_available():
        return DistContext()
    if not dist.is_initialized() and int(os.environ.get("WORLD_SIZE", "1")) > 1:
        dist.init_process_group(backend="nccl" if device.type == "cuda" else "gloo")
    if not dist.is_initialized():
        return DistContext()
    return DistContext(dist.get_rank(), dist.get_world_size())
