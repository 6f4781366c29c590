"""What a format makes of one selection shard: named files, each a few buffers written in order.

Shared by the format modules (olmo.py, megatron.py) and the driver, which writes each file whole
(temp-then-rename on disk, one upload on a bucket) and hashes the very bytes it wrote.
"""

from __future__ import annotations

import hashlib
from collections.abc import Sequence
from dataclasses import dataclass, field
from typing import Any

import numpy as np

from colorfilter.errors import BadDataError
from colorfilter.export.source import ShardTokens
from colorfilter.io import storage
from colorfilter.io.location import Location

UINT16_IDS = 1 << 16  # vocabularies up to this size fit uint16 ids
UPLOAD_PART_BYTES = 64 << 20  # remote writes: parts of a multipart upload


@dataclass
class OutputFile:
    """One file to write: `parts` (bytes or contiguous arrays) back to back, and what it holds."""

    name: str
    parts: Sequence[Any]
    sequences: int = 0  # selection rows (chunks) whose tokens are in it
    tokens: int = 0
    extra: dict[str, Any] = field(default_factory=dict)  # per-format counts for export.json


def typed_tokens(shard: ShardTokens, dtype: np.dtype, vocab_size: int, where: str) -> np.ndarray:
    """The shard's tokens in `dtype`, after checking every id lies in [0, vocab_size)."""
    tokens = shard.tokens
    if tokens.size:
        low, high = int(tokens.min()), int(tokens.max())
        if low < 0 or high >= vocab_size:
            bad = low if low < 0 else high
            raise BadDataError(
                f"{where}: token id {bad} is outside the vocabulary of {vocab_size} ids"
            )
    return tokens.astype(dtype, copy=False)


def check_lengths(shard: ShardTokens, seq_len: int, where: str) -> None:
    """Every row is a chunk of at most seq_len tokens (as prepare cut them)."""
    if shard.lengths.size and int(shard.lengths.max()) > seq_len:
        raise BadDataError(
            f"{where}: a row holds {int(shard.lengths.max())} tokens, more than the run's "
            f"seq_len {seq_len}"
        )


def write_file(loc: Location, output: OutputFile) -> dict[str, Any]:
    """Write one output whole; its size and the sha256 of the bytes written."""
    digest, size = hashlib.sha256(), 0
    block = None if loc.is_local else UPLOAD_PART_BYTES
    with storage.open_write(loc, block_size=block) as handle:
        for part in output.parts:
            view = memoryview(part).cast("B") if isinstance(part, np.ndarray) else part
            digest.update(view)
            handle.write(view)
            size += len(view)
    return {"size": size, "sha256": digest.hexdigest()}
