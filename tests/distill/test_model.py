"""The cheap scorer: scikit-learn's ridge on per-position deltas, folded into weight tables."""

from __future__ import annotations

import numpy as np
import pytest
from scipy.stats import spearmanr

from colorfilter.distill.features import Chunks, FeatureSpec, ngram_counts
from colorfilter.distill.model import CheapModel, TrainingSet, fit, position_design
from tests.distill.test_features import random_chunks

SPEC = FeatureSpec((1, 2), bits=14)


def synthetic(rows: int, seed: int, truth: np.ndarray) -> TrainingSet:
    """Chunks whose per-position delta is a fixed weight of its token plus noise (a model the
    ridge can learn), with the chunk score their mean, as the LM pair's would be."""
    chunks = random_chunks(rows, seed, vocab=300)
    rng = np.random.default_rng(seed + 100)
    position = np.arange(chunks.values.size) - np.repeat(chunks.offsets[:-1], chunks.lengths)
    predicted = position >= 1
    deltas = truth[chunks.values[predicted]] + rng.normal(0, 0.3, int(predicted.sum()))
    starts = np.concatenate([[0], np.cumsum(np.maximum(chunks.lengths - 1, 0))])
    sums = np.concatenate([[0.0], np.cumsum(deltas)])
    counts = np.maximum(chunks.lengths - 1, 1)
    scores = (sums[starts[1:]] - sums[starts[:-1]]) / counts
    seq_ids = np.arange(rows, dtype=np.uint64) + np.uint64(seed * 10_000)
    return TrainingSet(seq_ids, chunks, deltas, scores)


@pytest.fixture(scope="module")
def fitted():
    truth = np.random.default_rng(0).normal(0, 1, 300)
    train, held = synthetic(400, 1, truth), synthetic(200, 2, truth)
    priors = np.zeros((2, SPEC.n_features))
    return fit(train, SPEC, priors, [0.1, 10.0], seed=0), held


def test_the_fitted_model_ranks_held_out_chunks(fitted):
    model, held = fitted
    keep = held.chunks.lengths > 1
    rho = spearmanr(model.predict(held.chunks)[keep], held.scores[keep]).statistic
    assert rho > 0.9
    assert model.info["alpha"] in (0.1, 10.0) and model.info["train_chunks"] == 400
    assert set(model.info["cv_spearman"]) == {"0.1", "10.0"}


def test_saved_and_loaded_model_gives_the_same_cheap_scores(fitted):
    model, held = fitted
    files = model.files()
    again = CheapModel.from_files(files["weights.npy"], files["model.json"])
    assert np.array_equal(again.predict(held.chunks), model.predict(held.chunks))
    assert again.digest == model.digest and again.spec == model.spec


def test_a_changed_weights_file_is_refused(fitted):
    model, _ = fitted
    files = model.files()
    damaged = bytearray(files["weights.npy"])
    damaged[-3] ^= 0xFF
    with pytest.raises(ValueError, match="sha256"):
        CheapModel.from_files(bytes(damaged), files["model.json"])


def test_take_keeps_each_chunks_deltas():
    truth = np.zeros(300)
    data = synthetic(30, 3, truth)
    part = data.take(np.array([5, 2]))
    predicted = np.maximum(data.chunks.lengths - 1, 0)
    starts = np.concatenate([[0], np.cumsum(predicted)])
    expected = np.concatenate([data.deltas[starts[r]:starts[r + 1]] for r in (5, 2)])
    np.testing.assert_array_equal(part.deltas, expected)
    assert part.seq_ids.tolist() == [data.seq_ids[5], data.seq_ids[2]]


def test_the_prior_columns_are_folded_into_the_tables():
    """One design row per predicted position: one-hots of each order, then each order's prior
    value at that n-gram; the model's tables add the fitted prior scale."""
    chunks = Chunks(np.array([1, 2, 3, 4]), np.array([0, 4]))
    priors = np.arange(2 * SPEC.n_features, dtype=float).reshape(2, -1) / SPEC.n_features
    design = position_design(chunks, SPEC, priors)
    assert design.shape == (3, 2 * SPEC.n_features + 2)
    assert (design[:, : 2 * SPEC.n_features].sum(axis=1) == 2).all()
    assert ngram_counts(chunks, SPEC).sum() == 6
