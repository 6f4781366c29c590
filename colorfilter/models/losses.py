"""Masked next-token loss and held-out evaluation, shared by training and by the evaluation harness.

Chunks shorter than seq_len are right-padded; pad positions carry no loss and cannot influence
real tokens (causal attention only looks left), so no attention mask is needed.
"""

from __future__ import annotations

from collections.abc import Sequence
from pathlib import Path
from typing import Any

import numpy as np

from colorfilter.io.location import Location
from colorfilter.io.token_shards import iter_padded_batches, list_shards
from colorfilter.models.runtime import autocast, autocast_dtype, resolve_device


def token_losses(logits: Any, input_ids: Any, n_tokens: Any) -> tuple[Any, Any, Any]:
    """(sum of next-token NLL, sum of log(Z)^2, count) over real positions of a padded batch."""
    import torch

    logits = logits[:, :-1].float()
    targets = input_ids[:, 1:]
    positions = torch.arange(targets.shape[1], device=targets.device)
    mask = (positions[None, :] < (n_tokens[:, None] - 1)).to(logits.dtype)
    log_z = torch.logsumexp(logits, dim=-1)
    target_logits = logits.gather(-1, targets.unsqueeze(-1)).squeeze(-1)
    nll = (log_z - target_logits) * mask
    return nll.sum(), (log_z.square() * mask).sum(), mask.sum()


def _as_paths(
    token_dir_or_paths: str | Path | Sequence[str | Path | Location],
) -> list[Path | Location]:
    if isinstance(token_dir_or_paths, (str, Path)):
        path = Path(token_dir_or_paths)
        return list_shards(path) if path.is_dir() else [path]
    return [p if isinstance(p, Location) else Path(p) for p in token_dir_or_paths]


def evaluate_loss(
    model: Any,
    token_dir_or_paths: str | Path | Sequence[str | Path],
    seq_len: int,
    pad_id: int,
    batch_size: int = 32,
    device: Any = "auto",
    dtype: str = "auto",
    max_chunks: int = 0,
) -> float:
    """Mean per-token NLL (nats) of `model` on token shards: token-weighted, pads excluded."""
    nll_sum, count = evaluate_sums(
        model, token_dir_or_paths, seq_len, pad_id, batch_size, device, dtype, max_chunks
    )
    return nll_sum / count if count else float("nan")


def evaluate_sums(
    model: Any,
    token_dir_or_paths: str | Path | Sequence[str | Path],
    seq_len: int,
    pad_id: int,
    batch_size: int = 32,
    device: Any = "auto",
    dtype: str = "auto",
    max_chunks: int = 0,
) -> tuple[float, int]:
    """(summed NLL, predicted positions) over the shards: the parts of `evaluate_loss`."""
    import torch

    device = resolve_device(device) if isinstance(device, str) else device
    amp = autocast_dtype(dtype, device)
    was_training = model.training
    model.eval()
    nll_total, count_total, seen = 0.0, 0, 0
    with torch.no_grad():
        for _, input_ids, n_tokens in iter_padded_batches(
            _as_paths(token_dir_or_paths), batch_size, seq_len, pad_id
        ):
            if max_chunks:
                input_ids, n_tokens = input_ids[: max_chunks - seen], n_tokens[: max_chunks - seen]
            ids = torch.from_numpy(input_ids).to(device)
            lengths = torch.from_numpy(n_tokens.astype(np.int64)).to(device)
            with autocast(device, amp):
                logits = model(input_ids=ids).logits
            nll, _, count = token_losses(logits, ids, lengths)
            nll_total += float(nll)
            count_total += int(count)
            seen += len(n_tokens)
            if max_chunks and seen >= max_chunks:
                break
    model.train(was_training)
    return nll_total, count_total
