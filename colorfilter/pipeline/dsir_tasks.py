"""DSIR over the pool on the executor: n-gram counts per shard in tasks, summed by the driver,
then each shard's log importance weights written by a task (not pure Python in the driver).

Counts are integers, so their sum is exact and does not depend on how shards are split among
workers: the weights equal those of `dsir.fit` over the whole pool in one process.
"""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path

import numpy as np
import pyarrow as pa
import pyarrow.parquet as pq

from colorfilter.io.atomic import write_parquet_atomic
from colorfilter.selection import DSIR_WEIGHT, dsir


@dataclass(frozen=True)
class DsirTask:
    token_path: str
    weight_path: str | None = None  # None: count the shard's n-grams; else write its weights
    target: bool = False  # a count task over the target split


class DsirWorker:
    """Built once per worker: the decoder and (for weight tasks) the fitted log ratios."""

    def __init__(self, tokenizer_dir: str, log_ratio: np.ndarray | None = None, ngrams: int = 2):
        from colorfilter.dataset.decode import load_decoder

        self.decode = load_decoder(tokenizer_dir)
        self.model = None if log_ratio is None else dsir.DSIRModel(np.asarray(log_ratio), ngrams)

    def __call__(self, task: DsirTask) -> np.ndarray | int:
        from colorfilter.dataset.runs import token_lists

        table = pq.read_table(task.token_path, columns=["seq_id", "input_ids"])
        texts = self.decode(token_lists(table.column("input_ids")))
        if task.weight_path is None:
            return dsir.count_ngrams(texts)
        weights = dsir.log_importance(self.model, texts)
        write_parquet_atomic(
            task.weight_path,
            pa.table({"seq_id": table.column("seq_id"), DSIR_WEIGHT: pa.array(weights)}),
        )
        return len(weights)


def write_dsir_weights(
    execution, tokenizer_dir: Path, target_paths: list[Path], pool_paths: list[Path],
    weight_paths: list[Path],
) -> None:  # fmt: skip
    """Fit DSIR (target vs pool) from per-shard counts; write the missing weight shards."""
    tasks = [DsirTask(str(p), target=True) for p in target_paths]
    tasks += [DsirTask(str(p)) for p in pool_paths]
    target = np.zeros(dsir.DEFAULT_NUM_BUCKETS, np.int64)
    raw = np.zeros(dsir.DEFAULT_NUM_BUCKETS, np.int64)
    for task, counts in execution.map(DsirWorker, (str(tokenizer_dir),), tasks):
        if task.target:
            target += counts
        else:
            raw += counts
    model = dsir.model_from_counts(target, raw)
    todo = [
        DsirTask(str(token), str(weight))
        for token, weight in zip(pool_paths, weight_paths, strict=True)
        if not weight.exists()
    ]
    for _ in execution.map(DsirWorker, (str(tokenizer_dir), model.log_ratio, model.ngrams), todo):
        pass
