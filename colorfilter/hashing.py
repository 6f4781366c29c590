"""Seeded per-seq_id hashes: one splitmix64, and an independent stream for every use.

Each seeded random choice in colorfilter (the prior's training slice, each epoch's order, the
random and Gumbel selections, the released row order) sorts or thresholds a keyed hash of seq_id.
Every use names its own stream, so two uses never share keys under the same seed: e.g. the random
selection at seed 0 is not the first-epoch order of a target trained with seed 0, which would make
a model see its random selection in nested, correlated order.
"""

from __future__ import annotations

import hashlib

import numpy as np

_GOLDEN = np.uint64(0x9E3779B97F4A7C15)
_MIX1 = np.uint64(0xBF58476D1CE4E5B9)
_MIX2 = np.uint64(0x94D049BB133111EB)
_MASK64 = (1 << 64) - 1


def splitmix64(values: np.ndarray) -> np.ndarray:
    """The splitmix64 finaliser, vectorised: a bijective, well-mixed uint64 -> uint64 hash."""
    x = np.asarray(values, dtype=np.uint64) + _GOLDEN
    with np.errstate(over="ignore"):
        x = (x ^ (x >> np.uint64(30))) * _MIX1
        x = (x ^ (x >> np.uint64(27))) * _MIX2
    return x ^ (x >> np.uint64(31))


def stream_salt(seed: int, stream: str, index: int = 0) -> np.uint64:
    """The 64-bit key of (seed, stream, index); distinct streams give unrelated keys."""
    if isinstance(seed, bool) or not isinstance(seed, (int, np.integer)):
        raise TypeError(f"seed must be an integer, got {seed!r}")
    name = hashlib.blake2b(f"{stream}/{int(index)}".encode(), digest_size=8).digest()
    seed_key = splitmix64(np.array([int(seed) & _MASK64], dtype=np.uint64))[0]
    return splitmix64(np.array([seed_key ^ np.uint64(int.from_bytes(name, "little"))]))[0]


def seeded_keys(seq_ids: np.ndarray, seed: int, stream: str, index: int = 0) -> np.ndarray:
    """A uint64 key per seq_id that depends only on (seed, stream, index, seq_id).

    It is a bijection of seq_id, so distinct ids never tie; sorting by it is a seeded shuffle
    and its k smallest keys are a uniform random k-subset.
    """
    return splitmix64(np.asarray(seq_ids, dtype=np.uint64) ^ stream_salt(seed, stream, index))
