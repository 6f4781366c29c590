"""Settings of `colorfilter evaluate` (standard library only: the CLI imports this).

Every (method, tau) selection trains a fresh target model from the same initialisation on the same
number of tokens, annealed to the end of its run; a curve of random selections at several budgets
turns CoLoR's held-out loss into a data multiplier.
"""

from __future__ import annotations

import math
from dataclasses import dataclass, field

from colorfilter.configtools import Checks
from colorfilter.io.location import SCHEMES
from colorfilter.models.config import TRAIN_DTYPES
from colorfilter.models.presets import PRESETS
from colorfilter.names import EVALUATE_METHODS, LABEL_ORACLE

URL_SCHEMES = frozenset(s for s in SCHEMES if s)  # multiple_choice files: s3, gs, hf, file URLs


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
    workers: int = 1  # runs trained side by side, one Ray actor each (one GPU each if any)
    torch_threads: int = 0  # torch CPU threads per run; 0 = the CPUs shared among the workers
    target_source: list[str] = field(default_factory=list)  # `source` prefixes that are target-like
    multiple_choice: list[str] = field(
        default_factory=list
    )  # JSON-lines files (paths or s3/gs/hf/file URLs) of {"context", "choices", "label"}:
    # rank-classification accuracy per run
    eval_batch_size: int = 32  # sequences per forward pass on the held-out split
    eval_max_chunks: int = 0  # cap on held-out chunks; 0 = the whole downstream_eval split
    dtype: str = "auto"  # auto (bf16 on cuda, fp32 on cpu), float32 or bfloat16
    progress: bool = False  # show a progress bar per training run

    def validate(self, where: str = "evaluate") -> list[str]:
        """Problems of this section, one line each (empty if usable)."""
        check = Checks(where)
        check.names("methods", self.methods, EVALUATE_METHODS)
        if LABEL_ORACLE in self.methods and not self.target_source:
            check.add(
                "methods",
                f": {LABEL_ORACLE} needs evaluate.target_source (the `source` prefixes it "
                "puts first)",
            )
        check_taus(check, "taus", self.taus)
        if not self.seeds:
            check.add("seeds", "must name at least one seed, got []")
        check.one_of("preset", self.preset, sorted(PRESETS))
        check.at_least("train_tokens", self.train_tokens, 0)
        for i, multiple in enumerate(self.random_multiples):
            check.positive(f"random_multiples[{i}]", multiple)
        check.at_least("batch_size", self.batch_size, 1)
        check.positive("lr", self.lr)
        check.within("min_lr_ratio", self.min_lr_ratio, 0, 1)
        check.at_least("warmup_steps", self.warmup_steps, 0)
        check.at_least("workers", self.workers, 1)
        check.at_least("torch_threads", self.torch_threads, 0)
        for i, prefix in enumerate(self.target_source):
            check.non_empty(f"target_source[{i}]", prefix)
        check.paths("multiple_choice", self.multiple_choice, schemes=URL_SCHEMES)
        check.at_least("eval_batch_size", self.eval_batch_size, 1)
        check.at_least("eval_max_chunks", self.eval_max_chunks, 0)
        check.one_of("dtype", self.dtype, TRAIN_DTYPES)
        return check.problems


def check_taus(check: Checks, name: str, taus: list[float]) -> None:
    """A non-empty list of finite selection ratios >= 1 (keep 1 in tau)."""
    if not taus:
        check.add(name, "must list at least one tau, got []")
    bad = [t for t in taus if not (math.isfinite(t) and t >= 1)]
    if bad:
        check.add(name, f"must be >= 1 and finite (keep 1 in tau), got {taus}")
