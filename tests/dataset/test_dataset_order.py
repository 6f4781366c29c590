"""The seeded row order: a bijective hash, deterministic, seed-dependent."""

from __future__ import annotations

import numpy as np
from hypothesis import given, settings
from hypothesis import strategies as st

from colorfilter.dataset.order import shuffle_keys, shuffled_order


@settings(max_examples=50, deadline=None)
@given(
    ids=st.lists(st.integers(0, 2**64 - 1), unique=True, max_size=200),
    seed=st.integers(0, 2**63),
)
def test_order_is_a_permutation_that_ignores_input_order(ids, seed):
    seq_ids = np.array(ids, dtype=np.uint64)
    order = shuffled_order(seq_ids, seed)
    assert sorted(order.tolist()) == sorted(ids)
    np.testing.assert_array_equal(shuffled_order(seq_ids[::-1], seed), order)
    assert len(set(shuffle_keys(seq_ids, seed).tolist())) == len(ids)


def test_seed_dependence():
    ids = np.arange(1000, dtype=np.uint64)
    assert not np.array_equal(shuffled_order(ids, 1), shuffled_order(ids, 2))
    np.testing.assert_array_equal(shuffled_order(ids, 1), shuffled_order(ids.copy(), 1))
