"""Which chunks each evaluation run trains on: a selection, its budget, its repeated order.

Only full-length chunks (n_tokens == seq_len) are trained on, so a run of `steps` steps of
`batch_size` sequences sees exactly steps * batch_size * seq_len tokens whatever the method:
the short chunks (the tail of each input file) are a negligible share of any pool.
"""

from __future__ import annotations

import hashlib
import math
from dataclasses import dataclass
from functools import cached_property
from pathlib import Path

import numpy as np
import pyarrow.parquet as pq

from colorfilter.errors import BadDataError
from colorfilter.models.data import ChunkIndex, epoch_order, read_chunk_index


@dataclass
class Pool:
    """The pool's chunk index plus each chunk's `source` label (None where the shards have none)."""

    index: ChunkIndex
    source: np.ndarray | None  # object array of str, aligned with index rows
    _sorter: np.ndarray

    @classmethod
    def read(cls, paths: list[Path]) -> Pool:
        index = read_chunk_index(paths)
        return cls(index, _read_sources(paths), np.argsort(index.seq_id, kind="stable"))

    @cached_property
    def labels(self) -> np.ndarray:
        """Each row's `source` as str ("" where a row has none), built once; the pool must record
        sources."""
        return np.array(["" if s is None else str(s) for s in self.source], dtype=object)

    def positions(self, seq_ids: np.ndarray) -> np.ndarray:
        """Index rows of `seq_ids` (every id must be in the pool)."""
        seq_ids = np.asarray(seq_ids, dtype=np.uint64)
        found = np.searchsorted(self.index.seq_id, seq_ids, sorter=self._sorter)
        found = np.minimum(found, len(self._sorter) - 1)
        rows = self._sorter[found]
        if len(rows) and not np.array_equal(self.index.seq_id[rows], seq_ids):
            raise BadDataError("a selected seq_id is not in the pool's token shards")
        return rows


def _read_sources(paths: list[Path]) -> np.ndarray | None:
    if not paths or "source" not in pq.read_schema(paths[0]).names:
        return None
    parts = [pq.read_table(p, columns=["source"]).column("source").to_pylist() for p in paths]
    sources = np.array([s for part in parts for s in part], dtype=object)
    return None if all(s is None for s in sources) else sources


def full_chunks(pool: Pool, seq_ids: np.ndarray, seq_len: int) -> np.ndarray:
    """Pool rows of the selected chunks that hold exactly `seq_len` tokens."""
    rows = pool.positions(seq_ids)
    return rows[pool.index.n_tokens[rows] == seq_len]


def round_to_batches(n_chunks: int, batch_size: int) -> int:
    """`n_chunks` rounded down to whole optimizer steps."""
    return (n_chunks // batch_size) * batch_size


def repeated_order(index: ChunkIndex, n_chunks: int, seed: int) -> np.ndarray:
    """`n_chunks` positions into `index`: seeded shuffled passes, repeated as needed, cut short."""
    if len(index) == 0:
        raise BadDataError("a selection has no full-length chunks to train on")
    epochs = max(1, math.ceil(n_chunks / len(index)))
    return epoch_order(index, epochs, seed)[:n_chunks]


def selection_digest(seq_ids: np.ndarray) -> str:
    """A short fingerprint of a selection, so a finished run is reused only for the same data."""
    return order_digest(np.sort(np.asarray(seq_ids, dtype=np.uint64)))


def order_digest(seq_ids: np.ndarray) -> str:
    """A short fingerprint of chunks in training order (a new shuffle is a new run)."""
    return hashlib.sha256(np.asarray(seq_ids, dtype=np.uint64).tobytes()).hexdigest()[:16]


def composition(pool: Pool, seq_ids: np.ndarray, target_source: list[str]) -> dict | None:
    """Selected tokens by source, and precision/recall of target-like tokens (by prefix)."""
    if pool.source is None:
        return None
    rows = pool.positions(seq_ids)
    tokens = pool.index.n_tokens[rows].astype(np.int64)
    all_labels = pool.labels
    labels = all_labels[rows]
    by_source = {str(s): int(tokens[labels == s].sum()) for s in np.unique(labels)}
    result: dict = {"tokens": int(tokens.sum()), "tokens_by_source": by_source}
    if target_source:
        all_tokens = pool.index.n_tokens.astype(np.int64)
        selected_hits = int(tokens[is_target(labels, target_source)].sum())
        pool_hits = int(all_tokens[is_target(all_labels, target_source)].sum())
        result["precision"] = selected_hits / tokens.sum() if tokens.sum() else None
        result["recall"] = selected_hits / pool_hits if pool_hits else None
    return result


def is_target(labels: np.ndarray, prefixes: list[str]) -> np.ndarray:
    """Mask of labels that start with any of `prefixes` (the target-like sources)."""
    return np.array([any(str(s).startswith(p) for p in prefixes) for s in labels], dtype=bool)
