"""Score shards: right columns and values, atomic, resumable, verified by their records."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pyarrow.parquet as pq
import pytest

from colorfilter.io.atomic import read_json
from colorfilter.io.token_shards import list_shards
from colorfilter.scoring.base import build_scorer
from colorfilter.scoring.config import ScoreConfig
from colorfilter.scoring.precision import resolve_precision
from colorfilter.scoring.shard import (
    SCORE_SCHEMA,
    ScoreTask,
    ShardScoring,
    done_record_path,
    exact_batches,
    is_shard_done,
    pending_shards,
    prefetch,
    score_shards,
    score_token_shard,
    scoring_fingerprint,
)
from tests.scoring.conftest import (
    PAD_ID,
    SEQ_LEN,
    padded,
    random_chunks,
    reference_losses,
    write_token_shard,
)


def how(batch_size: int, fingerprint: str | None = None) -> ShardScoring:
    return ShardScoring(batch_size, SEQ_LEN, PAD_ID, fingerprint=fingerprint)


@pytest.fixture(scope="module")
def scorer(model_pair):
    return build_scorer("torch", *model_pair, ScoreConfig(), device="cpu")


@pytest.fixture
def token_dir(tmp_path):
    directory = tmp_path / "tokens" / "pool"
    for index, rows in enumerate([13, 7, 0]):
        write_token_shard(
            directory / f"shard-{index:05d}.parquet", random_chunks(rows, index), index
        )
    return directory


def test_score_shard_has_the_shared_columns_and_hf_exact_values(tmp_path, model_pair, scorer):
    chunks = random_chunks(11, seed=4)
    token_path = write_token_shard(tmp_path / "t.parquet", chunks, file_index=3, row_group_size=4)
    calls = []
    stats = score_token_shard(
        ScoreTask(token_path, tmp_path / "scores" / "t.parquet"), scorer,
        ShardScoring(batch_size=5, seq_len=SEQ_LEN, pad_id=PAD_ID),
        on_batch=lambda rows, tokens: calls.append((rows, tokens)),
    )  # fmt: skip
    table = pq.read_table(tmp_path / "scores" / "t.parquet")
    assert table.schema.equals(SCORE_SCHEMA)
    tokens = pq.read_table(token_path)
    assert table.column("seq_id").equals(tokens.column("seq_id"))
    assert table.column("n_tokens").to_pylist() == [len(c) for c in chunks]
    prior, cond = table.column("prior_loss").to_numpy(), table.column("cond_loss").to_numpy()
    np.testing.assert_allclose(prior, reference_losses(model_pair[0], chunks), atol=1e-5)
    np.testing.assert_allclose(cond, reference_losses(model_pair[1], chunks), atol=1e-5)
    np.testing.assert_array_equal(table.column("score").to_numpy(), prior - cond)
    assert [rows for rows, _ in calls] == [5, 5, 1]
    assert stats["rows"] == 11 and stats["tokens"] == sum(len(c) for c in chunks)
    assert stats["tokens_per_s"] > 0 and stats["peak_host_rss_mb"] > 0
    record = read_json(Path(done_record_path(tmp_path / "scores" / "t.parquet")))
    assert record["meta"]["rows"] == 11


def test_scores_do_not_depend_on_batch_size(tmp_path, scorer):
    token_path = write_token_shard(tmp_path / "t.parquet", random_chunks(9, seed=5))
    outputs = []
    for batch_size in (2, 9):
        out = tmp_path / f"b{batch_size}" / "t.parquet"
        score_token_shard(ScoreTask(token_path, out), scorer, how(batch_size))
        outputs.append(pq.read_table(out))
    for name in ("prior_loss", "cond_loss"):
        a, b = (t.column(name).to_numpy() for t in outputs)
        np.testing.assert_allclose(a, b, atol=1e-5)


def test_rerun_skips_verified_shards_and_redoes_broken_ones(tmp_path, token_dir, scorer):
    tokens = list_shards(token_dir)
    score_dir = tmp_path / "scores" / "pool"
    first = score_shards(tokens, score_dir, scorer, how(4, fingerprint="f1"))
    assert [s["skipped"] for s in first] == [False, False, False]
    assert [s["rows"] for s in first] == [13, 7, 0]
    before = {p.name: p.read_bytes() for p in list_shards(score_dir)}
    assert pending_shards(tokens, score_dir, "f1") == []

    (score_dir / tokens[0].name).write_bytes(b"partial garbage")  # as if killed mid-write
    Path(done_record_path(score_dir / tokens[1].name)).unlink()  # record never written
    again = score_shards(tokens, score_dir, scorer, how(4, fingerprint="f1"))
    assert [s["skipped"] for s in again] == [False, False, True]
    after = {p.name: p.read_bytes() for p in list_shards(score_dir)}
    assert after == before  # identical bytes: scores are deterministic across reruns

    assert pending_shards(tokens, score_dir, "other-models") == tokens  # stale fingerprint


def test_a_shard_whose_token_rows_changed_is_not_done(tmp_path, scorer):
    token_path = write_token_shard(tmp_path / "t.parquet", random_chunks(6))
    score_path = tmp_path / "scores" / "t.parquet"
    score_token_shard(ScoreTask(token_path, score_path), scorer, how(4))
    assert is_shard_done(score_path, token_path)
    write_token_shard(token_path, random_chunks(8))
    assert not is_shard_done(score_path, token_path)


def test_a_failing_scorer_leaves_no_finished_looking_file(tmp_path, token_dir):
    class Exploding:
        def prepare(self, input_ids, n_tokens):
            return input_ids, n_tokens

        def score_prepared(self, prepared):
            raise RuntimeError("device lost")

        def memory_stats(self):
            return {}

    score_path = tmp_path / "scores" / "x.parquet"
    with pytest.raises(RuntimeError, match="device lost"):
        score_token_shard(ScoreTask(list_shards(token_dir)[0], score_path), Exploding(), how(4))
    assert not score_path.exists() and not Path(done_record_path(score_path)).exists()
    assert not list(tmp_path.rglob(".tmp-*"))


def test_exact_batches_cross_row_group_boundaries(tmp_path):
    path = write_token_shard(tmp_path / "t.parquet", random_chunks(23), row_group_size=5)
    assert pq.ParquetFile(path).metadata.num_row_groups == 5
    sizes = [t.num_rows for t in exact_batches(path, 8)]
    assert sizes == [8, 8, 7]
    seq_ids = np.concatenate([t.column("seq_id").to_numpy() for t in exact_batches(path, 8)])
    np.testing.assert_array_equal(seq_ids, pq.read_table(path).column("seq_id").to_numpy())


def test_prefetch_keeps_order_and_reraises_reader_errors():
    assert list(prefetch(iter(range(50)), depth=3)) == list(range(50))
    assert list(prefetch(iter(range(5)), depth=0)) == list(range(5))

    def broken():
        yield 1
        raise OSError("bad parquet page")

    with pytest.raises(OSError, match="bad parquet page"):
        list(prefetch(broken(), depth=2))


def test_fingerprint_tracks_weights_and_score_settings_but_not_batch_size(model_pair):
    cpu = resolve_precision("auto", "cpu")

    def fingerprint(cfg, seq_len=512, precision=cpu, pair=model_pair):
        return scoring_fingerprint(*pair, cfg, seq_len, precision)

    base = fingerprint(ScoreConfig())
    assert base == fingerprint(ScoreConfig(batch_size=7))
    assert base == fingerprint(ScoreConfig(), precision=resolve_precision("fp32", "cpu"))
    assert base != fingerprint(ScoreConfig(), 256)
    assert base != fingerprint(ScoreConfig(), pair=model_pair[::-1])
    others = {
        fingerprint(ScoreConfig(), precision=resolve_precision(name, device))
        for name, device in [("bf16", "cpu"), ("fp32-autocast-bf16", "cpu"), ("fp32", "cuda:1")]
    }
    assert len(others) == 3 and base not in others  # weights, autocast and device type count


def test_scorer_input_matches_the_padded_shard(scorer):
    """prepare/score_prepared and score agree (the shard loop uses the former)."""
    ids, n_tokens = padded(random_chunks(5))
    direct = scorer.score(ids, n_tokens)
    split = scorer.score_prepared(scorer.prepare(ids, n_tokens))
    for a, b in zip(direct, split):
        np.testing.assert_array_equal(a, b)
