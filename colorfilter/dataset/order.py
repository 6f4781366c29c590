"""A deterministic shuffled row order that depends only on (seed, seq_id).

Sorting by a keyed hash of each seq_id gives the same order whatever the shard listing order,
worker count or selection method, and lets any row's output position be computed from the
selected id set alone (so rows can be routed to their output shard in one streaming pass).
"""

from __future__ import annotations

import numpy as np

from colorfilter.hashing import seeded_keys


def shuffle_keys(seq_ids: np.ndarray, seed: int) -> np.ndarray:
    """Sort keys for `seq_ids` under `seed` (uint64; distinct ids give distinct keys)."""
    return seeded_keys(seq_ids, seed, "dataset.release-order")


def shuffled_order(seq_ids: np.ndarray, seed: int) -> np.ndarray:
    """`seq_ids` in the released row order (ties impossible: the hash is a bijection)."""
    seq_ids = np.asarray(seq_ids, dtype=np.uint64)
    return seq_ids[np.argsort(shuffle_keys(seq_ids, seed), kind="stable")]
