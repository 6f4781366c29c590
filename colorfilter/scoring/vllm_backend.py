"""Optional scoring backend on vLLM's offline API (`pip install 'colorfilter[vllm]'`).

Each model gets its own engine; a batch is sent as token-id prompts with `prompt_logprobs=0`,
which returns the log-probability of every actual next token. Slower than the torch backend for
pure scoring (per-position Python objects, a full-vocabulary log-softmax) and not batch-invariant,
so it is an alternative for clusters that already run vLLM, cross-checked against torch in tests.
vLLM starts engine processes: call it from code guarded by `if __name__ == "__main__"`.
"""

from __future__ import annotations

import gc
import json
import os
from pathlib import Path
from typing import Any

import numpy as np

from colorfilter.errors import require
from colorfilter.scoring.base import (
    TokenLosses,
    host_peak_rss_mb,
    mean_nll_from_sums,
    resolve_device,
)
from colorfilter.scoring.config import ScoreConfig
from colorfilter.scoring.precision import resolve_precision


def prompt_nll_values(prompt_logprobs: Any, token_ids: list[int]) -> np.ndarray:
    """-log p(token_i | tokens_<i) for i >= 1 (float64), from one request's prompt_logprobs."""
    targets = token_ids[1:]
    flat_ids = getattr(prompt_logprobs, "token_ids", None)  # FlatLogprobs: one entry a position
    if flat_ids is not None and list(flat_ids) == targets:
        return -np.asarray(prompt_logprobs.logprobs, dtype=np.float64)
    positions = list(prompt_logprobs)[1:]  # position 0 predicts nothing (None)
    return -np.array([position[token].logprob for position, token in zip(positions, targets)],
                     dtype=np.float64)  # fmt: skip


def prompt_nll_sum(prompt_logprobs: Any, token_ids: list[int]) -> float:
    """-sum of log p(token_i | tokens_<i) over i >= 1, from one request's prompt_logprobs."""
    return float(np.sum(prompt_nll_values(prompt_logprobs, token_ids)))


def _allow_one_extra_position(model_dir: str | Path, seq_len: int) -> None:
    """Let a full chunk through vLLM's prompt + 1 <= max_model_len check.

    Models trained at seq_len often declare exactly seq_len positions, and vLLM's generate
    runner refuses a prompt that leaves no room for the one sampled token. With max_tokens=1
    that token is sampled from the last prompt position and never run through the model, so
    no position >= seq_len is ever computed: lifting the check is safe here.
    """
    config = json.loads((Path(model_dir) / "config.json").read_text(encoding="utf-8"))
    if (config.get("max_position_embeddings") or seq_len + 1) <= seq_len:
        os.environ["VLLM_ALLOW_LONG_MAX_MODEL_LEN"] = "1"


class VllmPairScorer:
    """One vLLM engine per model; `score` sends the batch to both."""

    def __init__(
        self,
        prior_dir: str | Path,
        cond_dir: str | Path,
        cfg: ScoreConfig,
        device: str = "auto",
        seq_len: int | None = None,
    ):
        vllm = require("vllm", extra="vllm")
        self.cfg = cfg
        self.precision = resolve_precision(cfg.precision, resolve_device(device), "vllm")
        self.dtype_name = self.precision.weights
        self.engines = [self._engine(vllm, d, seq_len) for d in (prior_dir, cond_dir)]
        self.params = self._sampling_params(vllm)

    def _engine(self, vllm: Any, model_dir: str | Path, seq_len: int | None) -> Any:
        batched = self.cfg.vllm_max_num_batched_tokens or self.cfg.batch_size * (seq_len or 2048)
        options: dict[str, Any] = {
            "dtype": self.dtype_name,
            "skip_tokenizer_init": True,  # prompts are token ids; nothing to detokenize
            "enable_prefix_caching": False,  # cached prefixes would skip their prompt logprobs
            "gpu_memory_utilization": self.cfg.vllm_gpu_memory_utilization,
            "max_num_seqs": self.cfg.batch_size,
            "max_num_batched_tokens": max(batched, (seq_len or 0) + 1),
            "enforce_eager": not self.cfg.compile,  # compiling takes minutes at start-up
            "seed": 0,
        }
        if seq_len is not None:
            _allow_one_extra_position(model_dir, seq_len)
            options["max_model_len"] = seq_len + 1  # the prompt plus the one sampled token
        return vllm.LLM(model=str(model_dir), **options)

    @staticmethod
    def _sampling_params(vllm: Any) -> Any:
        options = {"max_tokens": 1, "prompt_logprobs": 0, "detokenize": False}
        try:  # flat_logprobs (newer vLLM) avoids a dict and an object per position
            return vllm.SamplingParams(**options, flat_logprobs=True)
        except TypeError:
            return vllm.SamplingParams(**options)

    def prepare(self, input_ids: np.ndarray, n_tokens: np.ndarray) -> tuple[list, np.ndarray]:
        """Token-id prompts without the padding (rows with < 2 tokens are left out)."""
        prompts = [
            {"prompt_token_ids": row[:n].tolist()} if n >= 2 else None
            for row, n in zip(input_ids, n_tokens)
        ]
        return prompts, np.asarray(n_tokens)

    def score_prepared(self, prepared: tuple[list, np.ndarray]) -> tuple[np.ndarray, np.ndarray]:
        losses = self.score_tokens_prepared(prepared)
        return losses.prior_loss, losses.cond_loss

    def score_tokens_prepared(self, prepared: tuple[list, np.ndarray]) -> TokenLosses:
        prompts, n_tokens = prepared
        keep = [i for i, p in enumerate(prompts) if p is not None]
        width = max(int(np.max(n_tokens, initial=1)) - 1, 0)
        losses, matrices = [], []
        for engine in self.engines:
            matrix = np.zeros((len(prompts), width), dtype=np.float64)
            if keep:
                outputs = engine.generate([prompts[i] for i in keep], self.params, use_tqdm=False)
                for i, out in zip(keep, outputs):
                    values = prompt_nll_values(out.prompt_logprobs, out.prompt_token_ids)
                    matrix[i, : values.size] = values
            losses.append(mean_nll_from_sums(matrix.sum(axis=1), n_tokens))
            matrices.append(matrix.astype(np.float32))
        return TokenLosses(losses[0], losses[1], matrices[0], matrices[1])

    def score(self, input_ids: np.ndarray, n_tokens: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
        return self.score_prepared(self.prepare(input_ids, n_tokens))

    def memory_stats(self) -> dict[str, float]:
        return {"peak_host_rss_mb": round(host_peak_rss_mb(), 1)}  # engines run in child processes

    def close(self) -> None:
        self.engines = []
        gc.collect()
