"""Streaming exact top-k: equal to a full sort however the rows are split, with bounded buffers."""

from __future__ import annotations

import math
import tempfile
from pathlib import Path

import numpy as np
import pyarrow as pa
import pyarrow.parquet as pq
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from colorfilter.errors import BadDataError
from colorfilter.selection.sources import ArraySource, DerivedKey, ParquetSource, sortable_key
from colorfilter.selection.topk import (
    topk,
    topk_arrays,
    topk_parquet,
)

TIED_FLOATS = [-math.inf, -2.5, -1e-45, -0.0, 0.0, 1e-45, 0.5, 3.0e38, math.inf]


def full_sort_topk(seq_id, key, k: int, direction: str) -> np.ndarray:
    """The reference: Python's sort on (key, seq_id) in exact Python numbers."""
    numbers = [float(x) if np.asarray(key).dtype.kind == "f" else int(x) for x in key]
    sign = -1 if direction == "max" else 1
    order = sorted(range(len(seq_id)), key=lambda i: (sign * numbers[i], int(seq_id[i])))
    return np.sort(np.asarray([seq_id[i] for i in order[:k]], dtype=np.uint64))


@st.composite
def keys(draw, n: int) -> np.ndarray:
    dtype = draw(st.sampled_from([np.float32, np.float64, np.int64, np.uint64]))
    tied = draw(st.booleans())
    if dtype in (np.float32, np.float64):
        width = 32 if dtype == np.float32 else 64
        values = st.sampled_from(TIED_FLOATS) if tied else st.floats(allow_nan=False, width=width)
    elif dtype == np.int64:
        values = st.integers(-2, 2) if tied else st.integers(-(2**63), 2**63 - 1)
    else:
        values = st.integers(0, 3) if tied else st.integers(0, 2**64 - 1)
    return np.asarray(draw(st.lists(values, min_size=n, max_size=n)), dtype=dtype)


@st.composite
def split_rows(draw):
    """Unique seq_ids (some near 2^64), keys with many ties, cut into random parts."""
    n = draw(st.integers(0, 60))
    ids = st.integers(0, 2**64 - 1) | st.integers(0, 100)
    seq_id = np.asarray(draw(st.lists(ids, min_size=n, max_size=n, unique=True)), np.uint64)
    key = draw(keys(n))
    cuts = sorted(draw(st.lists(st.integers(0, n), max_size=4)))
    bounds = [0, *cuts, n]
    parts = [{"seq_id": seq_id[a:b], "key": key[a:b]} for a, b in zip(bounds[:-1], bounds[1:])]
    return seq_id, key, parts


@settings(max_examples=150, deadline=None)
@given(
    rows=split_rows(),
    direction=st.sampled_from(["max", "min"]),
    budget=st.integers(1, 70),
    k_fraction=st.floats(0, 1.1),
    batch_rows=st.integers(1, 50),
)
def test_topk_equals_full_sort(rows, direction, budget, k_fraction, batch_rows):
    seq_id, key, parts = rows
    k = int(k_fraction * len(seq_id))
    source = ArraySource(parts, batch_rows=batch_rows)
    result = topk(source, k, key="key", direction=direction, max_buffer_rows=budget)
    assert np.array_equal(result.seq_ids[k], full_sort_topk(seq_id, key, k, direction))
    assert all(stats.buffered_rows <= budget for stats in result.passes)


@settings(max_examples=25, deadline=None)
@given(rows=split_rows(), direction=st.sampled_from(["max", "min"]), budget=st.integers(1, 20))
def test_topk_over_parquet_shards_equals_full_sort(rows, direction, budget):
    seq_id, key, parts = rows
    with tempfile.TemporaryDirectory() as tmp:
        paths = []
        for index, part in enumerate(parts):
            path = Path(tmp) / f"scores-{index:03d}.parquet"
            pq.write_table(pa.table(part), path)
            paths.append(path)
        for k in {0, len(seq_id) // 3, len(seq_id)}:
            got = topk_parquet(
                paths[::-1], k, key="key", direction=direction, batch_rows=7, max_buffer_rows=budget
            )
            assert np.array_equal(got, full_sort_topk(seq_id, key, k, direction))


def test_several_ks_share_passes_and_match_single_runs():
    rng = np.random.default_rng(0)
    n = 5000
    data = {
        "seq_id": rng.permutation(n).astype(np.uint64),
        "score": rng.integers(0, 40, n).astype(np.float32),
    }
    ks = [n // 7, n // 16, n // 64, n // 64, 0, n + 5]
    shared = topk(data, ks, max_buffer_rows=100)
    for k in ks:
        alone = topk(data, k, max_buffer_rows=100)
        assert np.array_equal(shared.seq_ids[k], alone.seq_ids[k])
        assert np.array_equal(
            alone.seq_ids[k], full_sort_topk(data["seq_id"], data["score"], k, "max")
        )
    assert len(shared.seq_ids[n + 5]) == n
    assert len(shared.passes) <= 4
    assert shared.peak_buffered_rows <= 100  # one budget for all ks together


def test_small_budget_refines_into_seq_id_digits():
    """All keys equal and a 1-row budget: the answer comes from seq_id digits alone."""
    seq_id = np.array([2**64 - 1, 5, 2**40, 7, 2**63, 6], dtype=np.uint64)
    key = np.zeros(6, dtype=np.float32)
    result = topk({"seq_id": seq_id, "score": key}, 3, max_buffer_rows=1)
    assert result.seq_ids[3].tolist() == [5, 6, 7]
    assert result.passes[0].modes == ("histogram",)
    assert len(result.passes) > 2


def test_in_memory_rows_fit_budget_in_one_pass():
    data = {"seq_id": np.arange(10, dtype=np.uint64), "score": np.arange(10, dtype=np.float32)}
    result = topk(data, [3, 5])
    assert result.seq_ids[3].tolist() == [7, 8, 9]
    assert [stats.modes for stats in result.passes] == [("buffer", "buffer")]
    assert result.peak_buffered_rows == 10  # the two ks share one buffer of the same rows


def test_sortable_key_orders_like_numbers():
    rng = np.random.default_rng(1)
    values = np.concatenate(
        [rng.normal(size=500) * 10.0 ** rng.integers(-40, 38, 500), TIED_FLOATS]
    ).astype(np.float32)
    for direction, sign in (("min", 1), ("max", -1)):
        ordered, bits = sortable_key(values, direction)
        assert bits == 32 and ordered.dtype == np.uint64
        by_bits = values[np.argsort(ordered, kind="stable")].astype(np.float64) * sign
        assert np.all(np.diff(by_bits) >= 0)
    assert (
        sortable_key(np.array([-0.0, 0.0]), "max")[0].tolist()
        == [sortable_key(np.array([0.0]), "max")[0][0]] * 2
    )


def test_derived_key_streams_from_parquet(tmp_path):
    rng = np.random.default_rng(2)
    table = pa.table(
        {"seq_id": np.arange(300, dtype=np.uint64), "cond_loss": rng.random(300).astype(np.float32)}
    )
    paths = [tmp_path / "a.parquet", tmp_path / "b.parquet"]
    pq.write_table(table.slice(0, 100), paths[0])
    pq.write_table(table.slice(100), paths[1])
    negated = DerivedKey(("cond_loss",), lambda batch: -batch["cond_loss"], "negated cond_loss")
    streamed = topk(ParquetSource(paths), 30, key=negated, max_buffer_rows=4).seq_ids[30]
    direct = topk_arrays(table["seq_id"], table["cond_loss"], 30, direction="min")
    assert np.array_equal(streamed, direct)


def test_nan_keys_are_refused_with_their_count():
    key = np.array([1.0, np.nan, 2.0, np.nan, np.nan], dtype=np.float32)
    parts = [
        {"seq_id": np.arange(2, dtype=np.uint64), "score": key[:2]},
        {"seq_id": np.arange(2, 5, dtype=np.uint64), "score": key[2:]},
    ]
    with pytest.raises(BadDataError, match="3 of 5 rows have a NaN column 'score'"):
        topk(parts, 1)


def test_null_keys_and_negative_seq_ids_are_refused(tmp_path):
    path = tmp_path / "nulls.parquet"
    pq.write_table(
        pa.table(
            {"seq_id": pa.array([1, 2], pa.uint64()), "score": pa.array([1.0, None], pa.float32())}
        ),
        path,
    )
    with pytest.raises(BadDataError, match="1 nulls"):
        topk_parquet([path], 1)
    with pytest.raises(BadDataError, match="negative seq_ids"):
        topk_arrays(np.array([-1, 2]), np.array([1.0, 2.0]), 1)


@pytest.mark.parametrize(
    ("kwargs", "error"),
    [
        ({"ks": -1}, ValueError),
        ({"ks": 1.5}, TypeError),
        ({"ks": 1, "max_buffer_rows": 0}, ValueError),
        ({"ks": 1, "direction": "up"}, ValueError),
        ({"ks": 1, "key": "missing"}, KeyError),
    ],
)
def test_bad_arguments(kwargs, error):
    data = {"seq_id": np.arange(3, dtype=np.uint64), "score": np.ones(3, np.float32)}
    with pytest.raises(error):
        topk(data, **kwargs)


def test_unrankable_or_changing_key_types_are_refused():
    with pytest.raises(TypeError, match="dtype"):
        topk_arrays(np.arange(2), np.array(["a", "b"]), 1)
    parts = [
        {"seq_id": np.arange(2, dtype=np.uint64), "score": np.ones(2, np.float32)},
        {"seq_id": np.arange(2, 4, dtype=np.uint64), "score": np.ones(2, np.float64)},
    ]
    with pytest.raises(TypeError, match="changes width"):
        topk(parts, 1, max_buffer_rows=1)


def test_empty_inputs_select_nothing(tmp_path):
    empty = {"seq_id": np.empty(0, np.uint64), "score": np.empty(0, np.float32)}
    assert topk(empty, 5).seq_ids[5].size == 0
    assert topk_parquet([], 5).size == 0
    path = tmp_path / "empty.parquet"
    pq.write_table(pa.table(empty), path)
    assert topk_parquet([path], 5).dtype == np.uint64


def test_identical_rows_beyond_the_budget_are_taken_as_they_come():
    """Duplicate (key, seq_id) rows cannot be ordered further: any of them is the same answer."""
    data = {"seq_id": np.array([5, 5, 5, 1, 5], np.uint64), "score": np.zeros(5, np.float32)}
    result = topk(data, 3, max_buffer_rows=1)
    assert result.seq_ids[3].tolist() == [1, 5, 5]
    assert result.passes[-1].modes == ("take_first",)
