"""The label oracle: target-like chunks first, then CoLoR's order."""

from __future__ import annotations

import numpy as np
import pytest

from colorfilter.errors import BadDataError
from colorfilter.evaluation.oracle import label_oracle


def test_target_like_first_then_by_score_ties_by_seq_id() -> None:
    seq_id = np.arange(10, 16, dtype=np.uint64)
    score = np.array([0.5, 0.9, 0.1, 0.9, 0.3, 0.2], dtype=np.float32)
    target_like = np.array([False, False, True, False, True, False])
    chosen = label_oracle(seq_id, score, target_like, [2, 3, 6])
    assert set(chosen) == {2.0, 3.0, 6.0}
    # 3 rows at tau 2: both target-like rows (whatever their score), then the best other row;
    # rows 11 and 13 tie on score and the smaller seq_id wins, as in CoLoR's top-k
    assert chosen[2.0].tolist() == [11, 12, 14]
    assert chosen[3.0].tolist() == [12, 14]
    assert chosen[6.0].tolist() == [14]  # the better-scored of the two target-like rows


def test_without_target_like_rows_it_is_colors_top_k() -> None:
    from colorfilter.selection import ArraySource, select_many

    rng = np.random.default_rng(0)
    seq_id = rng.permutation(np.arange(1000, dtype=np.uint64))
    score = rng.normal(size=1000).astype(np.float32)
    oracle = label_oracle(seq_id, score, np.zeros(1000, bool), [4, 16])
    color = select_many("color", ArraySource({"seq_id": seq_id, "score": score}), [4, 16])
    for tau in (4.0, 16.0):
        assert np.array_equal(oracle[tau], np.sort(color[tau]))


def test_nan_scores_and_misaligned_inputs_are_refused() -> None:
    seq_id = np.arange(3, dtype=np.uint64)
    with pytest.raises(BadDataError, match="1 of 3 rows have a NaN score"):
        label_oracle(seq_id, np.array([0.1, np.nan, 0.2]), np.zeros(3, bool), [2])
    with pytest.raises(ValueError, match="same length"):
        label_oracle(seq_id, np.zeros(2), np.zeros(3, bool), [2])
