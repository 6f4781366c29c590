"""The Ray Data scorer on real Ray Data: on the run's token shards (`input_ids`) its scores are
the score stage's; on a text column they are `score_texts`'."""

from __future__ import annotations

import numpy as np
import pyarrow as pa
import pyarrow.parquet as pq
import pytest

import colorfilter as cf
from colorfilter.integrations.ray_data import ColorFilterBatchScorer
from colorfilter.io.token_shards import list_shards
from tests.conftest import sample_documents


def score_stage(run_dir) -> dict[int, np.ndarray]:
    table = pq.read_table(list_shards(run_dir / "scores" / "pool"))
    seq_ids = table.column("seq_id").to_numpy()
    return {name: dict(zip(seq_ids, table.column(name).to_numpy()))
            for name in ("prior_loss", "cond_loss", "score")}  # fmt: skip


def test_scores_of_token_shards_equal_the_score_stage(ray_session, run_dir):
    ray = ray_session
    shards = [str(p) for p in list_shards(run_dir / "tokens" / "pool")]
    ds = ray.data.read_parquet(shards, override_num_blocks=2)
    ds = ds.select_columns(["seq_id", "input_ids"])
    scored = ds.map_batches(
        ColorFilterBatchScorer, fn_constructor_kwargs={"run": str(run_dir), "torch_threads": 1},
        compute=ray.data.ActorPoolStrategy(size=1), num_cpus=0.5, batch_size=40,
    ).to_arrow_refs()  # fmt: skip
    table = pa.concat_tables(ray.get(scored))
    expected = score_stage(run_dir)
    assert table.num_rows == len(expected["score"]) > 0
    seq_ids = table.column("seq_id").to_numpy()
    for name in ("prior_loss", "cond_loss", "score"):
        want = np.array([expected[name][s] for s in seq_ids])
        assert np.max(np.abs(table.column(name).to_numpy() - want)) <= 1e-5, name


def test_text_column_scores_equal_score_texts(ray_session, run_dir):
    ray = ray_session
    texts = sample_documents(20, seed=13)
    ds = ray.data.from_items([{"text": t, "n": i} for i, t in enumerate(texts)])
    rows = ds.map_batches(
        ColorFilterBatchScorer, fn_constructor_kwargs={"run": str(run_dir), "torch_threads": 1},
        compute=ray.data.ActorPoolStrategy(size=1), num_cpus=0.5, batch_size=8,
    ).take_all()  # fmt: skip
    rows.sort(key=lambda r: r["n"])
    expected = cf.load_scorer(run_dir).score_texts(texts)
    assert [r["text"] for r in rows] == texts
    got = np.array([r["score"] for r in rows])
    assert np.max(np.abs(got - expected.score)) <= 1e-5
    assert np.allclose([r["prior_loss"] for r in rows], expected.prior_loss, atol=1e-5)


def test_batch_kinds_in_process(run_dir):
    """numpy dicts (ragged or 2-D ids), pyarrow tables and pandas frames: the same numbers."""
    settings = cf.load_scorer(run_dir).settings
    scorer = ColorFilterBatchScorer(settings, torch_threads=1)
    rng = np.random.default_rng(3)
    chunks = [rng.integers(1, 300, n).astype(np.int32) for n in (64, 10, 64, 2)]
    arrow = pa.table({"input_ids": pa.array(chunks, pa.list_(pa.int32())),
                      "score": pa.array([0.0] * 4, pa.float32())})  # fmt: skip
    from_arrow = scorer(arrow)
    assert from_arrow.column_names == ["input_ids", "score", "prior_loss", "cond_loss"]
    ragged = np.empty(4, dtype=object)
    ragged[:] = chunks
    from_numpy = scorer({"input_ids": ragged})
    assert np.array_equal(from_numpy["score"], from_arrow.column("score").to_numpy())
    square = scorer({"input_ids": np.stack([chunks[0], chunks[2]])})
    assert np.array_equal(square["score"], from_numpy["score"][[0, 2]])
    frame = scorer(pa.table({"text": ["a text", None]}).to_pandas())
    assert np.isfinite(frame["score"][0]) and np.isnan(frame["score"][1])
    with pytest.raises(ValueError, match="neither a 'input_ids' nor a 'text' column"):
        scorer({"body": np.array(["x"])})
