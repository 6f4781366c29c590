"""A deterministic shuffled row order that depends only on (seed, seq_id).

Sorting by a keyed hash of each seq_id gives the same order whatever the shard listing order,
worker count or selection method, and lets any row's output position be computed from the
selected id set alone (so rows can be routed to their output shard in one streaming pass).
"""

from __future__ import annotations

import numpy as np

_GOLDEN = np.uint64(0x9E3779B97F4A7C15)
_MIX1 = np.uint64(0xBF58476D1CE4E5B9)
_MIX2 = np.uint64(0x94D049BB133111EB)


def splitmix64(values: np.ndarray) -> np.ndarray:
    """The splitmix64 finaliser, vectorised: a bijective, well-mixed uint64 -> uint64 hash."""
    x = np.asarray(values, dtype=np.uint64) + _GOLDEN
    with np.errstate(over="ignore"):
        x = (x ^ (x >> np.uint64(30))) * _MIX1
        x = (x ^ (x >> np.uint64(27))) * _MIX2
    return x ^ (x >> np.uint64(31))


def shuffle_keys(seq_ids: np.ndarray, seed: int) -> np.ndarray:
    """Sort keys for `seq_ids` under `seed` (uint64; distinct ids give distinct keys)."""
    seed_key = splitmix64(np.array([seed & 0xFFFFFFFFFFFFFFFF], dtype=np.uint64))[0]
    return splitmix64(np.asarray(seq_ids, dtype=np.uint64) ^ seed_key)


def shuffled_order(seq_ids: np.ndarray, seed: int) -> np.ndarray:
    """`seq_ids` in the released row order (ties impossible: the hash is a bijection)."""
    seq_ids = np.asarray(seq_ids, dtype=np.uint64)
    return seq_ids[np.argsort(shuffle_keys(seq_ids, seed), kind="stable")]
