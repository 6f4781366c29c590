"""DSIR over the pool on the executor: n-gram counts per shard in tasks, summed by the driver,
then each shard's log importance weights written by a task (not pure Python in the driver).

Counts are integers, so their sum is exact and does not depend on how shards are split among
workers: the weights equal those of `dsir.fit` over the whole pool in one process. Tasks get
Locations: they read the token shards and write the weight shards on any backend themselves
(each weight shard appears whole), and read the tokenizer through the node's cache.
"""

from __future__ import annotations

from collections.abc import Container
from dataclasses import dataclass

import numpy as np
import pyarrow as pa

from colorfilter.dataset.decode import load_decoder
from colorfilter.dataset.runs import token_lists
from colorfilter.io.cache import local_copy
from colorfilter.io.location import Location
from colorfilter.io.transfer import read_parquet, write_parquet
from colorfilter.selection import DSIR_WEIGHT, dsir


@dataclass(frozen=True)
class DsirTask:
    token_path: Location
    weight_path: Location | None = None  # None: count the shard's n-grams; else write weights
    target: bool = False  # a count task over the target split


class DsirWorker:
    """Built once per worker: the decoder and (for weight tasks) the fitted log ratios."""

    def __init__(
        self, tokenizer_dir: Location, log_ratio: np.ndarray | None = None, ngrams: int = 2
    ):
        self.decode = load_decoder(local_copy(tokenizer_dir))
        self.model = None if log_ratio is None else dsir.DSIRModel(np.asarray(log_ratio), ngrams)

    def __call__(self, task: DsirTask) -> np.ndarray | int:
        table = read_parquet(task.token_path, columns=["seq_id", "input_ids"])
        texts = self.decode(token_lists(table.column("input_ids")))
        if task.weight_path is None:
            return dsir.count_ngrams(texts)
        weights = dsir.log_importance(self.model, texts)
        write_parquet(
            task.weight_path,
            pa.table({"seq_id": table.column("seq_id"), DSIR_WEIGHT: pa.array(weights)}),
        )
        return len(weights)


def write_dsir_weights(
    execution, tokenizer_dir: Location, target_paths: list[Location], pool_paths: list[Location],
    weight_paths: list[Location], present: Container[str] = (),
) -> None:  # fmt: skip
    """Fit DSIR (target vs pool) from per-shard counts; write the weight shards whose names
    are not `present`."""
    tasks = [DsirTask(p, target=True) for p in target_paths]
    tasks += [DsirTask(p) for p in pool_paths]
    target = np.zeros(dsir.DEFAULT_NUM_BUCKETS, np.int64)
    raw = np.zeros(dsir.DEFAULT_NUM_BUCKETS, np.int64)
    for task, counts in execution.map(DsirWorker, (tokenizer_dir,), tasks):
        if task.target:
            target += counts
        else:
            raw += counts
    model = dsir.model_from_counts(target, raw)
    todo = [
        DsirTask(token, weight)
        for token, weight in zip(pool_paths, weight_paths, strict=True)
        if weight.name not in present
    ]
    for _ in execution.map(DsirWorker, (tokenizer_dir, model.log_ratio, model.ngrams), todo):
        pass
