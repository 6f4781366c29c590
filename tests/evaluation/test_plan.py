"""The pool's passes (census, survey) give the numbers an in-memory index of every row gives:
labels as codes, compositions, source groups, score moments, short chunks, digests, the located
chunks of a selection and a random-curve run's first pass over the pool."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pyarrow as pa
import pyarrow.parquet as pq
import pytest

from colorfilter.evaluation.bysource import Moments, composition, source_groups
from colorfilter.evaluation.packed import PackedIds
from colorfilter.evaluation.plan import repeated_positions, selection_digest
from colorfilter.evaluation.pool import is_target, iter_shards, take_census
from colorfilter.evaluation.survey import SurveyRequest, survey
from colorfilter.io.location import as_location
from colorfilter.models.data import ChunkIndex, epoch_order

SEQ_LEN = 64


def write_pool(tmp_path: Path, parts: list[list], seed: int, scores: bool = False) -> list:
    """Token shards with these `source` labels per shard, seq_ids shuffled across shards (their
    ranges interleave), some chunks shorter than SEQ_LEN; with `scores`, score shards (rows in
    another order than the token rows) in tmp_path/scores."""
    rng = np.random.default_rng(seed)
    n = sum(len(part) for part in parts)
    ids = rng.permutation(n).astype(np.uint64) * np.uint64(3) + np.uint64(5)
    lengths = np.where(rng.random(n) < 0.2, rng.integers(1, SEQ_LEN, n), SEQ_LEN).astype(np.int32)
    (tmp_path / "scores").mkdir(exist_ok=True)
    paths, start = [], 0
    for i, values in enumerate(parts):
        rows = slice(start, start + len(values))
        start += len(values)
        paths.append(tmp_path / f"{i:05d}-00000.parquet")
        table = pa.table({"seq_id": pa.array(ids[rows], pa.uint64()),
                          "n_tokens": pa.array(lengths[rows], pa.int32()),
                          "source": pa.array(values, pa.string())})  # fmt: skip
        pq.write_table(table, paths[-1])
        if scores:
            flipped = table.take(pa.array(np.arange(len(values))[::-1]))
            prior = rng.uniform(2, 4, len(values)).astype(np.float32)
            cond = (prior - rng.uniform(0, 1, len(values))).astype(np.float32)
            pq.write_table(pa.table({"seq_id": flipped.column("seq_id"), "prior_loss": prior,
                                     "cond_loss": cond, "score": prior - cond}),
                           tmp_path / "scores" / paths[-1].name)  # fmt: skip
    return [as_location(p) for p in paths]


def every_row(paths: list) -> pa.Table:
    return pa.concat_tables([pq.read_table(p.path) for p in paths])


def test_codes_give_the_same_results_as_per_row_labels(tmp_path):
    rng = np.random.default_rng(1)
    vocab = ["web", "book:a", "book:b", "", "wiki", None]
    parts = [list(rng.choice(np.array(vocab, dtype=object), size)) for size in (50, 1, 80, 0, 40)]
    parts.append([None] * 7)  # a shard without labels
    paths = write_pool(tmp_path, parts, 2)
    census = take_census(paths, SEQ_LEN)
    table = every_row(paths)
    rows = table.column("source").to_pylist()
    decoded = [census.labels.names[c] for s in iter_shards(paths, census.labels) for c in s.codes]
    assert decoded == rows
    labels = np.array(["" if s is None else str(s) for s in rows], dtype=object)  # the old index
    codes = np.concatenate([s.codes for s in iter_shards(paths, census.labels)])
    assert np.array_equal(census.labels.mask(["book:"])[codes], is_target(labels, ["book:"]))
    ids, tokens = table.column("seq_id").to_numpy(), table.column("n_tokens").to_numpy()
    picked = rng.choice(len(rows), 60, replace=False)
    chosen = np.sort(ids[picked])
    found = survey(census, SurveyRequest(selections={"x": PackedIds.pack(chosen)}), SEQ_LEN)
    target = census.labels.mask(["book:", "wiki"])
    got = composition(census.labels.labels(), found.selected["x"], census.tokens_by_code, target)
    expected = {str(s): int(tokens[picked][labels[picked] == s].sum())
                for s in np.unique(labels[picked])}  # fmt: skip
    assert got["tokens_by_source"] == expected and list(got["tokens_by_source"]) == list(expected)
    hits = is_target(labels, ["book:", "wiki"])
    assert got["recall"] == tokens[picked][hits[picked]].sum() / tokens[hits].sum()
    assert got["precision"] == tokens[picked][hits[picked]].sum() / tokens[picked].sum()
    shown = np.array(["(none)" if s is None else str(s) for s in rows], dtype=object)
    groups = source_groups(census.labels.labels(none="(none)"), census.chunks_by_code, None)
    assert set(groups.sources) == set(np.unique(shown))
    for name, group in groups.sources.items():
        assert np.array_equal(np.isin(codes, group), shown == name), name


def test_short_chunks_digest_and_located_rows(tmp_path):
    paths = write_pool(tmp_path, [["a"] * 30, ["b"] * 45, ["a"] * 25], 3)
    census = take_census(paths, SEQ_LEN)
    table = every_row(paths)
    ids, tokens = table.column("seq_id").to_numpy(), table.column("n_tokens").to_numpy()
    assert census.rows == len(ids) and census.full_chunks == int((tokens == SEQ_LEN).sum())
    assert np.array_equal(census.short_ids, np.sort(ids[tokens != SEQ_LEN]))
    # the shards' ranges interleave: the digest is still that of every id in ascending order
    assert census.digest == selection_digest(ids)
    chosen = np.sort(np.random.default_rng(4).choice(ids, 40, replace=False))
    full = np.intersect1d(chosen, ids[tokens == SEQ_LEN])
    assert census.full_count(PackedIds.pack(chosen)) == len(full)
    assert np.array_equal(census.without_short(chosen), full)
    found = survey(census, SurveyRequest(locate=chosen), SEQ_LEN)
    number, row = found.located
    for seq_id, shard, at in zip(chosen, number, row, strict=True):
        assert pq.read_table(paths[shard].path).column("seq_id")[int(at)].as_py() == seq_id


def test_a_curve_run_draws_the_first_chunks_of_the_in_memory_order(tmp_path):
    paths = write_pool(tmp_path, [["a"] * 300, ["b"] * 200, ["a"] * 100], 5)
    table = every_row(paths)
    ids, tokens = table.column("seq_id").to_numpy(), table.column("n_tokens").to_numpy()
    full = np.sort(ids[tokens == SEQ_LEN])
    index = ChunkIndex([], np.zeros(len(full), np.int32), np.zeros(len(full)), full,
                       np.full(len(full), SEQ_LEN, np.int32))  # fmt: skip
    census = take_census(paths, SEQ_LEN)
    for seed, n in ((0, 50), (7, 120), (3, len(full))):
        drawn, _, _ = survey(census, SurveyRequest(draws={seed: n}), SEQ_LEN).drawn[seed]
        assert np.array_equal(drawn, full[epoch_order(index, 1, seed)[:n]]), (seed, n)


@pytest.mark.parametrize("n", [1, 17, 100, 250, 401])
def test_repeated_positions_are_epoch_orders_passes(n):
    ids = np.sort(np.random.default_rng(n).choice(10**9, 100, replace=False).astype(np.uint64))
    index = ChunkIndex([], np.zeros(100, np.int32), np.zeros(100), ids, np.zeros(100, np.int32))
    expected = epoch_order(index, max(1, -(-n // 100)), seed=3)[:n]
    assert np.array_equal(repeated_positions(ids, n, seed=3), expected)


def test_score_moments_per_source_match_numpy(tmp_path):
    rng = np.random.default_rng(6)
    parts = [list(rng.choice(["x", "y", "z"], size)) for size in (70, 90, 40)]
    paths = write_pool(tmp_path, parts, 6, scores=True)
    scores = [as_location(tmp_path / "scores" / p.name) for p in paths]
    census = take_census(paths, SEQ_LEN, scores)
    table = every_row(paths)
    labels = np.array(table.column("source").to_pylist())
    by_id = pa.concat_tables([pq.read_table(s.path) for s in scores])
    order = np.argsort(by_id.column("seq_id").to_numpy())
    rank = np.searchsorted(by_id.column("seq_id").to_numpy()[order], table.column("seq_id"))
    prior = by_id.column("prior_loss").to_numpy()[order][rank].astype(np.float64)
    for group in (["x"], ["y", "z"]):
        codes = np.array([census.labels.code[label] for label in group])
        count, mean, variance = census.moments["prior_loss"].of(codes)
        mask = np.isin(labels, group)
        assert count == mask.sum()
        assert mean == pytest.approx(prior[mask].mean(), abs=1e-9)
        assert np.sqrt(variance) == pytest.approx(prior[mask].std(), abs=1e-9)
    score = by_id.column("score").to_numpy()
    assert census.score_range == (float(score.min()), float(score.max()))


def test_moments_merged_shard_by_shard_equal_one_pass():
    rng = np.random.default_rng(7)
    codes, values = rng.integers(0, 4, 1000), rng.normal(3, 0.5, 1000)
    moments = Moments()
    for start in range(0, 1000, 137):
        moments.add(codes[start : start + 137], values[start : start + 137])
    count, mean, variance = moments.of(np.array([1, 3]))
    mask = np.isin(codes, [1, 3])
    assert count == mask.sum() and mean == pytest.approx(values[mask].mean(), abs=1e-12)
    assert variance == pytest.approx(values[mask].var(), abs=1e-12)


def test_shards_without_any_label_have_no_sources(tmp_path):
    assert take_census(write_pool(tmp_path, [[None, None], [None]], 8), SEQ_LEN).labels is None


def test_packed_ids_read_back_exactly_by_range_and_segment():
    rng = np.random.default_rng(9)
    files = [np.uint64(f) << np.uint64(32) for f in (0, 1, 7, 1 << 20)]
    every = np.concatenate([base + rng.choice(300_000, 5000, replace=False).astype(np.uint64)
                            for base in files])  # fmt: skip
    ids = np.sort(every)
    packed = PackedIds.pack(rng.permutation(ids))
    assert len(packed) == len(ids) and packed.nbytes < 2.2 * len(ids)
    assert np.array_equal(packed.ids(), ids)
    assert np.array_equal(np.concatenate(list(packed.segments(777))), ids)
    for low, high in ((0, 0), (int(ids[5]), int(ids[4000])), (int(files[1]), int(files[2]) + 9),
                      (int(ids[-1]), 2**64 - 1), (5, 3)):  # fmt: skip
        assert np.array_equal(packed.between(low, high), ids[(ids >= low) & (ids <= high)])
    probe = np.unique(np.concatenate([ids[::7], ids[::11] + np.uint64(1)]))
    assert packed.count_in(probe[:100]) == np.isin(probe[:100], ids).sum()
    assert packed.count_in(probe) == np.isin(probe, ids).sum()  # many: a pass, not lookups
    other = PackedIds.pack(np.unique(np.concatenate([ids[::3], probe])))
    assert packed.shared(other) == len(np.intersect1d(ids, other.ids()))
    assert len(PackedIds.pack(np.zeros(0, np.uint64)).between(0, 10)) == 0
