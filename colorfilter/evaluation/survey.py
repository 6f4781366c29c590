"""Pass 2 of evaluate's planning: what each selection holds, and where the runs' chunks live.

One pass over the token shards (and the score shards, for the score histograms) answers, shard
by shard and with a binary search into each sorted selection:
  - each selection's chunks and tokens per source label (the report's composition);
  - the shard and row of every chunk a method run trains on (its ChunkIndex);
  - for random-curve runs, the first chunks of a seeded pass over the whole pool, drawn as the
    pool streams by (`Smallest`: the n smallest epoch keys), with their shard and row;
  - per label, a histogram of the LM score (the report's plot).
Memory: the selections themselves (packed: ~2 bytes per selected chunk), the answers (a few
bytes per chunk a run trains on), and one shard.
"""

from __future__ import annotations

from collections.abc import Hashable, Sequence
from dataclasses import dataclass, field

import numpy as np

from colorfilter.errors import BadDataError
from colorfilter.evaluation.packed import PackedIds
from colorfilter.evaluation.pool import Census, ShardRows, iter_shards, scored_codes
from colorfilter.hashing import seeded_keys
from colorfilter.io.location import Location

# colorfilter.models.data.epoch_order's key stream: a run's order is its chunks sorted by these
# keys (ties by seq_id), pass by pass; tests/evaluation check that both agree.
EPOCH_ORDER_STREAM = "models.epoch-order"


def epoch_keys(seq_ids: np.ndarray, seed: int, epoch: int = 0) -> np.ndarray:
    """The keys that order a target run's chunks in pass `epoch` (models.data.epoch_order)."""
    return seeded_keys(seq_ids, seed, EPOCH_ORDER_STREAM, epoch)


@dataclass
class SurveyRequest:
    """What pass 2 is asked for."""

    selections: dict[Hashable, PackedIds] = field(default_factory=dict)  # composition of each
    locate: np.ndarray = field(default_factory=lambda: np.zeros(0, np.uint64))  # sorted, unique
    draws: dict[int, int] = field(default_factory=dict)  # seed -> chunks of its first pass
    bins: np.ndarray | None = None  # score histogram edges (None: no histograms)


@dataclass
class Survey:
    """Pass 2's answers."""

    selected: dict[Hashable, tuple[np.ndarray, np.ndarray]]  # (chunks, tokens) per label code
    located: tuple[np.ndarray, np.ndarray]  # (shard number, row) of each id to locate
    drawn: dict[int, tuple[np.ndarray, np.ndarray, np.ndarray]]  # seed -> seq_id, shard, row
    histograms: np.ndarray | None  # [label code, bin] counts of finite scores


def survey(census: Census, request: SurveyRequest, seq_len: int,
           score_paths: Sequence[Location] | None = None) -> Survey:  # fmt: skip
    """Pass 2 over the pool `census` describes (`score_paths`: the LM pair's score shards, for
    the histograms)."""
    selected = {key: _Counts() for key in request.selections}
    located = (np.full(len(request.locate), -1, np.int32), np.zeros(len(request.locate), np.int64))
    draws = {seed: Smallest(n, seed, (np.int32, np.int64)) for seed, n in request.draws.items()}
    hist = _Histograms(request.bins) if request.bins is not None else None
    scored = score_paths if hist is not None else None
    for rows in iter_shards(census.paths, census.labels, scored, ("score",)):
        low, high = rows.bounds if len(rows.seq_id) else (1, 0)
        for key, ids in request.selections.items():
            selected[key].add(rows, *rows.find(ids.between(low, high)))
        at, found = rows.find(request.locate)
        located[0][at], located[1][at] = rows.number, found
        full = np.flatnonzero(rows.n_tokens == seq_len)
        shard = np.full(len(full), rows.number, np.int32)
        for draw in draws.values():
            draw.add(rows.seq_id[full], shard, full)
        if hist is not None:
            hist.add(rows)
    for key, ids in request.selections.items():
        selected[key].check(len(ids))
    if np.any(located[0] < 0):
        raise BadDataError(
            f"{int(np.count_nonzero(located[0] < 0))} selected seq_ids are not in the pool's "
            "token shards"
        )
    return Survey(
        {key: counts.value() for key, counts in selected.items()}, located,
        {seed: draw.result() for seed, draw in draws.items()},
        None if hist is None else hist.counts,
    )  # fmt: skip


class _Counts:
    """One selection's chunks and tokens per label code, and how many of its ids were found."""

    def __init__(self) -> None:
        self.chunks = np.zeros(1, np.int64)
        self.tokens = np.zeros(1, np.int64)
        self.found = 0

    def add(self, rows: ShardRows, at: np.ndarray, found: np.ndarray) -> None:
        self.found += len(at)
        codes = np.zeros(len(found), np.int32) if rows.codes is None else rows.codes[found]
        size = max(len(self.chunks), int(codes.max()) + 1 if len(codes) else 0)
        self.chunks = np.pad(self.chunks, (0, size - len(self.chunks)))
        self.tokens = np.pad(self.tokens, (0, size - len(self.tokens)))
        self.chunks += np.bincount(codes, minlength=size)
        weights = rows.n_tokens[found].astype(np.float64)
        self.tokens += np.bincount(codes, weights=weights, minlength=size).astype(np.int64)

    def check(self, expected: int) -> None:
        if self.found != expected:
            raise BadDataError(
                f"{expected - self.found} selected seq_ids are not in the pool's token shards"
            )

    def value(self) -> tuple[np.ndarray, np.ndarray]:
        return self.chunks, self.tokens


class _Histograms:
    """Counts of finite scores per label code and bin (`bins`: the edges)."""

    def __init__(self, bins: np.ndarray) -> None:
        self.bins = bins
        self.counts = np.zeros((1, len(bins) - 1), np.int64)

    def add(self, rows: ShardRows) -> None:
        score = rows.scores["score"]
        finite = np.isfinite(score)
        codes = scored_codes(rows)
        codes = np.zeros(len(score), np.int32) if codes is None else codes
        codes, score = codes[finite], score[finite]
        n_bins = len(self.bins) - 1
        slot = np.clip(np.searchsorted(self.bins, score, side="right") - 1, 0, n_bins - 1)
        size = max(len(self.counts), int(codes.max()) + 1 if len(codes) else 0)
        if size > len(self.counts):
            self.counts = np.pad(self.counts, ((0, size - len(self.counts)), (0, 0)))
        flat = np.bincount(codes.astype(np.int64) * n_bins + slot, minlength=size * n_bins)
        self.counts += flat.reshape(size, n_bins)


class Smallest:
    """The `n` ids that come first in a seeded pass (smallest epoch key, ties by seq_id),
    streamed, each with its payload columns (`payload`: their dtypes): a run's first pass over
    a selection or over the whole pool without every key in memory (at most 2n held)."""

    def __init__(self, n: int, seed: int, payload: tuple = ()) -> None:
        self.n, self.seed, self.payload = n, seed, payload
        self.parts: list[tuple[np.ndarray, ...]] = []
        self.held = 0
        self.bound: np.uint64 | None = None  # no id with a larger key can be among the n

    def add(self, ids: np.ndarray, *payload: np.ndarray) -> None:
        if self.n <= 0 or not len(ids):
            return
        key = epoch_keys(ids, self.seed)
        columns = (key, ids, *payload)
        if self.bound is not None:
            keep = key <= self.bound
            columns = tuple(column[keep] for column in columns)
        self.parts.append(columns)
        self.held += len(columns[0])
        if self.held >= 2 * self.n:
            self._shrink()

    def _shrink(self) -> None:
        columns = tuple(np.concatenate(column) for column in zip(*self.parts))
        if len(columns[0]) > self.n:
            self.bound = np.partition(columns[0], self.n - 1)[self.n - 1]
            keep = columns[0] <= self.bound
            columns = tuple(column[keep] for column in columns)
        self.parts, self.held = [columns], len(columns[0])

    def result(self) -> tuple[np.ndarray, ...]:
        """(ids, *payload) of the first n, in their order."""
        if not self.parts:
            return (np.zeros(0, np.uint64), *(np.zeros(0, dtype) for dtype in self.payload))
        self._shrink()
        key, ids, *payload = self.parts[0]
        order = np.lexsort((ids, key))[: self.n]
        return (ids[order], *(column[order] for column in payload))
