"""`load_scorer`: score_ids gives the score stage's numbers; score_texts chunks each text as
prepare chunks a file holding only that text, and aggregates by predicted positions."""

from __future__ import annotations

import shutil

import numpy as np
import pyarrow as pa
import pyarrow.parquet as pq
import pytest

import colorfilter as cf
from colorfilter.chunking import Chunker, document_chunks
from colorfilter.errors import ConfigError
from colorfilter.io.token_shards import list_shards, pad_input_ids
from tests.conftest import sample_documents


@pytest.fixture(scope="module")
def scorer(run_dir):
    return cf.load_scorer(run_dir)


def pool_chunks(run_dir):
    """Every pool chunk with the score stage's scores, by seq_id."""
    token_shards = list_shards(run_dir / "tokens" / "pool")
    tokens = pq.read_table(token_shards, columns=["seq_id", "input_ids"])
    scores = pq.read_table(list_shards(run_dir / "scores" / "pool")).sort_by("seq_id")
    tokens = tokens.sort_by("seq_id")
    assert tokens.column("seq_id").equals(scores.column("seq_id"))
    return scores.append_column("input_ids", tokens.column("input_ids"))


def test_score_ids_equals_the_score_stage_on_every_pool_chunk(run_dir, scorer):
    table = pool_chunks(run_dir)
    ids, n_tokens = pad_input_ids(table.column("input_ids"), scorer.seq_len, 0)
    assert (n_tokens < scorer.seq_len).any()  # the files' short tail chunks are in there
    got = scorer.score_ids(ids, n_tokens)
    for name in ("prior_loss", "cond_loss", "score"):
        expected = table.column(name).to_numpy()
        assert getattr(got, name).dtype == np.float32
        assert np.max(np.abs(getattr(got, name) - expected)) <= 1e-5, name
    assert np.array_equal(got.n_tokens, table.column("n_tokens").to_numpy())


def test_score_ids_takes_narrower_rows_and_refuses_bad_input(scorer):
    rng = np.random.default_rng(0)
    ids = rng.integers(1, 300, (5, scorer.seq_len))
    full = scorer.score_ids(ids, np.full(5, 20))
    narrow = scorer.score_ids(ids[:, :20])  # n_tokens None: every row is 20 tokens
    assert np.allclose(full.score, narrow.score, atol=1e-6)
    ragged = scorer.score_ids([ids[0, :20].tolist(), ids[1, :20], ids[2, :20]])
    assert np.allclose(ragged.score, full.score[:3], atol=1e-6)
    assert ragged.n_tokens.tolist() == [20, 20, 20]
    short = scorer.score_ids(ids, np.array([0, 1, 2, 3, 64]))
    assert np.isnan(short.score[:2]).all() and np.isfinite(short.score[2:]).all()
    with pytest.raises(ValueError, match="more than the run's seq_len=64"):
        scorer.score_ids(np.ones((2, 65), dtype=np.int64))
    with pytest.raises(ValueError, match=r"id 100000, outside the models' vocabulary \(0..399\)"):
        scorer.score_ids(np.full((1, 8), 100000))
    with pytest.raises(ValueError, match="n_tokens must be"):
        scorer.score_ids(ids, np.full(5, 99))


def test_document_chunks_match_prepares_chunker_on_a_single_document_file():
    rng = np.random.default_rng(1)
    lengths = np.array([1, 2, 63, 64, 65, 66, 128, 129, 130, 200, 0])
    doc, start, end = document_chunks(lengths, 64)
    for index, length in enumerate(lengths):
        tokens = rng.integers(1, 300, length).astype(np.int32)
        chunker = Chunker(64, 0, "one-document-file")
        chunker.add(0, tokens)
        table = chunker.take(10, final=True)
        expected = [np.asarray(x) for x in table.column("input_ids").to_pylist()]
        ours = [tokens[s:e] for d, s, e in zip(doc, start, end) if d == index]
        assert len(ours) == len(expected)
        assert all(np.array_equal(a, b) for a, b in zip(ours, expected))


def test_score_texts_chunks_each_text_alone_and_weights_by_predicted_positions(scorer):
    texts = [*sample_documents(12, seed=5), "", "x"]
    result = scorer.score_texts(texts)
    tokens = scorer.encode(texts)
    assert [len(t) for t in tokens][-2:] == [1, 2]  # "" is EOS alone; "x" + EOS
    assert all(t[-1] == scorer.eos_id for t in tokens)
    # the same chunks through score_ids: per chunk equal, then the weighted mean per text
    lengths = np.array([len(t) for t in tokens])
    doc, start, end = document_chunks(lengths, scorer.seq_len)
    chunks = [tokens[d][s:e] for d, s, e in zip(doc, start, end)]
    ids, n = pad_input_ids(pa.array(chunks, pa.list_(pa.int32())), scorer.seq_len, 0)
    direct = scorer.score_ids(ids, n)
    assert np.array_equal(result.chunk_text, doc)
    assert np.max(np.abs(result.chunks.score - direct.score)) <= 1e-5
    for i in [*range(len(texts) - 2), len(texts) - 1]:  # all but the empty text
        mine = doc == i
        weights = n[mine] - 1.0
        prior = np.sum(direct.prior_loss[mine] * weights) / weights.sum()
        cond = np.sum(direct.cond_loss[mine] * weights) / weights.sum()
        assert abs(result.prior_loss[i] - prior) <= 1e-5
        assert abs(result.score[i] - (prior - cond)) <= 1e-5
        assert result.n_chunks[i] == mine.sum() and result.n_tokens[i] == n[mine].sum()
    assert result.n_chunks[-2] == 0 and np.isnan(result.score[-2])  # the empty text
    one_chunk = np.flatnonzero(result.n_chunks == 1)
    assert one_chunk.size and np.array_equal(  # a one-chunk text gets its chunk's numbers
        result.score[one_chunk], result.chunks.score[np.isin(doc, one_chunk)]
    )
    assert (result.n_chunks > 1).any()


def test_score_texts_is_independent_of_its_neighbours(scorer):
    texts = sample_documents(10, seed=7)
    together = scorer.score_texts(texts)
    alone = [scorer.score_texts([t]).score[0] for t in texts[:3]]
    assert np.allclose(together.score[:3], alone, atol=1e-5)
    with pytest.raises(TypeError):
        scorer.score_texts("one str")


def test_load_scorer_overrides_and_refusals(run_dir, tmp_path):
    scorer = cf.load_scorer(run_dir, precision="bf16", batch_size=3, torch_threads=1)
    assert scorer.precision.weights == "bfloat16" and scorer.batch_size == 3
    assert scorer.settings.seq_len == 64 and scorer.settings.device == "cpu"
    with pytest.raises(ConfigError, match="device must be auto, cpu, cuda or cuda:N"):
        cf.load_scorer(run_dir, device="gpu")
    import torch

    if not torch.cuda.is_available():
        with pytest.raises(ConfigError, match="no CUDA GPU is visible"):
            cf.load_scorer(run_dir, device="cuda")
    with pytest.raises(ConfigError, match="precision must be one of"):
        cf.load_scorer(run_dir, precision="fp8")
    with pytest.raises(ConfigError, match="config.yaml not found: not a colorfilter run folder"):
        cf.load_scorer(tmp_path)
    moved = tmp_path / "moved"
    shutil.copytree(run_dir, moved, ignore=shutil.ignore_patterns("conditional"))
    with pytest.raises(ConfigError, match=r"conditional model not found at .*moved/models"):
        cf.load_scorer(moved)
