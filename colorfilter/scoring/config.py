"""Scoring options: which backend scores the pool, how big its batches are, where it runs.

Standard library (and configtools) only: the CLI and the root config import this at start-up.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import ClassVar

from colorfilter.configtools import Checks

BACKENDS = ("torch", "vllm")
# precision name -> (weights dtype, autocast dtype or "none"); see scoring/precision.py
PRECISIONS: dict[str, tuple[str, str]] = {
    "fp32": ("float32", "none"),
    "fp32-autocast-bf16": ("float32", "bfloat16"),
    "bf16": ("bfloat16", "none"),
    "fp16": ("float16", "none"),
}
NO_AUTOCAST_BACKENDS = ("vllm",)
# what "auto" means: [backend has no autocast][device type]
AUTO_PRECISION = {
    False: {"cpu": "fp32", "cuda": "fp32-autocast-bf16"},  # torch: the paper's on GPU
    True: {"cpu": "fp32", "cuda": "bf16"},
}


@dataclass
class ScoreConfig:
    backend: str = "torch"  # torch (default, exact and fastest here) | vllm (optional extra)
    batch_size: int = 32  # sequences per forward pass (static [batch_size, seq_len] shapes)
    # auto (fp32 on CPU; on CUDA fp32-autocast-bf16, the paper's, or bf16 for vllm) | fp32 |
    # fp32-autocast-bf16 (fp32 weights under bf16 autocast) | bf16 (bf16 weights) | fp16
    precision: str = "auto"
    compile: bool = False  # torch.compile the models (worth it on GPU for long runs)
    logits_block_tokens: int = 0  # positions per lm_head block; 0 = auto (~128 MiB of fp32 logits)
    prefetch_batches: int = 2  # batches read and padded ahead by a background thread
    torch_threads: int = 0  # torch intra-op threads per worker; 0 = worker_cpus (at least 1)
    num_workers: int = 0  # scoring actors; 0 = one per GPU, or one per CPU core on CPU-only
    worker_cpus: float = 1.0  # CPUs reserved per actor (keep below the node total: see NOTES)
    worker_gpus: float = 1.0  # GPUs per actor when CUDA is used (0.5 puts two actors on a GPU)
    vllm_gpu_memory_utilization: float = 0.4  # per model: vllm loads the prior and the conditional
    vllm_max_num_batched_tokens: int = 0  # vllm scheduler budget; 0 = batch_size * seq_len

    # keys of older versions -> what replaced them (named in the unknown-key error)
    RENAMED_KEYS: ClassVar[dict[str, str]] = {
        "dtype": "score.precision (auto | fp32 | fp32-autocast-bf16 | bf16 | fp16; "
        "dtype float32 -> fp32, bfloat16 -> bf16, float16 -> fp16)",
    }

    def validate(self, where: str = "score") -> list[str]:
        """Return a list of problems, one line each (empty if the section is usable)."""
        check = Checks(where)
        check.one_of("backend", self.backend, BACKENDS)
        check.one_of("precision", self.precision, ("auto", *PRECISIONS))
        if self.backend in NO_AUTOCAST_BACKENDS and self.precision == "fp32-autocast-bf16":
            check.add("precision", f"= {self.precision!r} needs the torch backend")
        check.at_least("batch_size", self.batch_size, 1)
        for name in ("logits_block_tokens", "prefetch_batches", "torch_threads", "num_workers"):
            check.at_least(name, getattr(self, name), 0)
        check.positive("worker_cpus", self.worker_cpus)
        check.at_least("worker_gpus", self.worker_gpus, 0)
        if self.backend == "vllm":
            check.within("vllm_gpu_memory_utilization", self.vllm_gpu_memory_utilization, 0.01, 1)
        check.at_least("vllm_max_num_batched_tokens", self.vllm_max_num_batched_tokens, 0)
        return check.problems
