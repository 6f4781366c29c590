"""Which chunks each evaluation run trains on: a selection, its budget, its repeated order.

Only full-length chunks (n_tokens == seq_len) are trained on, so a run of `steps` steps of
`batch_size` sequences sees exactly steps * batch_size * seq_len tokens whatever the method:
the short chunks (the tail of each input file) are a negligible share of any pool.
"""

from __future__ import annotations

import hashlib
import math
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path

import numpy as np

from colorfilter.errors import BadDataError
from colorfilter.io.location import Location
from colorfilter.io.transfer import open_parquet, read_parquet
from colorfilter.models.data import ChunkIndex, epoch_order, read_chunk_index


@dataclass
class Sources:
    """Each pool row's `source` label as a small integer code into a table of distinct labels.

    4 bytes per row instead of a Python string object per row (the pool can hold 10^9 rows).
    `names` is sorted (None, meaning no label, first), so code order is label order.
    """

    codes: np.ndarray  # int32, aligned with the pool's index rows
    names: list  # distinct labels: str, or None for rows without one

    def labels(self, none: str = "") -> np.ndarray:
        """The label of each code, as str (`none` for rows without one): one entry per code."""
        return np.array([none if n is None else str(n) for n in self.names], dtype=object)

    def mask(self, prefixes: list[str]) -> np.ndarray:
        """Rows whose label starts with one of `prefixes` (None counts as "")."""
        return is_target(self.labels(), prefixes)[self.codes]


@dataclass
class Pool:
    """The pool's chunk index plus each chunk's `source` label (None where the shards have none)."""

    index: ChunkIndex
    source: Sources | None
    _sorter: np.ndarray

    @classmethod
    def read(cls, paths: Sequence[Path | Location]) -> Pool:
        """The pool's token shards on disk or on a bucket (only seq_id, n_tokens and source)."""
        index = read_chunk_index(paths)
        return cls(index, _read_sources(paths), np.argsort(index.seq_id, kind="stable"))

    def positions(self, seq_ids: np.ndarray) -> np.ndarray:
        """Index rows of `seq_ids` (every id must be in the pool)."""
        seq_ids = np.asarray(seq_ids, dtype=np.uint64)
        found = np.searchsorted(self.index.seq_id, seq_ids, sorter=self._sorter)
        found = np.minimum(found, len(self._sorter) - 1)
        rows = self._sorter[found]
        if len(rows) and not np.array_equal(self.index.seq_id[rows], seq_ids):
            raise BadDataError("a selected seq_id is not in the pool's token shards")
        return rows


def _read_sources(paths: Sequence[Path | Location]) -> Sources | None:
    """The shards' `source` column, dictionary-encoded shard by shard (no per-row objects)."""
    if not paths:
        return None
    with open_parquet(paths[0]) as first:
        if "source" not in first.schema_arrow.names:
            return None
    import pyarrow.compute as pc

    first_code: dict = {}  # label -> code in order of first appearance
    parts = []
    for path in paths:
        column = read_parquet(path, columns=["source"]).column("source").combine_chunks()
        encoded = column.dictionary_encode()
        local = encoded.dictionary.to_pylist() + [None]  # the last code: a null row
        lookup = np.array([first_code.setdefault(v, len(first_code)) for v in local], np.int32)
        indices = pc.fill_null(encoded.indices, len(local) - 1).to_numpy()
        parts.append(lookup[indices])
    names = sorted(first_code, key=lambda v: (v is not None, "" if v is None else v))
    seen = np.concatenate(parts) if parts else np.zeros(0, np.int32)
    present = np.bincount(seen, minlength=len(first_code)) > 0
    names = [n for n in names if present[first_code[n]]]
    if all(n is None for n in names):
        return None
    remap = np.zeros(len(first_code), np.int32)
    remap[[first_code[n] for n in names]] = np.arange(len(names), dtype=np.int32)
    return Sources(remap[seen], names)


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
    codes, names = pool.source.codes[rows], pool.source.labels()
    counts = np.bincount(codes, minlength=len(names))
    sums = np.bincount(codes, weights=tokens, minlength=len(names))
    by_label: dict[str, int] = {}
    for code in np.flatnonzero(counts):  # None and "" both read "" (as before)
        by_label[str(names[code])] = by_label.get(str(names[code]), 0) + int(sums[code])
    by_source = {label: by_label[label] for label in sorted(by_label)}
    result: dict = {"tokens": int(tokens.sum()), "tokens_by_source": by_source}
    if target_source:
        all_tokens = pool.index.n_tokens.astype(np.int64)
        target = pool.source.mask(target_source)
        selected_hits = int(tokens[target[rows]].sum())
        pool_hits = int(all_tokens[target].sum())
        result["precision"] = selected_hits / tokens.sum() if tokens.sum() else None
        result["recall"] = selected_hits / pool_hits if pool_hits else None
    return result


def is_target(labels: np.ndarray, prefixes: list[str]) -> np.ndarray:
    """Mask of labels that start with any of `prefixes` (the target-like sources)."""
    return np.array([any(str(s).startswith(p) for p in prefixes) for s in labels], dtype=bool)
