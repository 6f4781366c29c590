"""Exact global top-k over score shards that need not fit in memory.

Why: CoLoR-Filter keeps the best N/tau of ~10^9 sequences spread over thousands of parquet
files. A full sort would need all keys in memory; this module needs O(k) for the answer plus a
bounded buffer, in a few sequential passes that read only the key and `seq_id` columns.

How (radix select): every row gets a composite rank (key mapped to a sortable unsigned integer
so that smaller = better, then `seq_id`). Pass 1 histograms the top digit of that rank; the digit
holding the k-th row is the "boundary". Each later pass collects the rows known to be selected
and either buffers the boundary rows (once they fit in `max_buffer_rows`) or histograms their
next digit. Float keys are compared on their bit patterns, so the result equals a full sort
exactly: by key (best first), ties broken by smaller `seq_id`.
"""

from __future__ import annotations

import time
from collections.abc import Iterable, Sequence
from dataclasses import dataclass, field
from os import PathLike

import numpy as np
from numpy.typing import ArrayLike

from colorfilter.errors import BadDataError
from colorfilter.selection.sources import (
    DEFAULT_BATCH_ROWS,
    SEQ_ID,
    Columns,
    Direction,
    KeySpec,
    ParquetSource,
    Source,
    as_seq_ids,
    as_source,
    count_nan,
    key_columns,
    key_name,
    key_values,
    sortable_key,
)

DEFAULT_MAX_BUFFER_ROWS = 1 << 22  # boundary rows buffered at 16 bytes each: 64 MiB
_FIRST_DIGIT_BITS = 20  # 2^20 bins: 2048 per binade of a float32, so pass 2 usually finishes
_DIGIT_BITS = 16


# ----------------------------------------------------------------------------- digits


@dataclass(frozen=True)
class _Digit:
    """`width` bits of one field ("key" or "seq") starting `shift` bits above its bottom."""

    field: str
    shift: int
    width: int


def _known_bits(all_and: int, all_or: int, known: int, total_bits: int) -> int:
    """Leading bits known once bits past `known` that are equal in every row are added.

    `all_and`/`all_or` are the bitwise AND/OR over the rows: a bit is constant where they agree.
    """
    varying = (all_and ^ all_or) & ((1 << (total_bits - known)) - 1)
    return total_bits - varying.bit_length()


@dataclass(frozen=True)
class _Prefix:
    """The known leading bits of the boundary rank: a key prefix, then a seq_id prefix."""

    key_bits: int = 0
    key_value: int = 0
    seq_bits: int = 0
    seq_value: int = 0

    def extend(self, digit: _Digit, value: int) -> _Prefix:
        if digit.field == "key":
            return _Prefix(self.key_bits + digit.width, (self.key_value << digit.width) | value)
        seq_value = (self.seq_value << digit.width) | value
        return _Prefix(self.key_bits, self.key_value, self.seq_bits + digit.width, seq_value)

    def next_digit(self, key_bits: int) -> _Digit | None:
        """The digit right after this prefix (the first one wider), or None when all is known."""
        if self.key_bits < key_bits:
            width = min(
                _FIRST_DIGIT_BITS if self.key_bits == 0 else _DIGIT_BITS, key_bits - self.key_bits
            )
            return _Digit("key", key_bits - self.key_bits - width, width)
        if self.seq_bits < 64:
            width = min(_DIGIT_BITS, 64 - self.seq_bits)
            return _Digit("seq", 64 - self.seq_bits - width, width)
        return None

    def skip_shared(self, field: str, all_and: int, all_or: int, bits: int) -> _Prefix:
        """Extend with the next bits of `field` that every boundary row shares (free digits)."""
        known = self.key_bits if field == "key" else self.seq_bits
        agreed = _known_bits(all_and, all_or, known, bits)
        if agreed <= known:
            return self
        width = agreed - known
        value = (all_and >> (bits - agreed)) & ((1 << width) - 1)
        return self.extend(_Digit(field, bits - agreed, width), value)


class _KeyedBatch:
    """One batch's ranks, with digit and prefix masks cached across selectors."""

    def __init__(self, ordered: np.ndarray, seq: np.ndarray, key_bits: int):
        self.ordered, self.seq, self.key_bits = ordered, seq, key_bits
        self._digits: dict[_Digit, np.ndarray] = {}
        self._masks: dict[_Prefix, np.ndarray | None] = {}

    def digit(self, digit: _Digit) -> np.ndarray:
        if digit not in self._digits:
            values = self.ordered if digit.field == "key" else self.seq
            mask = np.uint64((1 << digit.width) - 1)
            self._digits[digit] = ((values >> np.uint64(digit.shift)) & mask).astype(np.int64)
        return self._digits[digit]

    def matches(self, prefix: _Prefix) -> np.ndarray | None:
        """Rows whose rank starts with `prefix` (None means every row)."""
        if prefix not in self._masks:
            mask = None
            if prefix.key_bits:
                shift = np.uint64(self.key_bits - prefix.key_bits)
                mask = (self.ordered >> shift) == np.uint64(prefix.key_value)
            if prefix.seq_bits:
                shift = np.uint64(64 - prefix.seq_bits)
                seq_mask = (self.seq >> shift) == np.uint64(prefix.seq_value)
                mask = seq_mask if mask is None else mask & seq_mask
            self._masks[prefix] = mask
        return self._masks[prefix]

    def rows(self, prefix: _Prefix) -> np.ndarray | slice:
        """Index of the rows whose rank starts with `prefix` (a slice when that is all rows)."""
        mask = self.matches(prefix)
        return slice(None) if mask is None else mask

    def below(self, prefix: _Prefix, digit: _Digit, value: int) -> np.ndarray:
        """Mask of the rows that start with `prefix` and whose next digit is below `value`."""
        mask = self.matches(prefix)
        lower = self.digit(digit) < value
        return lower if mask is None else mask & lower


# ----------------------------------------------------------------------------- selection


def _smallest(ordered: np.ndarray, seq: np.ndarray, k: int) -> np.ndarray:
    """seq_ids of the k smallest ranks (ordered, then seq) among in-memory rows, in O(n)."""
    if k >= len(seq):
        return seq
    if k <= 0:
        return seq[:0]
    kth = np.partition(ordered, k - 1)[k - 1]
    better = ordered < kth
    tied = seq[ordered == kth]
    needed = k - int(np.count_nonzero(better))
    if needed < len(tied):
        tied = np.partition(tied, needed - 1)[:needed]
    return np.concatenate([seq[better], tied])


@dataclass
class _Selector:
    """Radix-select state for one k: which rows are already in, and the boundary still open."""

    k: int
    k_rem: int  # rows still to choose among the boundary rows
    boundary_rows: int  # rows whose rank starts with `prefix`
    prefix: _Prefix = field(default_factory=_Prefix)
    key_bits: int = 0
    pending: tuple[_Prefix, _Digit, int] | None = None  # rows chosen last pass, collect now
    chosen: list[np.ndarray] = field(default_factory=list)
    mode: str = ""
    digit: _Digit | None = None
    histogram: np.ndarray | None = None
    unbinned: list[np.ndarray] = field(default_factory=list)  # digits awaiting one bincount
    bit_masks: dict[str, list[int]] = field(default_factory=dict)  # field -> [AND, OR] of rows
    taken: int = 0
    planned: str = ""  # the mode planned for the last pass

    @property
    def done(self) -> bool:
        return self.mode == "done"

    def plan(self, key_bits: int, can_buffer: bool) -> None:
        """Decide what this pass does with the boundary rows."""
        self.key_bits = key_bits
        self.digit = self.prefix.next_digit(key_bits)
        if self.k_rem >= self.boundary_rows:
            self.mode = "take_all"
        elif can_buffer:
            self.mode = "buffer"
        elif self.digit is not None:
            self.mode = "histogram"
            self.histogram = np.zeros(1 << self.digit.width, dtype=np.int64)
            self.bit_masks = {}
        else:  # every bit known: the boundary rows are identical, any k_rem of them will do
            self.mode = "take_first"
        self.planned = self.mode

    def consume(self, batch: _KeyedBatch) -> None:
        if self.pending is not None:
            self.chosen.append(batch.seq[batch.below(*self.pending)])
        rows = batch.rows(self.prefix)
        if self.mode == "take_all":
            self.chosen.append(batch.seq[rows])
        elif self.mode == "histogram":
            self._bin(batch.digit(self.digit)[rows])
            self._track_bits("key", batch.ordered[rows])
            self._track_bits("seq", batch.seq[rows])
        elif self.mode == "take_first" and self.taken < self.k_rem:
            taken = batch.seq[rows][: self.k_rem - self.taken]
            self.taken += len(taken)
            self.chosen.append(taken)

    def _bin(self, digits: np.ndarray | None = None) -> None:
        """Bincount digits >= 2^20 at a time (a 2^20-bin bincount per small batch is slow)."""
        if digits is not None:
            self.unbinned.append(digits)
        if self.unbinned and (digits is None or sum(map(len, self.unbinned)) >= 1 << 20):
            counts = np.bincount(np.concatenate(self.unbinned))
            self.histogram[: len(counts)] += counts
            self.unbinned = []

    def _track_bits(self, name: str, values: np.ndarray) -> None:
        if len(values):
            all_and = int(np.bitwise_and.reduce(values))
            all_or = int(np.bitwise_or.reduce(values))
            masks = self.bit_masks.setdefault(name, [all_and, all_or])
            masks[0], masks[1] = masks[0] & all_and, masks[1] | all_or

    def finish(self, buffers: dict[_Prefix, _Buffer]) -> None:
        """After a pass: resolve the buffered boundary, or narrow it by one digit or more."""
        self.pending = None
        if self.mode == "buffer":
            buffer = buffers[self.prefix]
            _check_rows(buffer.filled, self.boundary_rows)
            self.chosen.append(_smallest(buffer.ordered, buffer.seq, self.k_rem))
        if self.mode != "histogram":
            self.mode = "done"
            return
        self._bin()
        histogram, self.histogram = self.histogram, None
        _check_rows(int(histogram.sum()), self.boundary_rows)
        cumulative = np.cumsum(histogram)
        value = int(np.searchsorted(cumulative, self.k_rem))
        below = int(cumulative[value - 1]) if value else 0
        if below:
            self.pending = (self.prefix, self.digit, value)
        self.prefix = self.prefix.extend(self.digit, value)
        self.k_rem -= below
        self.boundary_rows = int(histogram[value])
        self._skip_shared_bits()

    def _skip_shared_bits(self) -> None:
        """Bits shared by all rows of the last boundary are known too: no pass needed for them."""
        self.prefix = self.prefix.skip_shared("key", *self.bit_masks["key"], self.key_bits)
        if self.prefix.key_bits == self.key_bits:
            self.prefix = self.prefix.skip_shared("seq", *self.bit_masks["seq"], 64)

    def result(self) -> np.ndarray:
        chosen = np.concatenate(self.chosen) if self.chosen else np.empty(0, np.uint64)
        self.chosen = []  # free the pieces before sorting: the answer is the largest array here
        chosen = chosen.astype(np.uint64, copy=False)
        chosen.sort()
        return chosen


def _check_rows(seen: int, expected: int) -> None:
    if seen != expected:
        raise RuntimeError(f"the source changed between passes ({seen} rows, expected {expected})")


@dataclass(frozen=True)
class PassStats:
    """What one pass over the source did and how long it took."""

    seconds: float
    rows: int
    modes: tuple[str, ...]  # per k: histogram / buffer / take_all / take_first
    buffered_rows: int


@dataclass
class TopKResult:
    """Selected seq_ids per k (sorted ascending), plus per-pass timings."""

    seq_ids: dict[int, np.ndarray]
    n_rows: int
    passes: list[PassStats]

    @property
    def peak_buffered_rows(self) -> int:
        return max((stats.buffered_rows for stats in self.passes), default=0)


def _check_ks(ks: int | Iterable[int]) -> list[int]:
    ks = [ks] if isinstance(ks, (int, np.integer)) else list(ks)
    for k in ks:
        if not isinstance(k, (int, np.integer)) or isinstance(k, bool):
            raise TypeError(f"k must be an integer, got {k!r}")
        if k < 0:
            raise ValueError(f"k must be >= 0, got {k}")
    return sorted({int(k) for k in ks})


class _Buffer:
    """Boundary rows (rank, seq_id) of one prefix, in arrays sized from the last histogram."""

    def __init__(self, n_rows: int):
        self.ordered = np.empty(n_rows, np.uint64)
        self.seq = np.empty(n_rows, np.uint64)
        self.filled = 0

    def add(self, ordered: np.ndarray, seq: np.ndarray) -> None:
        stop = self.filled + len(seq)
        if stop > len(self.seq):
            raise RuntimeError("the source changed between passes (more boundary rows than seen)")
        self.ordered[self.filled : stop], self.seq[self.filled : stop] = ordered, seq
        self.filled = stop


def _plan(selectors: list[_Selector], key_bits: int, max_buffer_rows: int) -> dict:
    """Plan each selector's pass; boundaries share one buffer budget (and identical ones, rows)."""
    buffers: dict[_Prefix, _Buffer] = {}
    room = max_buffer_rows
    for selector in sorted(selectors, key=lambda s: s.boundary_rows):
        selector.plan(key_bits, selector.prefix in buffers or selector.boundary_rows <= room)
        if selector.mode == "buffer" and selector.prefix not in buffers:
            buffers[selector.prefix] = _Buffer(selector.boundary_rows)
            room -= selector.boundary_rows
    return buffers


def _run_pass(
    source: Source,
    key: KeySpec,
    direction: Direction,
    selectors: list[_Selector],
    max_buffer_rows: int,
    n_rows: int,
    first_pass: bool,
    key_bits: int | None,
) -> tuple[int | None, int]:
    """Read every batch once and feed the open selectors; return (key bit width, rows buffered)."""
    rows = nan_count = 0
    buffers: dict[_Prefix, _Buffer] | None = None
    for raw in source.iter_batches(key_columns(key)):
        values, seq = key_values(key, raw), as_seq_ids(raw[SEQ_ID])
        if len(values) != len(seq):
            raise ValueError(f"{key_name(key)} has {len(values)} rows but seq_id {len(seq)}")
        if first_pass:
            nan_count += count_nan(values)
        ordered, bits = sortable_key(values, direction)
        if key_bits is not None and bits != key_bits:
            raise TypeError(f"{key_name(key)} changes width between batches ({key_bits}, {bits})")
        key_bits = bits
        if buffers is None:
            buffers = _plan(selectors, bits, max_buffer_rows)
        batch = _KeyedBatch(ordered, seq, bits)
        for prefix, buffer in buffers.items():
            boundary = batch.rows(prefix)
            buffer.add(batch.ordered[boundary], batch.seq[boundary])
        for selector in selectors:
            selector.consume(batch)
        rows += len(seq)
    if nan_count:
        raise BadDataError(
            f"{nan_count} of {rows} rows have a NaN {key_name(key)}; "
            "drop or rescore them before selecting"
        )
    _check_rows(rows, n_rows)
    buffers = buffers or {}
    for selector in selectors:
        selector.finish(buffers)
    return key_bits, sum(buffer.filled for buffer in buffers.values())


def topk(
    source: Source | Columns | Sequence[Columns],
    ks: int | Iterable[int],
    *,
    key: KeySpec = "score",
    direction: Direction = "max",
    max_buffer_rows: int = DEFAULT_MAX_BUFFER_ROWS,
) -> TopKResult:
    """Exact top-k seq_ids for each k in `ks`, sharing passes: best key first, ties by seq_id.

    Equals `seq_id[np.lexsort((seq_id, key))][:k]` (key negated for "max"), returned sorted by
    seq_id. k > N selects all N. Memory: the answer (8 bytes per selected row) + at most
    `max_buffer_rows` boundary rows (16 bytes each) + one batch + a 2^20-bin histogram.
    """
    if max_buffer_rows < 1:
        raise ValueError(f"max_buffer_rows must be >= 1, got {max_buffer_rows}")
    source = as_source(source)
    n_rows = source.num_rows()
    selectors = {k: _Selector(k, min(k, n_rows), n_rows) for k in _check_ks(ks)}
    for selector in selectors.values():
        selector.mode = "done" if selector.k_rem == 0 else ""
    passes: list[PassStats] = []
    key_bits: int | None = None
    while open_selectors := [s for s in selectors.values() if not s.done]:
        start = time.perf_counter()
        key_bits, buffered = _run_pass(
            source, key, direction, open_selectors, max_buffer_rows, n_rows, not passes, key_bits
        )
        modes = tuple(s.planned for s in open_selectors)
        passes.append(PassStats(time.perf_counter() - start, n_rows, modes, buffered))
    return TopKResult({k: s.result() for k, s in selectors.items()}, n_rows, passes)


def topk_arrays(
    seq_id: ArrayLike,
    key: ArrayLike,
    k: int,
    *,
    direction: Direction = "max",
    max_buffer_rows: int = DEFAULT_MAX_BUFFER_ROWS,
) -> np.ndarray:
    """Top-k seq_ids of in-memory arrays (same code path and semantics as `topk`)."""
    data = {SEQ_ID: np.asarray(seq_id), "key": np.asarray(key)}
    result = topk(data, k, key="key", direction=direction, max_buffer_rows=max_buffer_rows)
    return result.seq_ids[int(k)]


def topk_parquet(
    paths: Iterable[str | PathLike],
    k: int,
    *,
    key: KeySpec = "score",
    direction: Direction = "max",
    batch_rows: int = DEFAULT_BATCH_ROWS,
    max_buffer_rows: int = DEFAULT_MAX_BUFFER_ROWS,
) -> np.ndarray:
    """Top-k seq_ids over parquet score shards, streaming (see `topk`)."""
    source = ParquetSource(paths, batch_rows=batch_rows)
    result = topk(source, k, key=key, direction=direction, max_buffer_rows=max_buffer_rows)
    return result.seq_ids[int(k)]
