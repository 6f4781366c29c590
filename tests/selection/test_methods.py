"""Selection methods: counts, orderings, ties, seeds and bad input."""

from __future__ import annotations

import math

import numpy as np
import pyarrow as pa
import pyarrow.parquet as pq
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from colorfilter.errors import BadDataError
from colorfilter.selection import (
    METHODS,
    Memory,
    ParquetSource,
    batchwise_select,
    n_selected,
    ranking_key,
    select,
    select_many,
)
from colorfilter.selection.methods import seeded_hash

TOPK_METHODS = [method for method in METHODS if method != "color_batchwise"]
SEEDED_METHODS = ["random", "color_softmax", "color_batchwise"]


def scored(n: int, seed: int = 0, distinct: bool = False) -> dict[str, np.ndarray]:
    """Score columns as the scoring stage writes them; quantised losses give many ties."""
    rng = np.random.default_rng(seed)
    seq_id = rng.choice(10 * n + 10, size=n, replace=False).astype(np.uint64)
    prior_loss = (np.round(rng.normal(3.5, 0.3, n) * 64) / 64).astype(np.float32)
    cond_loss = (prior_loss - np.round(rng.normal(0.05, 0.1, n) * 64) / 64).astype(np.float32)
    score = prior_loss - cond_loss
    if distinct:
        score = rng.permutation(n).astype(np.float32) / n
    return {
        "seq_id": seq_id,
        "prior_loss": prior_loss,
        "cond_loss": cond_loss,
        "score": score,
        "dsir_weight": rng.normal(size=n).astype(np.float32),
        "cheap_score": (score + rng.normal(0, 0.05, n)).astype(np.float32),
        "n_tokens": np.full(n, 512, np.int32),
    }


def reference_topk(columns, key: str, k: int, best: str) -> np.ndarray:
    sign = -1.0 if best == "max" else 1.0
    order = np.lexsort((columns["seq_id"], sign * columns[key].astype(np.float64)))
    return np.sort(columns["seq_id"][order[:k]])


def shuffled(columns, seed: int, parts: int = 3) -> list[dict[str, np.ndarray]]:
    """The same rows in another order, split into several parts (like shards listed anew)."""
    order = np.random.default_rng(seed).permutation(len(columns["seq_id"]))
    return [
        {name: values[chunk] for name, values in columns.items()}
        for chunk in np.array_split(order, parts)
    ]


@pytest.mark.parametrize(
    ("n_rows", "tau", "expected"),
    [
        (0, 7, 0),
        (1, 7, 1),
        (6, 7, 1),
        (7, 7, 1),
        (14, 7, 2),
        (100, 16, 6),
        (1000, 1.5, 666),
        (64, 64, 1),
        (10**9, 7, 142857142),
        (5, 1, 5),
    ],
)
def test_n_selected_is_floor_but_at_least_one(n_rows, tau, expected):
    assert n_selected(n_rows, tau) == expected


@pytest.mark.parametrize("tau", [0.5, 0, -3, math.nan, math.inf])
def test_bad_tau_is_refused(tau):
    with pytest.raises(ValueError, match="tau"):
        select("color", scored(10), tau)


def test_non_numeric_tau_is_refused():
    with pytest.raises(TypeError, match="tau"):
        n_selected(10, "7")


@settings(max_examples=30, deadline=None)
@given(n=st.integers(0, 300), tau=st.floats(1, 100), method=st.sampled_from(TOPK_METHODS))
def test_every_topk_method_keeps_exactly_n_selected(n, tau, method):
    assert len(select(method, scored(n), tau, seed=3)) == n_selected(n, tau)


@pytest.mark.parametrize(
    ("method", "key", "best"),
    [
        ("color", "score", "max"),
        ("conditional_only", "cond_loss", "min"),
        ("prior_only", "prior_loss", "min"),
        ("dsir", "dsir_weight", "max"),
        ("color_distilled", "cheap_score", "max"),
    ],
)
def test_column_methods_rank_by_their_column_with_ties_by_seq_id(method, key, best):
    columns = scored(2000)
    for tau in (7, 16, 64):
        expected = reference_topk(columns, key, n_selected(2000, tau), best)
        assert np.array_equal(select(method, columns, tau), expected)
    assert ranking_key(method).direction == best


def test_all_tied_scores_keep_the_smallest_seq_ids():
    columns = {
        "seq_id": np.array([9, 3, 7, 1, 5], dtype=np.uint64),
        "score": np.zeros(5, np.float32),
    }
    assert select("color", columns, 2).tolist() == [1, 3]


def test_results_are_sorted_uint64():
    for method in METHODS:
        chosen = select(method, scored(500), 7)
        assert chosen.dtype == np.uint64 and np.all(np.diff(chosen.astype(np.int64)) > 0)


@pytest.mark.parametrize("method", METHODS)
def test_selection_ignores_row_order_and_splits(method):
    columns = scored(3000)
    expected = select(method, columns, 16, seed=5, block_n=8)
    for seed in (1, 2):
        assert np.array_equal(
            select(method, shuffled(columns, seed), 16, seed=5, block_n=8), expected
        )


@pytest.mark.parametrize("method", SEEDED_METHODS)
def test_seeded_methods_repeat_with_a_seed_and_vary_across_seeds(method):
    columns = scored(3000)
    first = select(method, columns, 16, seed=11, block_n=8)
    assert np.array_equal(first, select(method, columns, 16, seed=11, block_n=8))
    assert not np.array_equal(first, select(method, columns, 16, seed=12, block_n=8))


def test_random_is_uniform():
    columns = scored(50)
    counts = np.zeros(50)
    position = {int(s): i for i, s in enumerate(columns["seq_id"])}
    for seed in range(400):
        for seq in select("random", columns, 5, seed=seed):
            counts[position[int(seq)]] += 1
    assert np.allclose(counts / 400, 0.2, atol=0.08)


def test_softmax_samples_in_proportion_to_exp_score_over_temperature():
    columns = {
        "seq_id": np.array([10, 20, 30], np.uint64),
        "score": np.array([0.0, 0.5, 1.0], np.float32),
    }
    draws = [
        int(select("color_softmax", columns, 3, seed=s, temperature=0.5)[0]) for s in range(3000)
    ]
    frequency = np.array([draws.count(seq) for seq in (10, 20, 30)]) / 3000
    expected = np.exp(np.array([0.0, 1.0, 2.0]))
    assert np.allclose(frequency, expected / expected.sum(), atol=0.03)


def test_softmax_at_low_temperature_is_color():
    columns = scored(2000, distinct=True)
    assert np.array_equal(
        select("color_softmax", columns, 16, temperature=1e-6), select("color", columns, 16)
    )


def reference_batchwise(columns, tau: float, block_n: int, seed: int) -> np.ndarray:
    """Algorithm 1 written out block by block."""
    seq_id, score = columns["seq_id"], columns["score"]
    permuted = np.lexsort((seq_id, seeded_hash(seq_id, seed, "permutation")))
    size = math.floor(tau * block_n + 0.5)
    kept = []
    for start in range(0, len(seq_id), size):
        block = permuted[start : start + size]
        quota = block_n if len(block) == size else math.floor(len(block) / tau)
        best = sorted(block, key=lambda i: (-float(score[i]), int(seq_id[i])))[:quota]
        kept += [seq_id[i] for i in best]
    return np.sort(np.asarray(kept, np.uint64))


@pytest.mark.parametrize(("n", "tau", "block_n"), [(1000, 4, 8), (1000, 7, 10), (37, 2.5, 3)])
def test_batchwise_is_algorithm_1(n, tau, block_n):
    columns = scored(n)
    chosen = batchwise_select(columns["seq_id"], columns["score"], tau, block_n=block_n, seed=4)
    assert np.array_equal(chosen, reference_batchwise(columns, tau, block_n, 4))
    size = math.floor(tau * block_n + 0.5)
    assert len(chosen) == (n // size) * block_n + math.floor((n % size) / tau)


@pytest.mark.parametrize("max_buffer_rows", [64, 1000, 1 << 22])
def test_batchwise_streamed_in_buckets_equals_in_memory(tmp_path, max_buffer_rows):
    """Few rows per bucket (many buckets, blocks straddling them) or one bucket: same rows."""
    columns = scored(5000, seed=9)
    paths = []
    for index, part in enumerate(shuffled(columns, 3, parts=4)):
        paths.append(tmp_path / f"{index}.parquet")
        pq.write_table(pa.table(part), paths[-1])
    taus = [1, 2.5, 7, 16]
    streamed = select_many(
        "color_batchwise",
        ParquetSource(paths, batch_rows=300),
        taus,
        block_n=10,
        seed=5,
        memory=Memory(max_buffer_rows, str(tmp_path)),
    )
    assert not list(tmp_path.glob(".batchwise-*"))  # the spill is removed
    for tau in taus:
        expected = batchwise_select(columns["seq_id"], columns["score"], tau, block_n=10, seed=5)
        assert np.array_equal(streamed[tau], expected), tau
        assert streamed[tau].dtype == np.uint64


def test_batchwise_with_one_block_is_global_topk():
    columns = scored(500)
    assert np.array_equal(
        select("color_batchwise", columns, 7, block_n=256), select("color", columns, 7)
    )
    assert len(select("color_batchwise", columns, 1, block_n=8)) == 500


def test_select_many_matches_single_selections_and_nests():
    columns = scored(4000)
    for method in METHODS:
        many = select_many(method, columns, seed=2, block_n=16)
        assert list(many) == [7, 16, 32, 64]
        for tau, chosen in many.items():
            assert np.array_equal(chosen, select(method, columns, tau, seed=2, block_n=16))
        if method != "color_batchwise":
            assert set(many[64]) <= set(many[32]) <= set(many[16]) <= set(many[7])


@pytest.mark.parametrize("method", METHODS)
def test_streaming_over_parquet_equals_in_memory(tmp_path, method):
    columns = scored(3000)
    paths = []
    for index, part in enumerate(shuffled(columns, seed=9, parts=4)):
        paths.append(tmp_path / f"scores-{index}.parquet")
        pq.write_table(pa.table(part), paths[-1])
    streamed = select_many(
        method,
        ParquetSource(paths[::-1], batch_rows=100),
        [7, 64],
        seed=1,
        memory=Memory(max_buffer_rows=16),
        block_n=16,
    )
    for tau in (7, 64):
        assert np.array_equal(streamed[tau], select(method, columns, tau, seed=1, block_n=16))


def test_arrow_table_input():
    columns = scored(300)
    assert np.array_equal(select("color", pa.table(columns), 7), select("color", columns, 7))


@pytest.mark.parametrize("method", METHODS)
def test_nan_is_refused_with_its_count(method):
    columns = scored(100)
    for name in ("score", "cond_loss", "prior_loss", "dsir_weight", "cheap_score"):
        columns[name][[3, 50]] = np.nan
    if method == "random":  # random reads only seq_id: there is no key to be NaN
        assert len(select(method, columns, 7)) == n_selected(100, 7)
        return
    with pytest.raises(BadDataError, match="2 of 100 rows have a NaN"):
        select(method, columns, 7)


@pytest.mark.parametrize("method", METHODS)
def test_empty_input_selects_nothing(method):
    chosen = select_many(method, scored(0), [7, 64])
    assert all(len(c) == 0 and c.dtype == np.uint64 for c in chosen.values())


def test_bad_method_arguments():
    columns = scored(10)
    with pytest.raises(ValueError, match="known: color, color_batchwise"):
        select("colour", columns, 7)
    with pytest.raises(KeyError, match="dsir_weight"):
        select("dsir", {"seq_id": columns["seq_id"], "score": columns["score"]}, 7)
    with pytest.raises(ValueError, match="temperature"):
        select("color_softmax", columns, 7, temperature=0.0)
    with pytest.raises(TypeError, match="seed"):
        select("random", columns, 7, seed=1.5)
    with pytest.raises(ValueError, match="block_n"):
        select("color_batchwise", columns, 7, block_n=0)
