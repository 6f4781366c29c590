"""The default scoring backend: a plain forward of both models, exact and memory-bounded.

Per model and batch: the decoder runs once over static [B, L] ids (no attention mask: chunks
are right-padded, so with a causal model the positions < n_tokens never see a pad), then the
lm_head is applied to blocks of token positions and each block's cross-entropy is taken in fp32.
The full [B, L, V] logits never exist, which is what makes large batches with a 50k vocabulary
fit. With fp32 weights the result equals `model(ids[:n], labels=ids[:n]).loss` to ~1e-6.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

import numpy as np

from colorfilter.io.cache import source_url
from colorfilter.io.faults import reading
from colorfilter.scoring.base import (
    TokenLosses,
    host_peak_rss_mb,
    mean_nll_from_sums,
    resolve_device,
)
from colorfilter.scoring.config import ScoreConfig
from colorfilter.scoring.precision import resolve_precision

LOGITS_BLOCK_BYTES = {"cpu": 128 << 20, "cuda": 1 << 30}  # fp32 logits per block when auto


def load_causal_lm(model_dir: str | Path, dtype: Any, device: Any) -> Any:
    """Load a HF causal LM for inference: eval mode, no grads, on `device`. A truncated or
    missing weights file is one DamagedDataError naming the model folder as the user wrote it
    (the URL, for a node-local copy of a remote one)."""
    from transformers import AutoModelForCausalLM
    from transformers.utils import logging as hf_logging

    bars = hf_logging.is_progress_bar_enabled()
    hf_logging.disable_progress_bar()  # a bar per load floods the driver's log from actors
    try:
        with reading(model_dir, name=source_url(model_dir)):
            model = AutoModelForCausalLM.from_pretrained(str(model_dir), dtype=dtype)
    finally:
        if bars:
            hf_logging.enable_progress_bar()
    model.to(device).eval().requires_grad_(False)
    return model


def logits_block_tokens(cfg: ScoreConfig, vocab_size: int, device_type: str) -> int:
    """Token positions per lm_head block: the configured number, or a memory budget's worth."""
    if cfg.logits_block_tokens > 0:
        return cfg.logits_block_tokens
    budget = LOGITS_BLOCK_BYTES.get(device_type, LOGITS_BLOCK_BYTES["cpu"])
    return max(64, budget // (4 * vocab_size))


def check_plain_head(model: Any) -> None:
    """Fail early if model(...).logits is not simply lm_head(decoder(...)) (e.g. softcapping)."""
    import torch

    vocab = model.get_output_embeddings().weight.shape[0]
    device = model.get_output_embeddings().weight.device
    ids = (torch.arange(1, 9, device=device) * 7919 % vocab).unsqueeze(0)
    with torch.inference_mode():
        reference = model(input_ids=ids).logits.float()
        hidden = model.base_model(input_ids=ids).last_hidden_state
        ours = model.get_output_embeddings()(hidden).float()
    scale = max(1.0, reference.abs().max().item())
    if not torch.allclose(reference, ours, rtol=1e-3, atol=1e-3 * scale):
        raise ValueError(
            f"{type(model).__name__} transforms its logits beyond lm_head(hidden states); "
            "the torch scorer would not match model(...).loss for it"
        )


def token_nll(model: Any, input_ids: Any, n_tokens: Any, block_tokens: int) -> Any:
    """Next-token NLL at positions 1..L-1 of each row, fp32 [B, L-1]; 0 past n_tokens - 1."""
    import torch
    import torch.nn.functional as F

    hidden = model.base_model(input_ids=input_ids, use_cache=False).last_hidden_state
    batch, length, width = hidden.shape
    hidden = hidden[:, :-1].reshape(-1, width)
    targets = input_ids[:, 1:].reshape(-1)
    head = model.get_output_embeddings()
    blocks = []
    for start in range(0, hidden.shape[0], block_tokens):
        logits = head(hidden[start : start + block_tokens]).float()
        blocks.append(
            F.cross_entropy(logits, targets[start : start + block_tokens], reduction="none")
        )
    nll = torch.cat(blocks).view(batch, length - 1)
    positions = torch.arange(length - 1, device=nll.device)
    valid = positions.unsqueeze(0) < (n_tokens - 1).unsqueeze(1)
    return torch.where(valid, nll, torch.zeros_like(nll))


def token_nll_sums(model: Any, input_ids: Any, n_tokens: Any, block_tokens: int) -> Any:
    """Sum of next-token NLL over positions 1..n_tokens-1 of each row, float64 [B]."""
    import torch

    return token_nll(model, input_ids, n_tokens, block_tokens).sum(dim=1, dtype=torch.float64)


class TorchPairScorer:
    """Prior and conditional on one device; `score` runs both over the same batch."""

    def __init__(
        self,
        prior_dir: str | Path,
        cond_dir: str | Path,
        cfg: ScoreConfig,
        device: str = "auto",
        seq_len: int | None = None,
    ):
        import torch

        if cfg.torch_threads > 0:
            torch.set_num_threads(cfg.torch_threads)
        self.cfg = cfg
        self.device = torch.device(resolve_device(device))
        self.precision = resolve_precision(cfg.precision, self.device.type, "torch")
        self.dtype_name = self.precision.weights
        dtype = getattr(torch, self.dtype_name)
        self.models = [load_causal_lm(d, dtype, self.device) for d in (prior_dir, cond_dir)]
        vocabs = {m.get_output_embeddings().weight.shape[0] for m in self.models}
        if len(vocabs) != 1:
            raise ValueError(f"prior and conditional have different vocabularies: {vocabs}")
        for model in self.models:
            check_plain_head(model)
        self.block_tokens = logits_block_tokens(cfg, vocabs.pop(), self.device.type)
        self._nll_sums = [self._make_nll_fn(m) for m in self.models]
        self._token_fns: list | None = None  # built when the cascade's sample asks for them

    def _make_nll_fn(self, model: Any, per_token: bool = False) -> Any:
        """The model's per-row NLL sums (or, `per_token`, its [B, L-1] NLL matrix) under the
        configured precision, compiled when asked."""
        import torch

        amp = None if self.precision.autocast == "none" else getattr(torch, self.precision.autocast)
        device_type = self.device.type
        compute = token_nll if per_token else token_nll_sums

        def nll(input_ids: Any, n_tokens: Any) -> Any:
            if amp is None:
                return compute(model, input_ids, n_tokens, self.block_tokens)
            with torch.autocast(device_type=device_type, dtype=amp):
                return compute(model, input_ids, n_tokens, self.block_tokens)

        if not self.cfg.compile:
            return nll
        return torch.compile(nll, dynamic=False)

    def prepare(self, input_ids: np.ndarray, n_tokens: np.ndarray) -> tuple[Any, Any, int]:
        """Host tensors (pinned for CUDA), padded to batch_size when compiled (static shapes)."""
        import torch

        rows = len(n_tokens)
        if self.cfg.compile and rows < self.cfg.batch_size:
            extra = self.cfg.batch_size - rows
            input_ids = np.concatenate([input_ids, np.repeat(input_ids[-1:], extra, axis=0)])
            n_tokens = np.concatenate([n_tokens, np.zeros(extra, dtype=n_tokens.dtype)])
        ids = torch.from_numpy(np.ascontiguousarray(input_ids, dtype=np.int64))
        lengths = torch.from_numpy(np.asarray(n_tokens, dtype=np.int64))
        if self.device.type == "cuda":
            ids, lengths = ids.pin_memory(), lengths.pin_memory()
        return ids, lengths, rows

    def score_prepared(self, prepared: tuple[Any, Any, int]) -> tuple[np.ndarray, np.ndarray]:
        import torch

        ids, lengths, rows = prepared
        ids = ids.to(self.device, non_blocking=True)
        lengths_dev = lengths.to(self.device, non_blocking=True)
        with torch.inference_mode():
            sums = [fn(ids, lengths_dev) for fn in self._nll_sums]
            sums = [s[:rows].cpu().numpy() for s in sums]
        n_tokens = lengths[:rows].numpy()
        return mean_nll_from_sums(sums[0], n_tokens), mean_nll_from_sums(sums[1], n_tokens)

    def score(self, input_ids: np.ndarray, n_tokens: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
        return self.score_prepared(self.prepare(input_ids, n_tokens))

    def score_tokens_prepared(self, prepared: tuple[Any, Any, int]) -> TokenLosses:
        """`score_prepared`'s losses plus each model's per-position NLL [B, L-1] (0 past
        n_tokens - 1); the losses are the same float64 row sums of the same NLL kernels."""
        import torch

        if self._token_fns is None:
            self._token_fns = [self._make_nll_fn(m, per_token=True) for m in self.models]
        ids, lengths, rows = prepared
        ids = ids.to(self.device, non_blocking=True)
        lengths_dev = lengths.to(self.device, non_blocking=True)
        with torch.inference_mode():
            matrices = [fn(ids, lengths_dev)[:rows] for fn in self._token_fns]
            sums = [m.sum(dim=1, dtype=torch.float64).cpu().numpy() for m in matrices]
            per_token = [m.float().cpu().numpy() for m in matrices]
        n_tokens = lengths[:rows].numpy()
        return TokenLosses(
            mean_nll_from_sums(sums[0], n_tokens), mean_nll_from_sums(sums[1], n_tokens),
            per_token[0], per_token[1],
        )  # fmt: skip

    def memory_stats(self) -> dict[str, float]:
        import torch

        stats = {"peak_host_rss_mb": round(host_peak_rss_mb(), 1)}
        if self.device.type == "cuda":
            peak = torch.cuda.max_memory_allocated(self.device) / 2**20
            stats["cuda_peak_allocated_mb"] = round(peak, 1)
        return stats

    def close(self) -> None:
        self.models, self._nll_sums, self._token_fns = [], [], None
