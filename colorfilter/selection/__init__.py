"""Data selection: CoLoR-Filter and baselines as exact, streaming top-k over per-sequence keys."""

from colorfilter.selection.methods import (
    CHEAP_SCORE,
    DEFAULT_BLOCK_N,
    DEFAULT_TAUS,
    DSIR_WEIGHT,
    METHODS,
    Memory,
    RankingKey,
    batchwise_select,
    gumbel_key,
    n_selected,
    random_key,
    ranking_key,
    select,
    select_many,
)
from colorfilter.selection.sources import ArraySource, DerivedKey, ParquetSource
from colorfilter.selection.topk import (
    TopKResult,
    topk,
    topk_arrays,
    topk_parquet,
)

__all__ = [
    "CHEAP_SCORE",
    "DEFAULT_BLOCK_N",
    "DEFAULT_TAUS",
    "DSIR_WEIGHT",
    "METHODS",
    "ArraySource",
    "Memory",
    "DerivedKey",
    "ParquetSource",
    "RankingKey",
    "TopKResult",
    "batchwise_select",
    "gumbel_key",
    "n_selected",
    "random_key",
    "ranking_key",
    "select",
    "select_many",
    "topk",
    "topk_arrays",
    "topk_parquet",
]
