"""The pool as evaluate reads it: token shards one at a time, never the whole pool in memory.

Why: a C4-sized pool has ~340M chunks, and an index of every chunk (id, length, shard, row,
label, an argsort) costs ~36 bytes a row, ~12 GB on the driver. What planning needs of the pool
is much less: per-source counts and score sums, the short chunks (the tail of each input file,
never trained on), the whole pool's digest (for random-curve runs), and where the chunks of
each selection live, which a binary search finds shard by shard (`ShardRows.find`). So every
pass here reads a shard's `seq_id`, `n_tokens` and `source` columns (and its score shard's
columns when asked), folds them into small accumulators, and drops them.
"""

from __future__ import annotations

import hashlib
import logging
from collections.abc import Iterator, Sequence
from dataclasses import dataclass, field

import numpy as np
import pyarrow as pa
import pyarrow.compute as pc

from colorfilter.errors import BadDataError
from colorfilter.evaluation.bysource import Moments
from colorfilter.evaluation.packed import PackedIds
from colorfilter.io.location import Location
from colorfilter.io.transfer import open_parquet, read_parquet

log = logging.getLogger(__name__)

LM_COLUMNS = ("prior_loss", "cond_loss", "score")  # the score shards' columns the report uses


class Labels:
    """The pool's `source` labels as small integer codes, shared by every pass over the pool.

    Codes are given in order of first appearance (None: rows without a label), 4 bytes per row
    of one shard at a time instead of a Python string per row.
    """

    def __init__(self) -> None:
        self.code: dict[str | None, int] = {}
        self.names: list[str | None] = []

    def encode(self, column: pa.ChunkedArray | pa.Array) -> np.ndarray:
        """int32 codes of one shard's labels (new labels get the next codes)."""
        if isinstance(column, pa.ChunkedArray):
            column = column.combine_chunks()
        encoded = column.dictionary_encode()
        local = encoded.dictionary.to_pylist() + [None]  # the last local code: a null row
        lookup = np.array([self._code_of(value) for value in local], dtype=np.int32)
        indices = pc.fill_null(encoded.indices, len(local) - 1).to_numpy()
        return lookup[indices]

    def _code_of(self, value: str | None) -> int:
        if value not in self.code:
            self.code[value] = len(self.names)
            self.names.append(value)
        return self.code[value]

    def labels(self, none: str = "") -> np.ndarray:
        """The label of each code as str (`none` for rows without one)."""
        return np.array([none if n is None else str(n) for n in self.names], dtype=object)

    def mask(self, prefixes: Sequence[str]) -> np.ndarray:
        """Per code: whether its label starts with one of `prefixes` (None reads "")."""
        return is_target(self.labels(), prefixes)


def is_target(labels: np.ndarray, prefixes: Sequence[str]) -> np.ndarray:
    """Mask of labels that start with any of `prefixes` (the target-like sources)."""
    return np.array([any(str(s).startswith(p) for p in prefixes) for s in labels], dtype=bool)


@dataclass(frozen=True)
class ShardRows:
    """One token shard's index columns, and (when asked) its score rows joined to them."""

    number: int  # the shard's position in the pool's list (a ChunkIndex's file_index)
    seq_id: np.ndarray  # uint64
    n_tokens: np.ndarray  # int32
    codes: np.ndarray | None  # int32 label codes (None: the pool records no labels)
    scored: np.ndarray | None = None  # rows of the score shard's rows, in its order
    scores: dict[str, np.ndarray] = field(default_factory=dict)  # the score shard's columns
    sorter: np.ndarray | None = None  # argsort of seq_id (None: seq_id is ascending)

    @property
    def bounds(self) -> tuple[int, int]:
        """The smallest and largest seq_id here."""
        first, last = (0, -1) if self.sorter is None else (self.sorter[0], self.sorter[-1])
        return int(self.seq_id[first]), int(self.seq_id[last])

    def find(self, ids: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
        """(positions into `ids`, rows here) of the ids this shard holds; `ids` sorted."""
        empty = np.zeros(0, np.int64)
        if not len(self.seq_id) or not len(ids):
            return empty, empty
        low, high = self.bounds
        lo = int(np.searchsorted(ids, np.uint64(low), side="left"))
        hi = int(np.searchsorted(ids, np.uint64(high), side="right"))
        wanted = ids[lo:hi]
        at = np.searchsorted(self.seq_id, wanted, sorter=self.sorter)
        at = np.minimum(at, len(self.seq_id) - 1)
        rows = at if self.sorter is None else self.sorter[at]
        hit = self.seq_id[rows] == wanted
        return lo + np.flatnonzero(hit), rows[hit].astype(np.int64, copy=False)


def has_labels(paths: Sequence[Location]) -> bool:
    """Whether the token shards have a `source` column (prepare with data.source_field)."""
    if not paths:
        return False
    with open_parquet(paths[0]) as first:
        return "source" in first.schema_arrow.names


def iter_shards(
    paths: Sequence[Location],
    labels: Labels | None = None,
    score_paths: Sequence[Location] | None = None,
    score_columns: Sequence[str] = (),
) -> Iterator[ShardRows]:
    """Each token shard's rows in turn (labels encoded with `labels`), with its score shard's
    `score_columns` joined by seq_id when `score_paths` pairs one with each token shard."""
    columns = ["seq_id", "n_tokens"] + (["source"] if labels is not None else [])
    for number, path in enumerate(paths):
        table = read_parquet(path, columns=columns)
        seq_id = table.column("seq_id").to_numpy().astype(np.uint64, copy=False)
        ascending = len(seq_id) < 2 or bool(np.all(seq_id[1:] > seq_id[:-1]))
        rows = ShardRows(
            number,
            seq_id,
            table.column("n_tokens").to_numpy().astype(np.int32, copy=False),
            None if labels is None else labels.encode(table.column("source")),
            sorter=None if ascending else np.argsort(seq_id, kind="stable"),
        )
        del table
        if score_paths is not None:
            rows = _with_scores(rows, path, score_paths[number], score_columns)
        yield rows


def _with_scores(rows: ShardRows, path: Location, score_path: Location,
                 columns: Sequence[str]) -> ShardRows:  # fmt: skip
    table = read_parquet(score_path, columns=["seq_id", *columns])
    ids = table.column("seq_id").to_numpy().astype(np.uint64, copy=False)
    scores = {name: table.column(name).to_numpy() for name in columns}
    if np.array_equal(ids, rows.seq_id):
        scored = None  # the common case: one score row per token row, in the same order
    else:
        found, scored = rows.find(np.sort(ids))
        if len(found) != len(ids):
            raise BadDataError(
                f"score shard {score_path} holds {len(ids) - len(found)} seq_ids that token "
                f"shard {path} does not: rerun `colorfilter score`"
            )
        by_id = np.argsort(ids, kind="stable")  # scored rows follow the sorted ids
        scores = {name: values[by_id] for name, values in scores.items()}
    return ShardRows(rows.number, rows.seq_id, rows.n_tokens, rows.codes, scored, scores,
                     rows.sorter)  # fmt: skip


def scored_codes(rows: ShardRows) -> np.ndarray | None:
    """The label codes of the score rows (None without labels)."""
    if rows.codes is None:
        return None
    return rows.codes if rows.scored is None else rows.codes[rows.scored]


@dataclass
class Census:
    """What one pass over the pool learns (pass 1 of evaluate's planning)."""

    paths: list[Location]
    seq_len: int
    rows: int
    full_chunks: int  # rows of exactly seq_len tokens (the only ones trained on)
    short_ids: np.ndarray  # sorted seq_ids of the shorter rows (a file's tail chunk)
    short_tokens: np.ndarray  # their n_tokens
    digest: str  # the whole pool's selection digest (plan.selection_digest of every seq_id)
    labels: Labels | None  # None: the pool records no labels
    chunks_by_code: np.ndarray  # int64 per label code
    tokens_by_code: np.ndarray  # int64 per label code
    moments: dict[str, Moments] | None = None  # LM score columns per label code (scored rows)
    score_range: tuple[float, float] | None = None  # of the finite scores

    def full_count(self, selection: PackedIds) -> int:
        """How many of a selection's chunks are full-length."""
        return len(selection) - selection.count_in(self.short_ids)

    def without_short(self, ids: np.ndarray) -> np.ndarray:
        """`ids` (ascending) less the pool's short chunks."""
        if not len(ids) or not len(self.short_ids):
            return ids
        lo = np.searchsorted(self.short_ids, ids[0], side="left")
        hi = np.searchsorted(self.short_ids, ids[-1], side="right")
        inside = self.short_ids[lo:hi]
        return ids if not len(inside) else ids[~np.isin(ids, inside, assume_unique=True)]


def take_census(paths: Sequence[Location], seq_len: int,
                score_paths: Sequence[Location] | None = None) -> Census:  # fmt: skip
    """Pass 1: counts, short chunks, labels, the pool's digest, and (with `score_paths`, the LM
    pair's score shards) the score columns' moments per label and the scores' range."""
    paths = list(paths)
    labels = Labels() if has_labels(paths) else None
    tally = _Tally(labels, score_paths is not None)
    digest = _PoolDigest()
    columns = LM_COLUMNS if score_paths is not None else ()
    for rows in iter_shards(paths, labels, score_paths, columns):
        tally.add(rows, seq_len)
        digest.add(rows)
    if labels is not None and all(name is None for name in labels.names):
        labels = None  # a column of nulls records nothing
    return Census(
        paths, seq_len, tally.rows, tally.full, *tally.shorts(), digest.value(paths), labels,
        tally.chunks, tally.tokens, tally.moments, tally.score_range(),
    )  # fmt: skip


class _Tally:
    """The census's accumulators."""

    def __init__(self, labels: Labels | None, scored: bool) -> None:
        self.labels = labels
        self.rows = self.full = 0
        self.short_ids: list[np.ndarray] = []
        self.short_tokens: list[np.ndarray] = []
        self.chunks = np.zeros(0, np.int64)
        self.tokens = np.zeros(0, np.int64)
        self.moments = {name: Moments() for name in LM_COLUMNS} if scored else None
        self.low, self.high = np.inf, -np.inf

    def add(self, rows: ShardRows, seq_len: int) -> None:
        self.rows += len(rows.seq_id)
        short = rows.n_tokens != seq_len
        self.full += len(rows.seq_id) - int(np.count_nonzero(short))
        self.short_ids.append(rows.seq_id[short])
        self.short_tokens.append(rows.n_tokens[short])
        codes = rows.codes if rows.codes is not None else np.zeros(len(rows.seq_id), np.int32)
        size = max(len(self.labels.names) if self.labels else 1, len(self.chunks))
        self.chunks = _grown(self.chunks, size) + np.bincount(codes, minlength=size)
        tokens = np.bincount(codes, weights=rows.n_tokens, minlength=size)
        self.tokens = _grown(self.tokens, size) + tokens.astype(np.int64)
        if self.moments is not None:
            self._add_scores(rows)

    def _add_scores(self, rows: ShardRows) -> None:
        score = rows.scores["score"]
        finite = np.isfinite(score)
        codes = scored_codes(rows)
        codes = np.zeros(len(score), np.int32) if codes is None else codes
        for name, moments in self.moments.items():
            moments.add(codes[finite], rows.scores[name][finite])
        if finite.any():
            self.low = min(self.low, float(np.min(score[finite])))
            self.high = max(self.high, float(np.max(score[finite])))

    def shorts(self) -> tuple[np.ndarray, np.ndarray]:
        ids, tokens = np.concatenate(self.short_ids), np.concatenate(self.short_tokens)
        order = np.argsort(ids, kind="stable")
        return ids[order], tokens[order]

    def score_range(self) -> tuple[float, float] | None:
        return (self.low, self.high) if self.low <= self.high else None


def _grown(counts: np.ndarray, size: int) -> np.ndarray:
    return counts if len(counts) >= size else np.pad(counts, (0, size - len(counts)))


class _PoolDigest:
    """sha256 of every seq_id in ascending order, streamed: shards in their listed order are
    hashed as they come while their ranges follow one another (prepare's shards do)."""

    def __init__(self) -> None:
        self.hasher = hashlib.sha256()
        self.bounds: list[tuple[int, int, int]] = []  # (low, high, shard number), non-empty
        self.in_order = True

    def add(self, rows: ShardRows) -> None:
        if not len(rows.seq_id):
            return
        low, high = rows.bounds
        if self.bounds and low <= self.bounds[-1][1]:
            self.in_order = False
        self.bounds.append((low, high, rows.number))
        if self.in_order:
            self.hasher.update(_ascending(rows.seq_id, rows.sorter).tobytes())

    def value(self, paths: list[Location]) -> str:
        if self.in_order:
            return self.hasher.hexdigest()[:16]
        return _sorted_digest(paths, sorted(self.bounds))


def _ascending(seq_id: np.ndarray, sorter: np.ndarray | None) -> np.ndarray:
    return seq_id if sorter is None else seq_id[sorter]


def _sorted_digest(paths: list[Location], bounds: list[tuple[int, int, int]]) -> str:
    """The pool's digest when its shards are not listed in seq_id order: again in the order of
    their ranges when those do not overlap, else every id at once (8 bytes a row; prepare's
    shards never need either)."""
    log.info("evaluate: the pool's shards are not listed in seq_id order; hashing it again")
    hasher = hashlib.sha256()
    if all(low > before[1] for before, (low, _, _) in zip(bounds, bounds[1:])):
        for _, _, number in bounds:
            ids = _seq_ids(paths[number])
            hasher.update(np.sort(ids).tobytes())
        return hasher.hexdigest()[:16]
    every = np.sort(np.concatenate([_seq_ids(path) for path in paths]))
    return hashlib.sha256(every.tobytes()).hexdigest()[:16]


def _seq_ids(path: Location) -> np.ndarray:
    column = read_parquet(path, columns=["seq_id"]).column("seq_id")
    return column.to_numpy().astype(np.uint64, copy=False)
