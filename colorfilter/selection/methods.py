"""Selection methods: which scored sequences to keep for a given selection ratio tau.

Every method returns the chosen `seq_id`s (uint64, sorted ascending) and keeps
k = n_selected(N, tau) = floor(N / tau) rows (at least 1 when N >= 1), except
`color_batchwise`, whose count follows the paper's Algorithm 1 (see `batchwise_select`).

All methods but `color_batchwise` are one exact top-k on a key (`ranking_key`), so they share
`topk.topk`, stream over parquet shards, and break ties by smaller seq_id. Seeded randomness is a
hash of (seed, seq_id), never of row position, so a selection does not depend on the order in
which rows or shards are listed.
"""

from __future__ import annotations

import math
from collections.abc import Callable, Iterable, Sequence
from dataclasses import dataclass

import numpy as np

from colorfilter.errors import BadDataError
from colorfilter.hashing import seeded_keys
from colorfilter.selection.batchwise import batchwise_stream
from colorfilter.selection.sources import (
    SEQ_ID,
    Batch,
    Columns,
    DerivedKey,
    Direction,
    KeySpec,
    Source,
    as_seq_ids,
    as_source,
    sortable_key,
)
from colorfilter.selection.topk import DEFAULT_MAX_BUFFER_ROWS, topk

DEFAULT_TAUS = (7, 16, 32, 64)
DSIR_WEIGHT = "dsir_weight"  # column holding dsir.log_importance weights for method "dsir"
CHEAP_SCORE = "cheap_score"  # column of the cheap scorer's scores (colorfilter.distill)
# Algorithm 1 picks n of every tau*n candidates, n being the target model's batch (256 sequences
# of 512 tokens in the paper). 64 is the config's default (selection.block_n), so a call without
# block_n selects what `colorfilter select` writes.
DEFAULT_BLOCK_N = 64
_STREAM_RANDOM, _STREAM_GUMBEL, _STREAM_PERMUTATION = "random", "gumbel", "permutation"


def n_selected(n_rows: int, tau: float) -> int:
    """floor(n_rows / tau), but at least 1 when there is at least one row."""
    check_tau(tau)
    if n_rows < 0:
        raise ValueError(f"n_rows must be >= 0, got {n_rows}")
    return 0 if n_rows == 0 else max(1, math.floor(n_rows / tau))


def check_tau(tau: float) -> None:
    """tau is a finite real >= 1 (keep 1 in tau)."""
    if isinstance(tau, bool) or not isinstance(tau, (int, float, np.integer, np.floating)):
        raise TypeError(f"tau must be a number, got {tau!r}")
    if not math.isfinite(tau) or tau < 1:
        raise ValueError(f"tau must be a finite number >= 1, got {tau}")


# ----------------------------------------------------------------------------- seeded keys


def seeded_hash(seq_id: np.ndarray, seed: int, stream: str) -> np.ndarray:
    """A uint64 per seq_id that depends only on (seed, stream, seq_id)."""
    return seeded_keys(seq_id, seed, f"selection.{stream}")


def random_key(seq_id: np.ndarray, seed: int) -> np.ndarray:
    """Uniform random uint64 key; its k smallest rows are a uniform random k-subset."""
    return seeded_hash(seq_id, seed, _STREAM_RANDOM)


def gumbel_key(score: np.ndarray, seq_id: np.ndarray, seed: int, temperature: float) -> np.ndarray:
    """score / T + Gumbel noise: its top k is a draw without replacement from softmax(score/T)."""
    if not (math.isfinite(temperature) and temperature > 0):
        raise ValueError(f"temperature must be a finite number > 0, got {temperature}")
    bits = seeded_hash(seq_id, seed, _STREAM_GUMBEL) >> np.uint64(11)
    uniform = (bits.astype(np.float64) + 0.5) * 2.0**-53  # in (0, 1), never 0 or 1
    return np.asarray(score, dtype=np.float64) / temperature - np.log(-np.log(uniform))


# ----------------------------------------------------------------------------- registry


@dataclass(frozen=True)
class RankingKey:
    """What a top-k method ranks by: a column or derived key, and which end is best."""

    key: KeySpec
    direction: Direction


def _color(seed: int, temperature: float) -> RankingKey:
    """Highest score = prior_loss - cond_loss (the paper's global top-k)."""
    return RankingKey("score", "max")


def _color_softmax(seed: int, temperature: float) -> RankingKey:
    """Sample without replacement with P proportional to softmax(score / temperature)."""
    gumbel_key(np.zeros(0), np.zeros(0, np.uint64), seed, temperature)  # validate up front

    def compute(batch: Batch) -> np.ndarray:
        return gumbel_key(batch["score"], batch[SEQ_ID], seed, temperature)

    return RankingKey(DerivedKey(("score", SEQ_ID), compute, "softmax-sampling key"), "max")


def _random(seed: int, temperature: float) -> RankingKey:
    """A uniform random subset, seeded."""
    random_key(np.zeros(0, np.uint64), seed)  # validate the seed up front

    def compute(batch: Batch) -> np.ndarray:
        return random_key(batch[SEQ_ID], seed)

    return RankingKey(DerivedKey((SEQ_ID,), compute, "random key"), "min")


def _conditional_only(seed: int, temperature: float) -> RankingKey:
    """Lowest cond_loss: what the conditional (target-tuned) model finds easiest."""
    return RankingKey("cond_loss", "min")


def _prior_only(seed: int, temperature: float) -> RankingKey:
    """Lowest prior_loss: what the prior model finds easiest."""
    return RankingKey("prior_loss", "min")


def _dsir(seed: int, temperature: float) -> RankingKey:
    """Highest DSIR log importance weight (column `dsir_weight`, from dsir.log_importance)."""
    return RankingKey(DSIR_WEIGHT, "max")


def _color_distilled(seed: int, temperature: float) -> RankingKey:
    """Highest cheap score (column `cheap_score`: the scorer distilled from the LM pair)."""
    return RankingKey(CHEAP_SCORE, "max")


_RANKINGS: dict[str, Callable[[int, float], RankingKey]] = {
    "color": _color,
    "color_softmax": _color_softmax,
    "random": _random,
    "conditional_only": _conditional_only,
    "prior_only": _prior_only,
    "dsir": _dsir,
    "color_distilled": _color_distilled,
}
METHODS = ("color", "color_batchwise", *list(_RANKINGS)[1:])


def ranking_key(method: str, *, seed: int = 0, temperature: float = 1.0) -> RankingKey:
    """The top-k key of `method` (every method but color_batchwise), e.g. to call `topk` itself."""
    if method not in _RANKINGS:
        known = ", ".join(METHODS)
        hint = " (it is not a top-k; use select)" if method == "color_batchwise" else ""
        raise ValueError(f"unknown top-k method {method!r}{hint}; known: {known}")
    return _RANKINGS[method](seed, temperature)


# ----------------------------------------------------------------------------- batchwise


def batchwise_select(
    seq_id: np.ndarray,
    score: np.ndarray,
    tau: float,
    *,
    block_n: int = DEFAULT_BLOCK_N,
    seed: int = 0,
) -> np.ndarray:
    """The paper's Algorithm 1: best `block_n` of each random block of round(tau * block_n).

    Rows are permuted by a seeded hash of seq_id, cut into consecutive blocks; a full block keeps
    its best `block_n` by score (ties by seq_id), the last partial block of L rows keeps
    floor(L / tau). Needs seq_id and score in memory (~40 bytes per row while sorting);
    `select_many` streams the same selection in bounded memory (selection.batchwise).
    """
    check_tau(tau)
    _check_block_n(block_n)
    seq_id, score = as_seq_ids(seq_id), np.asarray(score)
    _refuse_nan(score, "score")
    block_size = math.floor(tau * block_n + 0.5)
    n_rows = len(seq_id)
    permutation = np.lexsort((seq_id, seeded_hash(seq_id, seed, _STREAM_PERMUTATION)))
    seq_id, score = seq_id[permutation], score[permutation]
    block = np.arange(n_rows) // block_size
    ranked = np.lexsort((seq_id, sortable_key(score, "max")[0], block))  # by block, best first
    # Blocks are contiguous and `block` is sorted, so ranked[i] is in block[i] at rank i % size.
    rank_in_block = np.arange(n_rows) % block_size
    quota = np.full(n_rows // block_size + 1, block_n)
    quota[-1] = math.floor((n_rows % block_size) / tau)  # the partial last block, if any
    keep = rank_in_block < quota[block]
    return np.sort(seq_id[ranked[keep]])


def _check_block_n(block_n: int) -> None:
    if isinstance(block_n, bool) or not isinstance(block_n, (int, np.integer)) or block_n < 1:
        raise ValueError(f"block_n must be an integer >= 1, got {block_n!r}")


def _refuse_nan(values: np.ndarray, name: str) -> None:
    if values.dtype.kind == "f" and (nan_count := int(np.count_nonzero(np.isnan(values)))):
        raise BadDataError(f"{nan_count} of {len(values)} rows have a NaN {name}")


# ----------------------------------------------------------------------------- entry points


@dataclass(frozen=True)
class Memory:
    """How selections stay in bounded memory: the boundary rows a top-k pass buffers, and where
    `color_batchwise` spills its rows (a temporary folder made there and removed)."""

    max_buffer_rows: int = DEFAULT_MAX_BUFFER_ROWS
    spill_dir: str | None = None


def select_many(
    method: str,
    data: Source | Columns | Sequence[Columns],
    taus: Iterable[float] = DEFAULT_TAUS,
    *,
    seed: int = 0,
    temperature: float = 1.0,
    block_n: int = DEFAULT_BLOCK_N,
    memory: Memory = Memory(),
    pool_rows: int | None = None,
) -> dict[float, np.ndarray]:
    """One selection per tau; top-k methods share their passes over `data`.

    `pool_rows`: the pool's size when `data` holds only part of it (the cascade's LM-scored
    candidates): k stays n_selected(pool_rows, tau), the top of the rows there are.

    `data`: in-memory columns (mapping of arrays or Arrow table; a list for several parts) or a
    Source such as `ParquetSource(paths)`, which streams with bounded memory.
    """
    taus = list(taus)
    for tau in taus:
        check_tau(tau)
    source = as_source(data)
    n_rows = source.num_rows() if pool_rows is None else pool_rows
    k_by_tau = {tau: n_selected(n_rows, tau) for tau in taus}
    if method == "color_batchwise":  # streamed through hash buckets: bounded memory
        _check_block_n(block_n)
        return batchwise_stream(
            source,
            taus,
            block_n=block_n,
            seed=seed,
            max_buffer_rows=memory.max_buffer_rows,
            permutation_hash=lambda ids: seeded_hash(ids, seed, _STREAM_PERMUTATION),
            spill_dir=memory.spill_dir,
        )
    ranking = ranking_key(method, seed=seed, temperature=temperature)
    result = topk(
        source,
        k_by_tau.values(),
        key=ranking.key,
        direction=ranking.direction,
        max_buffer_rows=memory.max_buffer_rows,
    )
    return {tau: result.seq_ids[k] for tau, k in k_by_tau.items()}


def select(
    method: str,
    data: Source | Columns | Sequence[Columns],
    tau: float,
    *,
    seed: int = 0,
    temperature: float = 1.0,
    block_n: int = DEFAULT_BLOCK_N,
    max_buffer_rows: int = DEFAULT_MAX_BUFFER_ROWS,
) -> np.ndarray:
    """Chosen seq_ids (uint64, ascending) of `method` at ratio `tau`; see `select_many`."""
    return select_many(
        method,
        data,
        [tau],
        seed=seed,
        temperature=temperature,
        block_n=block_n,
        memory=Memory(max_buffer_rows),
    )[tau]
