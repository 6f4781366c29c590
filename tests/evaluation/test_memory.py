"""evaluate's planning holds no pool-sized array: its memory grows with what it selects and
trains on, not with the pool (issue 25: ~36 bytes per pool row before, several GB on C4).

Measured with tracemalloc (numpy and Python objects; Arrow's buffers are per shard) over the
whole of plan_evaluation at two pool sizes: the growth per added pool row must stay a few bytes,
the selections' 8 bytes per selected chunk at tau 16 included. Left out: the inside of select's
own exact top-k (colorfilter.selection, called through pipeline.select.plan_selections and by
the label oracle), whose buffers are bounded by constants that these small pools do not reach
(2^22 boundary rows, 2^20 binned digits); its answers are counted. The process's peak RSS,
select included, at 10^7 and 10^8 rows: scripts/bench_evaluate_plan.py.
"""

from __future__ import annotations

import tracemalloc
from pathlib import Path

import numpy as np
import pyarrow as pa
import pyarrow.parquet as pq

from colorfilter.config import Config
from colorfilter.evaluation import oracle
from colorfilter.evaluation.config import EvaluateConfig
from colorfilter.io.token_shards import TOKEN_SCHEMA, make_seq_ids
from colorfilter.pipeline import evaluate_selections as selections
from colorfilter.pipeline.evaluate import plan_evaluation
from colorfilter.pipeline.select import plan_selections
from colorfilter.scoring.shard import SCORE_SCHEMA
from colorfilter.selection import TopKResult, topk
from tests.conftest import mark_finished
from tests.evaluation.test_evaluate import _tokenizer

SEQ_LEN = 4
ROWS_PER_SHARD = 8192
MAX_BYTES_PER_ROW = 6.0  # before: ~36 for the index alone, ~70 with scores and the curve


def pool_run(root: Path, n_rows: int) -> Config:
    """A prepared and scored run directory of `n_rows` short chunks, built with arrays."""
    rng = np.random.default_rng(n_rows)
    for split in ("tokens/pool", "tokens/downstream_eval", "scores/pool"):
        (root / split).mkdir(parents=True)
    for shard, start in enumerate(range(0, n_rows, ROWS_PER_SHARD)):
        n = min(ROWS_PER_SHARD, n_rows - start)
        table = chunks(shard, n, rng)
        name = f"{shard:05d}-00000.parquet"
        pq.write_table(table, root / "tokens" / "pool" / name)
        prior = rng.uniform(2.0, 3.0, n).astype(np.float32)
        cond = (prior - rng.uniform(0, 1, n)).astype(np.float32)
        scores = [table.column("seq_id"), prior, cond, prior - cond, table.column("n_tokens")]
        pq.write_table(pa.table(scores, schema=SCORE_SCHEMA), root / "scores" / "pool" / name)
    pq.write_table(chunks(999, 64, rng), root / "tokens" / "downstream_eval" / "00000.parquet")
    _tokenizer(root / "tokenizer")
    mark_finished(root, "prepare", "score")
    config = Config(output_dir=str(root), seq_len=SEQ_LEN, device="cpu", executor="local")
    config.evaluate = EvaluateConfig(
        methods=["color", "random", "label_oracle"], taus=[16], preset="micro",
        target_source=["book"], train_tokens=1024 * SEQ_LEN, random_multiples=[1, 4],
        batch_size=16,
    )  # fmt: skip
    return config


def chunks(file_index: int, n: int, rng: np.random.Generator) -> pa.Table:
    lengths = np.full(n, SEQ_LEN, np.int32)
    lengths[-1] = 2  # the file's tail chunk
    offsets = np.concatenate([[0], np.cumsum(lengths)]).astype(np.int32)
    values = rng.integers(1, 30, int(offsets[-1])).astype(np.int32)
    doc = np.arange(n) // 4
    return pa.table(
        {
            "seq_id": make_seq_ids(file_index, 0, n),
            "input_ids": pa.ListArray.from_arrays(pa.array(offsets), pa.array(values)),
            "n_tokens": lengths,
            "source_file": pa.array([f"f{file_index}"] * n),
            "doc_first": doc.astype(np.int64),
            "doc_last": doc.astype(np.int64),
            "doc_offset": np.zeros(n, np.int32),
            "source": np.where(rng.random(n) < 0.05, "book", "web"),
        },
        schema=TOKEN_SCHEMA,
    )


class Traced:
    """tracemalloc's peak over a call, with select's top-k left out (`paused`): what was traced
    when it started, and its answers, are added to everything traced after it (conservative:
    frees of the earlier blocks are not seen)."""

    def __init__(self) -> None:
        self.base = self.peak = 0

    def paused(self, function):
        def call(*args, **kwargs):
            current, peak = tracemalloc.get_traced_memory()
            self.peak = max(self.peak, self.base + peak)
            tracemalloc.stop()
            result = function(*args, **kwargs)
            tracemalloc.start()
            answers = result.seq_ids if isinstance(result, TopKResult) else result
            self.base += current + sum(ids.nbytes for ids in answers.values())
            return result

        return call

    def run(self, function, *args):
        tracemalloc.start()
        try:
            result = function(*args)
            self.peak = max(self.peak, self.base + tracemalloc.get_traced_memory()[1])
            return result
        finally:
            tracemalloc.stop()


def peak_bytes(config: Config, monkeypatch) -> int:
    traced = Traced()
    monkeypatch.setattr(selections, "plan_selections", traced.paused(plan_selections))
    monkeypatch.setattr(oracle, "topk", traced.paused(topk))
    plan = traced.run(plan_evaluation, config)
    assert plan.runs and all(len(run.order) for run in plan.runs)
    return traced.peak


def test_planning_memory_does_not_grow_with_the_pool(tmp_path, monkeypatch):
    small, large = 50_000, 250_000
    plan_evaluation(pool_run(tmp_path / "warm", 20_000))  # imports, caches: not the pool's
    low = peak_bytes(pool_run(tmp_path / "small", small), monkeypatch)
    high = peak_bytes(pool_run(tmp_path / "large", large), monkeypatch)
    per_row = (high - low) / (large - small)
    assert per_row < MAX_BYTES_PER_ROW, f"{per_row:.1f} bytes per pool row ({low=}, {high=})"
