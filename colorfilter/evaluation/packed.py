"""Ascending seq_ids in about 2 bytes each, read back a range or a segment at a time.

Why: evaluate holds every (method, tau) selection from the moment it is computed until the
pool's second pass, and as uint64 arrays those cost 8 bytes per selected chunk: at the default
taus (4, 8, 16) and five methods, ~3.5 bytes per pool row, 1.75 GB for 10^8 rows. Sorted ids
share their high bits in long runs (a seq_id is `file_index << 32 | chunk_index`), so this keeps
the low 16 bits of each id (uint16) and, per run of ids with the same high 48 bits, that high
part and where the run starts: 2 bytes per id plus 16 bytes per 65,536 consecutive chunk
indices that hold a selected one. Exact for any uint64 ids.
"""

from __future__ import annotations

from collections.abc import Iterator

import numpy as np

SHIFT = np.uint64(16)
LOW_MASK = np.uint64(0xFFFF)
SEGMENT = 1 << 20  # ids decoded at a time when a selection is streamed
FEW = 4096  # ids looked up one at a time


class PackedIds:
    """Unique seq_ids in ascending order, packed (see the module's docstring)."""

    def __init__(self, highs: np.ndarray, starts: np.ndarray, lows: np.ndarray) -> None:
        self.highs = highs  # uint64: the high 48 bits of each run, ascending
        self.starts = starts  # int64: where each run starts in `lows`, then len(lows)
        self.lows = lows  # uint16: the low 16 bits of every id

    @classmethod
    def pack(cls, seq_ids: np.ndarray) -> PackedIds:
        """Pack `seq_ids` (unique; sorted here if they are not)."""
        ids = np.asarray(seq_ids, dtype=np.uint64)
        if len(ids) > 1 and not np.all(ids[1:] > ids[:-1]):
            ids = np.unique(ids)
        if not len(ids):
            return cls(np.zeros(0, np.uint64), np.zeros(1, np.int64), np.zeros(0, np.uint16))
        high = ids >> SHIFT
        first = np.flatnonzero(np.concatenate([[True], high[1:] != high[:-1]]))
        starts = np.append(first, len(ids)).astype(np.int64)
        return cls(high[first], starts, (ids & LOW_MASK).astype(np.uint16))

    def __len__(self) -> int:
        return len(self.lows)

    @property
    def nbytes(self) -> int:
        return self.highs.nbytes + self.starts.nbytes + self.lows.nbytes

    def decode(self, start: int = 0, stop: int | None = None) -> np.ndarray:
        """The ids at positions [start, stop), as uint64."""
        stop = len(self) if stop is None else min(stop, len(self))
        if start >= stop:
            return np.zeros(0, np.uint64)
        first = int(np.searchsorted(self.starts, start, side="right")) - 1
        last = int(np.searchsorted(self.starts, stop, side="left"))
        counts = np.diff(np.clip(self.starts[first : last + 1], start, stop))
        highs = np.repeat(self.highs[first:last] << SHIFT, counts)
        return highs | self.lows[start:stop].astype(np.uint64)

    def ids(self) -> np.ndarray:
        """Every id (8 bytes each: for small selections, or one at a time)."""
        return self.decode()

    def segments(self, size: int = SEGMENT) -> Iterator[np.ndarray]:
        """The ids in order, `size` at a time."""
        for start in range(0, len(self), size):
            yield self.decode(start, start + size)

    def position(self, value: int, right: bool = False) -> int:
        """How many ids are < `value` (or <= it, with `right`)."""
        value = np.uint64(value)
        run = int(np.searchsorted(self.highs, value >> SHIFT))
        if run == len(self.highs) or self.highs[run] != value >> SHIFT:
            return int(self.starts[run])
        low = np.uint16(value & LOW_MASK)
        lows = self.lows[self.starts[run] : self.starts[run + 1]]
        return int(self.starts[run]) + int(np.searchsorted(lows, low, "right" if right else "left"))

    def between(self, low: int, high: int) -> np.ndarray:
        """The ids in [low, high]."""
        return self.decode(self.position(low), self.position(high, right=True))

    def count_in(self, seq_ids: np.ndarray) -> int:
        """How many of `seq_ids` (unique) are here: one lookup each for a few ids (a pool's short
        chunks: one per input file), else a pass over these."""
        if len(seq_ids) > FEW:
            return self.shared(PackedIds.pack(seq_ids))
        return sum(self.position(v, right=True) > self.position(v) for v in seq_ids.tolist())

    def shared(self, other: PackedIds) -> int:
        """How many ids both hold, a segment at a time."""
        total = 0
        for ids in self.segments():
            theirs = other.between(int(ids[0]), int(ids[-1]))
            at = np.minimum(np.searchsorted(ids, theirs), len(ids) - 1)
            total += int(np.count_nonzero(ids[at] == theirs))
        return total
