"""Hashed n-gram features: the fast scoring path equals the sparse design, hashing is stable."""

from __future__ import annotations

import numpy as np
import pyarrow as pa
import pytest

from colorfilter.distill.features import (
    Chunks,
    FeatureSpec,
    design_matrix,
    linear_scores,
    log_ratio,
    ngram_buckets,
    ngram_counts,
)


def random_chunks(rows: int, seed: int = 0, vocab: int = 5000) -> Chunks:
    rng = np.random.default_rng(seed)
    lengths = rng.integers(1, 40, rows)
    lengths[::7] = 1  # one-token chunks predict nothing
    offsets = np.concatenate([[0], np.cumsum(lengths)])
    return Chunks(rng.integers(0, vocab, offsets[-1]), offsets)


@pytest.mark.parametrize("orders", [(1,), (1, 2), (1, 2, 3)])
def test_linear_scores_equal_the_sparse_design(orders):
    chunks = random_chunks(60)
    spec = FeatureSpec(orders, bits=12)
    tables = np.random.default_rng(1).normal(size=(len(orders), spec.n_features))
    expected = design_matrix(chunks, spec) @ tables.ravel() + 0.25
    np.testing.assert_allclose(linear_scores(chunks, spec, tables, 0.25), expected, atol=1e-12)
    assert np.all(linear_scores(chunks, spec, tables, 0.25)[chunks.lengths <= 1] == 0.25)


def test_only_ngrams_ending_at_predicted_positions_count():
    spec = FeatureSpec((1, 2, 3), bits=10)
    chunks = Chunks(np.array([5, 6, 7, 8, 9, 10]), np.array([0, 4, 5, 6]))  # lengths 4, 1, 1
    counts = ngram_counts(chunks, spec)
    assert counts.sum(axis=1).tolist() == [3, 3, 2]  # positions 1..3 of the first chunk only


def test_an_ngram_hashes_the_same_wherever_it_stands():
    """A bigram's bucket depends on its two tokens only: not on the chunk, the shard, the
    position, or what else is in the array (so shards score independently)."""
    spec = FeatureSpec((2,), bits=16)
    first = Chunks(np.array([1, 2, 3, 7, 8]), np.array([0, 5]))
    second = Chunks(np.array([9, 9, 7, 8, 4000, 2, 3]), np.array([0, 3, 7]))
    buckets_first, _ = ngram_buckets(first, spec)[0]
    buckets_second, _ = ngram_buckets(second, spec)[0]
    assert buckets_first[4] == buckets_second[3]  # (7, 8) ends at index 4 and at index 3
    assert buckets_first[2] == buckets_second[6]  # (2, 3)
    assert len({int(b) for b in buckets_first[1:]}) == 4


def test_hashing_is_pinned():
    """Saved models name FEATURES_VERSION; a change of hashing without a new version would make
    every saved cheap scorer silently wrong."""
    spec = FeatureSpec((1, 2), bits=18)
    chunks = Chunks(np.array([0, 1, 2, 50279]), np.array([0, 4]))
    ours = [b[m].tolist() for b, m in ngram_buckets(chunks, spec)]
    assert ours == PINNED


PINNED = [[241911, 236325, 77545], [208843, 91431, 187069]]  # FEATURES_VERSION 1


def test_take_and_from_arrow_keep_rows_aligned():
    column = pa.array([[1, 2, 3], [4], [], [5, 6]], pa.list_(pa.int32())).slice(1)
    chunks = Chunks.from_arrow(column)
    assert chunks.lengths.tolist() == [1, 0, 2] and chunks.values.tolist() == [4, 5, 6]
    picked = chunks.take(np.array([2, 0]))
    assert picked.values.tolist() == [5, 6, 4] and picked.offsets.tolist() == [0, 2, 3]
    padded = Chunks.from_padded(np.array([[7, 8, 0], [9, 0, 0]]), np.array([2, 1]))
    assert padded.values.tolist() == [7, 8, 9] and padded.offsets.tolist() == [0, 2, 3]


def test_log_ratio_is_the_smoothed_frequency_ratio():
    target = np.array([[3, 1, 0, 0]])
    pool = np.array([[1, 1, 1, 1]])
    ratio = log_ratio(target, pool, smoothing=1.0)
    expected = np.log(np.array([4, 2, 1, 1]) / 8) - np.log(np.array([2, 2, 2, 2]) / 8)
    np.testing.assert_allclose(ratio[0], expected)
