"""Hashed n-gram features of token chunks: what the cheap scorer sees of a chunk.

Why this shape: a chunk's CoLoR score is a mean over its predicted positions of
`nll_prior(t_i | ctx) - nll_cond(t_i | ctx)`. A model that is linear in the *mean* one-hot of
each predicted position's n-grams (the token t_i, the pair (t_{i-1}, t_i), ...) has the same
form: a mean over positions of a per-n-gram weight. It is also what makes prediction cheap: a
chunk's cheap score is one gather of weights per position and a segment mean, vectorised over a
whole shard (no per-chunk Python, no sparse matrix), far above 2M tokens/s per core.

Chunks arrive as one flat token array with row offsets (an Arrow list column's layout), so a
shard is featurised without a Python loop. Position 0 of a chunk is never predicted (as in the
score), so n-grams end at positions 1..n-1; an n-gram of order o needs o - 1 tokens before it
inside the chunk.
"""

from __future__ import annotations

import functools
from dataclasses import dataclass

import numpy as np
import pyarrow as pa

from colorfilter.hashing import splitmix64, stream_salt

FEATURES_VERSION = 1  # bump when the hashing below changes: saved models name it


@dataclass(frozen=True)
class FeatureSpec:
    """Which n-grams, hashed into how many buckets (`2**bits`)."""

    orders: tuple[int, ...] = (1, 2)
    bits: int = 18
    version: int = FEATURES_VERSION

    @property
    def n_features(self) -> int:
        return 1 << self.bits

    def as_dict(self) -> dict:
        return {"orders": list(self.orders), "bits": self.bits, "version": self.version}

    @classmethod
    def from_dict(cls, data: dict) -> FeatureSpec:
        return cls(tuple(int(o) for o in data["orders"]), int(data["bits"]), int(data["version"]))


@dataclass(frozen=True)
class Chunks:
    """Token chunks as one flat int array and row offsets (len = rows + 1)."""

    values: np.ndarray
    offsets: np.ndarray

    @classmethod
    def from_arrow(cls, column: pa.Array | pa.ChunkedArray) -> Chunks:
        if isinstance(column, pa.ChunkedArray):
            column = column.combine_chunks()
        offsets = column.offsets.to_numpy(zero_copy_only=False).astype(np.int64)
        values = column.values.to_numpy(zero_copy_only=False)[offsets[0] : offsets[-1]]
        return cls(values.astype(np.int64, copy=False), offsets - offsets[0])

    @classmethod
    def from_padded(cls, input_ids: np.ndarray, n_tokens: np.ndarray) -> Chunks:
        """From a right-padded [B, L] matrix and each row's real length."""
        n_tokens = np.asarray(n_tokens, dtype=np.int64)
        mask = np.arange(input_ids.shape[1])[None, :] < n_tokens[:, None]
        offsets = np.concatenate([[0], np.cumsum(n_tokens)])
        return cls(np.asarray(input_ids, dtype=np.int64)[mask], offsets)

    @property
    def rows(self) -> int:
        return len(self.offsets) - 1

    @property
    def lengths(self) -> np.ndarray:
        return np.diff(self.offsets)

    def take(self, rows: np.ndarray) -> Chunks:
        """The chunks at `rows`, in that order."""
        rows = np.asarray(rows, dtype=np.int64)
        lengths = self.lengths[rows]
        starts = self.offsets[rows]
        offsets = np.concatenate([[0], np.cumsum(lengths)])
        index = np.repeat(starts - offsets[:-1], lengths) + np.arange(offsets[-1])
        return Chunks(self.values[index], offsets)


def predicted_counts(chunks: Chunks) -> np.ndarray:
    """Predicted positions per chunk (n - 1, at least 0)."""
    return np.maximum(chunks.lengths - 1, 0)


@functools.lru_cache(maxsize=16)
def _token_table(size: int, order: int, slot: int) -> np.ndarray:
    """Random uint64 per token id for slot `slot` of an n-gram of `order` (tabulation hashing:
    an n-gram's key is the XOR of one table entry per token, a 3-independent hash family)."""
    ids = np.arange(size, dtype=np.uint64)
    return splitmix64(ids ^ stream_salt(FEATURES_VERSION, f"distill.ngram{order}", slot))


def _tables(values: np.ndarray, order: int) -> list[np.ndarray]:
    size = 1 << max(16, int(values.max(initial=0)).bit_length())  # grows in powers of two
    return [_token_table(size, order, slot) for slot in range(order)]


def ngram_buckets(chunks: Chunks, spec: FeatureSpec) -> list[tuple[np.ndarray, np.ndarray]]:
    """Per order: (bucket of the n-gram ending at each token, mask of tokens where it counts).

    Counted are n-grams ending at a predicted position (>= 1) with all their tokens in the chunk.
    """
    values = chunks.values
    position = np.arange(values.size) - np.repeat(chunks.offsets[:-1], chunks.lengths)
    shift = np.uint64(64 - spec.bits)
    out = []
    for order in spec.orders:
        tables = _tables(values, order)
        key = tables[0][values]
        for back in range(1, order):  # token t_{i-back}; wraps at the array start (masked)
            key ^= tables[back][np.roll(values, back)]
        out.append(((key >> shift).astype(np.int64), position >= max(1, order - 1)))
    return out


def hashed_ngrams(chunks: Chunks, spec: FeatureSpec) -> tuple[np.ndarray, np.ndarray]:
    """(row, column) of every counted n-gram; order j's buckets are columns j * 2**bits + b."""
    row = np.repeat(np.arange(chunks.rows), chunks.lengths)
    pairs = [(row[mask], buckets[mask] + j * spec.n_features)
             for j, (buckets, mask) in enumerate(ngram_buckets(chunks, spec))]
    return np.concatenate([r for r, _ in pairs]), np.concatenate([c for _, c in pairs])


def design_matrix(chunks: Chunks, spec: FeatureSpec):
    """Sparse [rows, orders * 2**bits] matrix of each chunk's mean n-gram one-hots over its
    predicted positions (scipy CSR); a chunk with no predicted position has an empty row."""
    import scipy.sparse as sp

    rows, columns = hashed_ngrams(chunks, spec)
    per_row = np.maximum(predicted_counts(chunks), 1).astype(np.float64)
    shape = (chunks.rows, len(spec.orders) * spec.n_features)
    matrix = sp.csr_matrix((1.0 / per_row[rows], (rows, columns)), shape=shape)
    matrix.sum_duplicates()
    return matrix


def linear_scores(chunks: Chunks, spec: FeatureSpec, tables: np.ndarray, intercept: float
                  ) -> np.ndarray:
    """Mean over a chunk's predicted positions of the sum, over orders, of the order's weight
    table at the n-gram ending there, plus `intercept` (float64; one weight table per order,
    `tables` [len(orders), 2**bits]). This equals
    `design_matrix(chunks) @ tables.ravel() + intercept` up to summation order; a chunk with no
    predicted position gets the intercept."""
    per_token = per_token_columns(chunks, spec, tables).sum(axis=1)
    running = np.concatenate([[0.0], np.cumsum(per_token)])
    totals = running[chunks.offsets[1:]] - running[chunks.offsets[:-1]]
    return totals / np.maximum(predicted_counts(chunks), 1) + intercept


def ngram_counts(chunks: Chunks, spec: FeatureSpec) -> np.ndarray:
    """Counted n-grams per order and bucket: int64 [len(orders), 2**bits]."""
    return np.stack([
        np.bincount(buckets[mask], minlength=spec.n_features)
        for buckets, mask in ngram_buckets(chunks, spec)
    ])  # fmt: skip


def log_ratio(target: np.ndarray, pool: np.ndarray, smoothing: float = 1.0) -> np.ndarray:
    """Per order and bucket: log of the n-gram's add-`smoothing` frequency in the target data over
    its frequency in the pool (hashed n-gram DSIR). It is the cheap analogue of what fine-tuning
    taught the conditional, and it covers every n-gram, also those the sample never shows."""
    buckets = target.shape[1]
    p_target = (target + smoothing) / (target.sum(1, keepdims=True) + smoothing * buckets)
    p_pool = (pool + smoothing) / (pool.sum(1, keepdims=True) + smoothing * buckets)
    return np.log(p_target) - np.log(p_pool)


def per_token_columns(chunks: Chunks, spec: FeatureSpec, tables: np.ndarray) -> np.ndarray:
    """[positions, orders] value of each order's table at each counted n-gram (0 elsewhere)."""
    columns = [np.where(mask, table[buckets], 0.0)
               for (buckets, mask), table in zip(ngram_buckets(chunks, spec), tables)]
    return np.stack(columns, axis=1)
