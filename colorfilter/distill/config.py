"""Settings of the cascade: a cheap scorer distilled from the LM pair picks the candidates.

Standard library (and configtools) only: the root config imports this at start-up.
"""

from __future__ import annotations

from dataclasses import dataclass, field

from colorfilter.configtools import Checks
from colorfilter.names import DISTILLED, LM_FREE_METHODS

# Methods that need every pool chunk's LM scores: under the cascade only the candidates have them.
NEEDS_EVERY_LM_SCORE = ("prior_only", "conditional_only", "color_batchwise", "color_softmax")


def lm_pass_wanted(cascade_enabled: bool, methods: list[str]) -> bool:
    """Whether selections need the score stage: unless every method is LM-free and one is
    color_distilled (a distilled-only run), they do."""
    distilled_only = DISTILLED in methods and set(methods) <= LM_FREE_METHODS
    return cascade_enabled or not distilled_only


@dataclass
class CascadeConfig:
    """`distill` trains the cheap scorer; with `enabled`, `score` runs the LM pair on the
    candidates only (the top keep_ratio x N/tau_min by cheap score, plus the sample)."""

    enabled: bool = False  # score only the candidates (else every chunk, as without a cascade)
    sample_fraction: float = 0.01  # pool chunks the LM pair scores to teach the cheap scorer
    holdout_fraction: float = 0.25  # of the sample: never trained on (fidelity, recall estimate)
    keep_ratio: float = 3.0  # candidates = top keep_ratio * N / tau_min chunks by cheap score
    min_tau: float = 0.0  # the smallest tau the candidates must serve; 0 = min(selection.tau)
    ngram_orders: list[int] = field(default_factory=lambda: [1, 2])  # token n-grams (features)
    hash_bits: int = 18  # n-grams hashed into 2**hash_bits weights
    alphas: list[float] = field(default_factory=lambda: [0.1, 1.0, 10.0, 100.0])  # ridge penalties,
    # one chosen by 3-fold cross-validation on the training part of the sample
    max_train_positions: int = 20_000_000  # bounded memory: at most this many token positions
    # train the cheap scorer (a seeded subset of the training sample beyond it)
    num_workers: int = 0  # cheap-scoring actors; 0 = one per CPU
    worker_cpus: float = 1.0  # CPUs per cheap-scoring actor

    def validate(self, where: str = "cascade") -> list[str]:
        check = Checks(where)
        check.within("sample_fraction", self.sample_fraction, 1e-6, 1)
        check.within("holdout_fraction", self.holdout_fraction, 0, 0.9)
        check.at_least("keep_ratio", self.keep_ratio, 1)
        if self.min_tau != 0:
            check.at_least("min_tau", self.min_tau, 1)
        if not self.ngram_orders or any(not 1 <= o <= 4 for o in self.ngram_orders):
            check.add("ngram_orders", f"must list orders from 1 to 4, got {self.ngram_orders}")
        elif len(set(self.ngram_orders)) != len(self.ngram_orders):
            check.add("ngram_orders", f"names an order twice: {self.ngram_orders}")
        check.within("hash_bits", self.hash_bits, 10, 26)
        if not self.alphas:
            check.add("alphas", "must list at least one ridge penalty, got []")
        for i, alpha in enumerate(self.alphas):
            check.positive(f"alphas[{i}]", alpha)
        check.at_least("max_train_positions", self.max_train_positions, 1000)
        check.at_least("num_workers", self.num_workers, 0)
        check.positive("worker_cpus", self.worker_cpus)
        return check.problems

    def planned_tau(self, selection_taus: list[float]) -> float:
        """tau_min: the smallest tau the candidate set is sized for."""
        return self.min_tau or min(selection_taus)


def distill_wanted(config) -> bool:
    """Whether a config needs the distill stage (a whole-pipeline run includes it then)."""
    methods = set(config.selection.methods) | set(config.evaluate.methods)
    return config.cascade.enabled or DISTILLED in methods


def requested_taus(config) -> list[float]:
    """Every tau a selection or an evaluation of the config asks for."""
    return sorted({float(t) for t in [*config.selection.tau, *config.evaluate.taus]})
