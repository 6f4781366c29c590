"""The narrow interface every scoring backend implements, and a lazy registry of backends.

A backend loads the prior and the conditional model once and scores batches of right-padded
chunks with both, returning per-sequence mean next-token NLLs. Backends are imported only when
asked for, so the CLI starts without torch or vllm and a missing extra fails with a clear message.
"""

from __future__ import annotations

import importlib
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Protocol, runtime_checkable

import numpy as np

from colorfilter.errors import ConfigError
from colorfilter.scoring.config import BACKENDS, ScoreConfig

# backend name -> "module:factory"; the factory has build_scorer's signature minus `backend`.
_REGISTRY = {
    "torch": "colorfilter.scoring.torch_backend:TorchPairScorer",
    "vllm": "colorfilter.scoring.vllm_backend:VllmPairScorer",
}


@dataclass(frozen=True)
class TokenLosses:
    """Both models' losses on a batch and their per-position NLL [B, L-1] (0 past n - 1)."""

    prior_loss: np.ndarray
    cond_loss: np.ndarray
    prior_nll: np.ndarray
    cond_nll: np.ndarray

    def deltas(self, n_tokens: np.ndarray) -> list[np.ndarray]:
        """Per row: prior NLL - conditional NLL at its predicted positions (float32)."""
        delta = self.prior_nll - self.cond_nll
        return [delta[i, : max(int(n) - 1, 0)] for i, n in enumerate(n_tokens)]


@runtime_checkable
class PairScorer(Protocol):
    """Scores batches with both models. Losses are float32 [B]; NaN where n_tokens < 2.

    `precision` says what actually runs (a `scoring.precision.Precision`); shard records keep it.
    """

    precision: Any

    def prepare(self, input_ids: np.ndarray, n_tokens: np.ndarray) -> Any:
        """Turn a host batch into the backend's input (pinned tensors...): safe off-thread."""

    def score_prepared(self, prepared: Any) -> tuple[np.ndarray, np.ndarray]:
        """(prior_loss, cond_loss) for a batch returned by `prepare`."""

    def score(self, input_ids: np.ndarray, n_tokens: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
        """(prior_loss, cond_loss) for int64 [B, L] right-padded ids with n_tokens [B] real."""

    def score_tokens_prepared(self, prepared: Any) -> TokenLosses:
        """`score_prepared`'s losses and the per-position NLLs behind them (the cascade's
        sample teaches the cheap scorer from these)."""

    def memory_stats(self) -> dict[str, float]:
        """Peak memory figures in MiB (host RSS, and device memory where there is a device)."""

    def close(self) -> None:
        """Release models and engines."""


def build_scorer(
    backend: str,
    prior_dir: str | Path,
    cond_dir: str | Path,
    cfg: ScoreConfig,
    device: str = "auto",
    seq_len: int | None = None,
) -> PairScorer:
    """Build the named backend's scorer (imports the backend only now)."""
    if backend not in _REGISTRY:
        raise ConfigError(f"unknown scoring backend {backend!r}; choose one of {BACKENDS}")
    module_name, factory_name = _REGISTRY[backend].split(":")
    factory = getattr(importlib.import_module(module_name), factory_name)
    return factory(prior_dir, cond_dir, cfg, device=device, seq_len=seq_len)


def resolve_device(device: str) -> str:
    """'auto' -> 'cuda' when a GPU is visible, else 'cpu'; anything else unchanged."""
    if device != "auto":
        return device
    import torch

    return "cuda" if torch.cuda.is_available() else "cpu"


def mean_nll_from_sums(nll_sum: np.ndarray, n_tokens: np.ndarray) -> np.ndarray:
    """Mean NLL over the n_tokens - 1 predicted positions, as float32; NaN when nothing is."""
    predicted = np.asarray(n_tokens, dtype=np.float64) - 1.0
    with np.errstate(divide="ignore", invalid="ignore"):
        mean = np.asarray(nll_sum, dtype=np.float64) / predicted
    mean[predicted < 1] = np.nan
    return mean.astype(np.float32)


def host_peak_rss_mb() -> float:
    """This process's peak resident memory so far, in MiB (Linux reports KiB)."""
    import resource

    return resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024.0
