"""Scoring options: which backend scores the pool, how big its batches are, where it runs.

Standard library (and configtools) only: the CLI and the root config import this at start-up.
"""

from __future__ import annotations

from dataclasses import dataclass

from colorfilter.configtools import Checks

BACKENDS = ("torch", "vllm")
DTYPES = ("auto", "float32", "bfloat16", "float16")


@dataclass
class ScoreConfig:
    backend: str = "torch"  # torch (default, exact and fastest here) | vllm (optional extra)
    batch_size: int = 32  # sequences per forward pass (static [batch_size, seq_len] shapes)
    dtype: str = "auto"  # auto: float32 on CPU, bfloat16 on CUDA | float32 | bfloat16 | float16
    compile: bool = False  # torch.compile the models (worth it on GPU for long runs)
    logits_block_tokens: int = 0  # positions per lm_head block; 0 = auto (~128 MiB of fp32 logits)
    prefetch_batches: int = 2  # batches read and padded ahead by a background thread
    torch_threads: int = 0  # torch intra-op threads per worker; 0 = worker_cpus (at least 1)
    num_workers: int = 0  # scoring actors; 0 = one per GPU, or one per CPU core on CPU-only
    worker_cpus: float = 1.0  # CPUs reserved per actor (keep below the node total: see NOTES)
    worker_gpus: float = 1.0  # GPUs per actor when CUDA is used (0.5 puts two actors on a GPU)
    vllm_gpu_memory_utilization: float = 0.4  # per model: vllm loads the prior and the conditional
    vllm_max_num_batched_tokens: int = 0  # vllm scheduler budget; 0 = batch_size * seq_len

    def validate(self, where: str = "score") -> list[str]:
        """Return a list of problems, one line each (empty if the section is usable)."""
        check = Checks(where)
        check.one_of("backend", self.backend, BACKENDS)
        check.one_of("dtype", self.dtype, DTYPES)
        check.at_least("batch_size", self.batch_size, 1)
        for name in ("logits_block_tokens", "prefetch_batches", "torch_threads", "num_workers"):
            check.at_least(name, getattr(self, name), 0)
        check.positive("worker_cpus", self.worker_cpus)
        check.at_least("worker_gpus", self.worker_gpus, 0)
        if self.backend == "vllm":
            check.within("vllm_gpu_memory_utilization", self.vllm_gpu_memory_utilization, 0.01, 1)
        check.at_least("vllm_max_num_batched_tokens", self.vllm_max_num_batched_tokens, 0)
        return check.problems
