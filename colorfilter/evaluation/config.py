"""Settings of `colorfilter evaluate` (standard library only: the CLI imports this).

Every (method, tau) selection trains a fresh target model from the same initialisation on the same
number of tokens, annealed to the end of its run; a curve of random selections at several budgets
turns CoLoR's held-out loss into a data multiplier.
"""

from __future__ import annotations

from dataclasses import dataclass, field


@dataclass
class EvaluateConfig:
    """The target-model evaluation harness."""

    methods: list[str] = field(
        default_factory=lambda: ["color", "random", "conditional_only", "prior_only", "dsir"]
    )  # selection methods to compare (colorfilter.selection.METHODS), and label_oracle: a
    # reference that reads the pool's source labels (target_source first, then CoLoR's order)
    taus: list[float] = field(default_factory=lambda: [4.0, 8.0, 16.0])  # selection ratios
    seeds: list[int] = field(default_factory=lambda: [0])  # target-model init and data-order seeds
    preset: str = "tiny"  # target model preset (colorfilter.models.presets)
    train_tokens: int = 0  # tokens per run; 0 = the smallest selection's tokens at each tau
    random_multiples: list[float] = field(
        default_factory=lambda: [1.0, 2.0, 4.0, 8.0]
    )  # random-curve budgets, as multiples of each tau's budget (capped by the pool)
    batch_size: int = 16  # sequences per optimizer step
    lr: float = 1e-3  # peak learning rate (AdamW, cosine to min_lr_ratio at the run's end)
    min_lr_ratio: float = 0.1  # the cosine ends at lr * min_lr_ratio on the last step
    warmup_steps: int = 20  # linear warmup; capped at a tenth of the run
    workers: int = 1  # runs trained side by side, one process each (spread over the GPUs if any)
    torch_threads: int = 0  # torch CPU threads per run; 0 = the CPUs shared among the workers
    target_source: list[str] = field(default_factory=list)  # `source` prefixes that are target-like
    multiple_choice: list[str] = field(
        default_factory=list
    )  # JSON-lines files of {"context", "choices", "label"}: rank-classification accuracy per run
    eval_batch_size: int = 32  # sequences per forward pass on the held-out split
    eval_max_chunks: int = 0  # cap on held-out chunks; 0 = the whole downstream_eval split
    dtype: str = "auto"  # auto (bf16 on cuda, fp32 on cpu), float32 or bfloat16
    progress: bool = False  # show a progress bar per training run
