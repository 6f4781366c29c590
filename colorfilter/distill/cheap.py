"""Cheap scores for the whole pool: one executor task per token shard, on any node and backend.

A task reads its token shard's `seq_id` and `input_ids`, scores every chunk with the cheap scorer
(features and prediction vectorised over the shard) and writes `scores/cheap/<shard>.parquet`
(`seq_id, cheap_score, n_tokens`), then its completion record, the same unit as a score shard
(colorfilter.scoring.shard: sha256, row count, fingerprint = the model's digest). A rerun skips
shards whose record vouches for them and redoes the rest.
"""

from __future__ import annotations

import time
from collections.abc import Mapping
from dataclasses import dataclass
from typing import Any

import numpy as np
import pyarrow as pa

from colorfilter.distill.features import Chunks
from colorfilter.distill.model import MODEL_FILE, WEIGHTS_FILE, CheapModel
from colorfilter.errors import ConfigError
from colorfilter.io import storage
from colorfilter.io.commit import commit_unit, is_committed
from colorfilter.io.location import Location
from colorfilter.io.transfer import read_parquet, write_parquet
from colorfilter.layout import MODEL_RECORD
from colorfilter.scoring.shard import done_record_path
from colorfilter.selection.methods import CHEAP_SCORE

CHEAP_SCHEMA = pa.schema(
    [("seq_id", pa.uint64()), (CHEAP_SCORE, pa.float32()), ("n_tokens", pa.int32())]
)


def load_cheap_model(folder: Location) -> CheapModel:
    """The committed cheap scorer in `folder` (a local folder or a bucket prefix)."""
    if is_committed(folder.join(MODEL_RECORD), verify_sha256=True) is None:
        raise ConfigError(
            f"no complete cheap scorer in {folder.url}: run `colorfilter distill` first"
        )
    return CheapModel.from_files(
        storage.read_bytes(folder.join(WEIGHTS_FILE)), storage.read_bytes(folder.join(MODEL_FILE))
    )


@dataclass(frozen=True)
class CheapTask:
    token_path: Location
    cheap_path: Location
    token_entry: Mapping[str, Any] | None = None  # prepare's record of the token shard: checked


class CheapWorker:
    """Built once per worker: the cheap scorer; then called once per token shard."""

    def __init__(self, model_dir: Location, digest: str):
        self.model = load_cheap_model(model_dir)
        if self.model.digest != digest:
            raise ConfigError(f"the cheap scorer in {model_dir.url} changed while scoring")

    def __call__(self, task: CheapTask) -> dict[str, Any]:
        return score_cheap_shard(task, self.model)


def score_cheap_shard(task: CheapTask, model: CheapModel) -> dict[str, Any]:
    """Cheap-score one token shard; write its cheap shard, then the record (last)."""
    start = time.perf_counter()
    table = read_parquet(task.token_path, ["seq_id", "input_ids"], task.token_entry)
    chunks = Chunks.from_arrow(table.column("input_ids"))
    cpu = time.process_time()
    scores = model.predict(chunks).astype(np.float32)
    cpu = time.process_time() - cpu
    out = pa.Table.from_arrays(
        [table.column("seq_id").cast(pa.uint64()), pa.array(scores),
         pa.array(chunks.lengths.astype(np.int32))],
        schema=CHEAP_SCHEMA,
    )  # fmt: skip
    record = done_record_path(task.cheap_path)
    storage.remove(record)
    write_parquet(task.cheap_path, out)
    tokens = int(chunks.values.size)
    stats = {
        "shard": task.cheap_path.name,
        "rows": out.num_rows,
        "tokens": tokens,
        "seconds": round(time.perf_counter() - start, 3),
        "predict_cpu_s": round(cpu, 4),  # features + prediction, the scorer's own cost
        "tokens_per_cpu_s": round(tokens / cpu, 1) if cpu > 0 else None,
    }
    meta = {"rows": out.num_rows, "token_rows": out.num_rows, "fingerprint": model.digest[:16],
            "stats": stats}  # fmt: skip
    commit_unit(record, [task.cheap_path], meta=meta, sha256=True)
    return stats
