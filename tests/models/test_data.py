"""Which chunks a run trains on, and in what order: seeded, independent of shard listing order."""

from __future__ import annotations

import shutil

import numpy as np
import pyarrow.parquet as pq

from colorfilter.io.token_shards import list_shards, pad_input_ids
from colorfilter.models.data import (
    epoch_order,
    load_rank_batches,
    read_chunk_index,
    select_token_budget,
    shuffled,
)

from .synthetic import SEQ_LEN


def test_pool_slice_ignores_listing_order_and_respects_the_budget(corpus, tmp_path):
    paths = list_shards(corpus.pool)
    renamed = tmp_path / "renamed"
    renamed.mkdir()
    for number, path in enumerate(reversed(paths)):  # same chunks, files listed the other way
        shutil.copy(path, renamed / f"z-{number}.parquet")
    budget = 20 * SEQ_LEN
    first = select_token_budget(paths, budget, seed=7)
    second = select_token_budget(list_shards(renamed), budget, seed=7)
    assert np.array_equal(first.seq_id, second.seq_id)
    tokens = int(first.n_tokens.sum())
    assert tokens >= budget and tokens - int(first.n_tokens[-1]) < budget
    other_seed = select_token_budget(paths, budget, seed=8)
    assert not np.array_equal(np.sort(first.seq_id), np.sort(other_seed.seq_id))


def test_pool_slice_is_a_prefix_of_the_full_shuffle(corpus):
    paths = list_shards(corpus.pool)
    everything = shuffled(read_chunk_index(paths), seed=3)
    for budget in (1, 5 * SEQ_LEN, 40 * SEQ_LEN, 10**9):
        chosen = select_token_budget(paths, budget, seed=3)
        assert np.array_equal(chosen.seq_id, everything.seq_id[: len(chosen)])
    assert len(select_token_budget(paths, 10**9, seed=3)) == len(everything)


def test_epochs_are_distinct_permutations(corpus):
    index = read_chunk_index(list_shards(corpus.train))
    order = epoch_order(index, epochs=2, seed=0)
    first, second = order[: len(index)], order[len(index) :]
    assert sorted(first) == sorted(second) == list(range(len(index)))
    assert not np.array_equal(first, second)


def test_ranks_split_each_global_batch_and_tokens_round_trip(corpus):
    paths = list_shards(corpus.pool)
    index = select_token_budget(paths, 10**9, seed=0)
    order, batch = np.arange(len(index)), 8
    steps = len(index) // batch
    ranks = [load_rank_batches(index, order, batch, steps, rank, 2) for rank in range(2)]
    source = {}
    for path in paths:
        table = pq.read_table(path, columns=["seq_id", "input_ids"])
        ids, lengths = pad_input_ids(table.column("input_ids"), SEQ_LEN, 0)
        for seq_id, row, n in zip(table.column("seq_id").to_numpy(), ids, lengths, strict=True):
            source[int(seq_id)] = (row, n)
    for step in (0, steps - 1):
        seq_ids = index.seq_id[ranks[0].global_positions(step)]
        for rank, batches in enumerate(ranks):
            input_ids, n_tokens = batches.local_batch(step, SEQ_LEN, pad_id=0)
            assert len(input_ids) == batch // 2
            for row, n, seq_id in zip(input_ids, n_tokens, seq_ids[rank::2], strict=True):
                assert np.array_equal(row, source[int(seq_id)][0]) and n == source[int(seq_id)][1]
    real, predicted = ranks[0].step_token_counts(0)
    assert predicted == real - batch
