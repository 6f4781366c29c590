"""CUDA out-of-memory while scoring a shard: the score worker retries it with half the batch."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pyarrow.parquet as pq
import pytest

from colorfilter.io.location import as_location
from colorfilter.pipeline.score import ScoreSetup, ScoreTask, ScoreWorker
from colorfilter.scoring.config import ScoreConfig
from colorfilter.scoring.shard import ShardScoring, done_record_path
from tests.scoring.conftest import PAD_ID, SEQ_LEN, random_chunks, save_pair, write_token_shard


class OomScoreWorker(ScoreWorker):
    """The real worker whose scorer raises a real torch.cuda.OutOfMemoryError above `max_rows`."""

    def __init__(self, *args, max_rows: int):
        super().__init__(*args)
        scorer, self.batches = self.scorer, []
        prepare, score_prepared = scorer.prepare, scorer.score_prepared

        def prepare_counting(input_ids, n_tokens):
            return len(input_ids), prepare(input_ids, n_tokens)

        def score_or_oom(item):
            import torch

            rows, prepared = item
            self.batches.append(rows)
            if rows > max_rows:
                raise torch.cuda.OutOfMemoryError("CUDA out of memory. Tried to allocate 9 GiB")
            return score_prepared(prepared)

        scorer.prepare, scorer.score_prepared = prepare_counting, score_or_oom


@pytest.fixture
def shard_task(tmp_path):
    prior, cond = save_pair(tmp_path / "models")
    token_path = write_token_shard(tmp_path / "tokens" / "00000-00000.parquet", random_chunks(40))
    setup = ScoreSetup(as_location(str(prior)), as_location(str(cond)),
                       ScoreConfig(batch_size=16, torch_threads=1), "cpu",
                       ShardScoring(16, SEQ_LEN, PAD_ID, fingerprint="fingerprint"))  # fmt: skip
    args = (setup,)
    return args, tmp_path, token_path


def test_oom_retries_the_shard_with_half_the_batch(shard_task):
    args, root, token_path = shard_task
    reference = ScoreWorker(*args)(ScoreTask(str(token_path), str(root / "ref.parquet")))
    worker = OomScoreWorker(*args, max_rows=5)
    stats = worker(ScoreTask(str(token_path), str(root / "oom.parquet")))
    assert stats["batch_size"] == 4 and reference["batch_size"] == 16  # 16 -> 8 -> 4
    assert worker.batches[0] == 16 and 8 in worker.batches and max(worker.batches[-10:]) == 4
    ours, theirs = pq.read_table(root / "oom.parquet"), pq.read_table(root / "ref.parquet")
    assert ours.column("seq_id").equals(theirs.column("seq_id")) and stats["rows"] == 40
    for name in ("prior_loss", "cond_loss", "score"):
        np.testing.assert_allclose(ours.column(name).to_numpy(), theirs.column(name).to_numpy(),
                                   rtol=1e-5, atol=1e-6)  # fmt: skip
    assert Path(done_record_path(root / "oom.parquet")).exists()


def test_oom_at_batch_one_is_raised(shard_task):
    import torch

    args, root, token_path = shard_task
    worker = OomScoreWorker(*args, max_rows=0)
    with pytest.raises(torch.cuda.OutOfMemoryError):
        worker(ScoreTask(str(token_path), str(root / "oom.parquet")))
    assert worker.batches[:5] == [16, 8, 4, 2, 1]
    assert not (root / "oom.parquet").exists()
    assert not Path(done_record_path(root / "oom.parquet")).exists()
