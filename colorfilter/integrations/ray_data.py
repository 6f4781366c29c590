"""A Ray Data scorer: `Dataset.map_batches(ColorFilterBatchScorer, ...)` adds `prior_loss`,
`cond_loss` and `score` (float32) columns to batches holding an `input_ids` column (chunks of
token ids, as the run's token shards hold them) or a `text` column.

    import ray
    from colorfilter.integrations.ray_data import ColorFilterBatchScorer

    ds = ray.data.read_parquet("outputs/demo/tokens/pool").select_columns(["seq_id", "input_ids"])
    scored = ds.map_batches(
        ColorFilterBatchScorer, fn_constructor_kwargs={"run": "outputs/demo"},
        compute=ray.data.ActorPoolStrategy(size=1), num_cpus=1, batch_size=256,
    )

The scorer is built in `__init__`, once per actor (`compute=ActorPoolStrategy(size=n)` sizes the
pool; `concurrency=` is deprecated). `input_ids` rows are chunks of at most seq_len tokens,
scored as `Scorer.score_ids` scores them: the score stage's numbers. Text rows are scored as
`Scorer.score_texts` scores them (each text chunked on its own; a text's losses are the
token-weighted mean of its chunks'); a missing text (null, NaN) scores NaN. A batch with both
columns is scored on `input_ids`. Batches may be numpy dicts (Ray's default), pyarrow tables
or pandas frames; the same kind comes back.

Threads: Ray sets OMP_NUM_THREADS=1 in actors, so the actor sets torch's thread count itself:
`torch_threads`, or else the CPUs the actor holds (`num_cpus=`, at least 1). On a small machine
leave CPUs for the read tasks: `num_cpus` below the node's count, or fractional (NOTES, Ray).
"""

from __future__ import annotations

from typing import Any

import numpy as np
import pyarrow as pa

from colorfilter import api
from colorfilter.io.token_shards import pad_input_ids
from colorfilter.scorer import Scorer, ScorerSettings

COLUMNS = ("prior_loss", "cond_loss", "score")


class ColorFilterBatchScorer:
    """A callable class for `Dataset.map_batches`: loads a run's pair once, scores batches."""

    def __init__(
        self,
        run: str | ScorerSettings,
        *,
        text_column: str = "text",
        ids_column: str = "input_ids",
        device: str | None = None,
        precision: str | None = None,
        batch_size: int | None = None,
        torch_threads: int | None = None,
    ):
        import torch

        if isinstance(run, ScorerSettings):
            self.scorer = Scorer(run)
        else:
            self.scorer = api.load_scorer(run, device=device, precision=precision,
                                      batch_size=batch_size)  # fmt: skip
        torch.set_num_threads(torch_threads or _actor_cpus())
        self.text_column, self.ids_column = text_column, ids_column

    def __call__(self, batch: Any) -> Any:
        names = list(batch.column_names if isinstance(batch, pa.Table) else batch.keys())
        if self.ids_column in names:
            scores = self._score_ids(_column(batch, self.ids_column))
        elif self.text_column in names:
            texts = [t if isinstance(t, str) else "" for t in _column(batch, self.text_column)]
            scores = self.scorer.score_texts(texts)
        else:
            raise ValueError(
                f"the batch has neither a {self.ids_column!r} nor a {self.text_column!r} column "
                f"(columns: {names}); name yours with ids_column= or text_column="
            )
        return _with_columns(batch, {name: getattr(scores, name) for name in COLUMNS})

    def _score_ids(self, column: Any) -> Any:
        if isinstance(column, np.ndarray) and column.ndim == 2:  # a fixed-shape tensor column
            return self.scorer.score_ids(column)
        if not isinstance(column, (pa.Array, pa.ChunkedArray)):
            column = pa.array(list(column), type=pa.list_(pa.int32()))
        ids, n_tokens = pad_input_ids(column, self.scorer.seq_len, self.scorer.settings.pad_id)
        return self.scorer.score_ids(ids, n_tokens)


def _actor_cpus() -> int:
    """The CPUs this actor holds (1 outside Ray or when it holds less than one)."""
    import ray

    if not ray.is_initialized():
        return 1
    return max(1, int(ray.get_runtime_context().get_assigned_resources().get("CPU", 1)))


def _column(batch: Any, name: str) -> Any:
    if isinstance(batch, pa.Table):
        column = batch.column(name)
        return (
            column
            if pa.types.is_list(column.type) or pa.types.is_large_list(column.type)
            else column.to_pylist()
        )
    values = batch[name]
    return values.to_numpy() if hasattr(values, "to_numpy") else values


def _with_columns(batch: Any, columns: dict[str, np.ndarray]) -> Any:
    if isinstance(batch, pa.Table):
        for name, values in columns.items():
            index, array = batch.schema.get_field_index(name), pa.array(values, pa.float32())
            if index >= 0:  # e.g. a selection's own score column: replaced, not duplicated
                batch = batch.set_column(index, name, array)
            else:
                batch = batch.append_column(name, array)
        return batch
    for name, values in columns.items():
        batch[name] = values
    return batch
