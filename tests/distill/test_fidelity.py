"""The held-out fidelity report and the cascade's recall estimate."""

from __future__ import annotations

import numpy as np
import pytest

from colorfilter.distill.fidelity import (
    clopper_pearson,
    fidelity,
    recall_estimate,
    top_threshold,
)
from colorfilter.distill.sample import SampleSpec


def test_clopper_pearson_matches_known_intervals():
    # exact binomial intervals (e.g. R's binom.test): 0 of 10, 10 of 10, 7 of 10
    assert clopper_pearson(0, 10) == pytest.approx((0.0, 0.30849), abs=1e-5)
    assert clopper_pearson(10, 10) == pytest.approx((0.69151, 1.0), abs=1e-5)
    assert clopper_pearson(7, 10) == pytest.approx((0.34755, 0.93326), abs=1e-5)
    assert clopper_pearson(0, 0) == (0.0, 1.0)


def test_recall_estimate_counts_held_out_top_chunks_that_are_candidates():
    exact = np.array([5.0, 4.0, 3.0, 2.0, 1.0, np.nan])
    candidate = np.array([True, False, True, True, False, True])
    report = recall_estimate(exact, candidate, threshold=3.0, sample_share=0.1)
    assert report["held_out_top_chunks"] == 3 and report["held_out_top_candidates"] == 2
    assert report["estimate"] == pytest.approx(0.1 + 0.9 * 2 / 3, abs=1e-6)
    low, high = clopper_pearson(2, 3)
    assert report["ci95"] == pytest.approx([0.1 + 0.9 * low, 0.1 + 0.9 * high], abs=1e-6)


def test_the_interval_covers_the_truth_as_often_as_it_says():
    """Simulated held-out samples of a pool whose candidate recall is known: the estimate's
    interval holds the true recall in at least 95% of draws."""
    rng = np.random.default_rng(0)
    truth, covered = 0.93, 0
    for _ in range(400):
        top = rng.random(60) < 0.5
        candidate = np.where(top, rng.random(60) < truth, rng.random(60) < 0.2)
        exact = np.where(top, 1.0, 0.0)
        low, high = recall_estimate(exact, candidate, 0.5, 0.0)["ci95"]
        covered += low <= truth <= high
    assert covered / 400 >= 0.95


def test_top_threshold_and_fidelity_per_tau():
    scores = np.arange(100, dtype=float)
    assert top_threshold(scores, 4) == 75.0 and top_threshold(scores, 1000) == 99.0
    report = fidelity(scores + 0.1, scores, [4, 16])
    assert report["spearman"] == 1.0 and report["top"]["4"]["recall"] == 1.0
    reverse = fidelity(-scores, scores, [4])
    assert reverse["top"]["4"]["precision"] == 0.0


def test_the_sample_is_a_seeded_hash_of_seq_id():
    ids = np.arange(200_000, dtype=np.uint64)
    spec = SampleSpec(seed=3, fraction=0.05, holdout_fraction=0.25)
    sample = spec.in_sample(ids)
    assert 0.045 < sample.mean() < 0.055
    held = spec.in_holdout(ids)
    assert not (held & ~sample).any() and 0.2 < held.sum() / sample.sum() < 0.3
    shuffled = np.random.default_rng(0).permutation(ids)
    assert np.array_equal(spec.in_sample(shuffled), sample[shuffled.astype(np.int64)])
    other = SampleSpec(seed=4, fraction=0.05, holdout_fraction=0.25).in_sample(ids)
    assert (other & sample).sum() < 0.2 * sample.sum()
    assert SampleSpec(0, 1.0, 0.0).in_sample(ids).all()
