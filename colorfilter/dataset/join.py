"""Lookups that join pool rows to their scores and to the selection, by seq_id.

Both are sorted-array lookups (searchsorted), so they never assume that a score shard lists its
rows in the token shard's order, and cost O(log n) per row whatever the order.
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np
import pyarrow as pa

from colorfilter.dataset.order import shuffle_keys
from colorfilter.errors import BadDataError

SCORE_COLUMNS = ("score", "prior_loss", "cond_loss")
# output score column -> the score shard's column holding it (a column not named is NaN):
LM_SCORES = tuple((name, name) for name in SCORE_COLUMNS)  # the LM pair's score shards
CHEAP_SCORES = (("score", "cheap_score"),)  # the cheap scorer's shards (colorfilter.distill)
ScoreColumns = tuple[tuple[str, str], ...]


def _sorted_lookup(sorted_ids: np.ndarray, ids: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """(mask of `ids` present in `sorted_ids`, their index there; index is junk where absent)."""
    if sorted_ids.size == 0:
        return np.zeros(ids.shape, dtype=bool), np.zeros(ids.shape, dtype=np.int64)
    pos = np.minimum(np.searchsorted(sorted_ids, ids), sorted_ids.size - 1)
    return sorted_ids[pos] == ids, pos


@dataclass
class ScoreLookup:
    """One score shard, indexed by seq_id."""

    sorted_ids: np.ndarray
    columns: dict[str, np.ndarray]  # score columns, in sorted_ids order

    @classmethod
    def from_table(
        cls, table: pa.Table, name: str, mapping: ScoreColumns = LM_SCORES
    ) -> ScoreLookup:
        """`mapping`: which shard column holds each output score column (others are NaN)."""
        ids = table.column("seq_id").to_numpy().astype(np.uint64)
        order = np.argsort(ids, kind="stable")
        sorted_ids = ids[order]
        if sorted_ids.size > 1 and np.any(sorted_ids[1:] == sorted_ids[:-1]):
            raise BadDataError(f"score shard {name} lists a seq_id more than once")
        source = dict(mapping)
        columns = {
            col: table.column(source[col]).to_numpy().astype(np.float32)[order]
            if col in source else np.full(ids.size, np.nan, np.float32)
            for col in SCORE_COLUMNS
        }
        return cls(sorted_ids=sorted_ids, columns=columns)

    def values(self, column: str, found: np.ndarray, rows: np.ndarray) -> np.ndarray:
        """`column` for pool rows (their `lookup` result); NaN where a row has no score."""
        return np.where(found, self.columns[column][rows], np.nan).astype(np.float32)

    def __len__(self) -> int:
        return int(self.sorted_ids.size)

    def lookup(self, ids: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
        """(has_score mask, row index into `columns`) for pool seq_ids."""
        return _sorted_lookup(self.sorted_ids, ids)


@dataclass
class SelectedIndex:
    """The selected seq_ids with their output row positions; tracks which were found."""

    sorted_ids: np.ndarray
    positions: np.ndarray  # output row of sorted_ids[i]
    found: np.ndarray

    @classmethod
    def build(cls, selected_seq_ids: np.ndarray, seed: int) -> SelectedIndex:
        ids = np.asarray(selected_seq_ids)
        if ids.size and (ids.dtype.kind not in "ui" or (ids.dtype.kind == "i" and ids.min() < 0)):
            raise ValueError(f"selected seq_ids must be non-negative integers, got {ids.dtype}")
        sorted_ids = np.sort(ids.astype(np.uint64))
        if sorted_ids.size > 1 and np.any(sorted_ids[1:] == sorted_ids[:-1]):
            raise ValueError("selected seq_ids contain duplicates")
        ranks = np.empty(sorted_ids.size, dtype=np.int64)
        ranks[np.argsort(shuffle_keys(sorted_ids, seed), kind="stable")] = np.arange(
            sorted_ids.size
        )
        return cls(sorted_ids, ranks, np.zeros(sorted_ids.size, dtype=bool))

    def __len__(self) -> int:
        return int(self.sorted_ids.size)

    def lookup(self, ids: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
        """(selected mask, index into sorted_ids) for pool seq_ids."""
        return _sorted_lookup(self.sorted_ids, ids)

    def mark_found(self, index: np.ndarray, where: str) -> None:
        """Record rows as found; a seq_id seen twice in the pool is a data error."""
        if np.any(self.found[index]) or np.unique(index).size != index.size:
            raise BadDataError(f"a selected seq_id occurs more than once in the pool ({where})")
        self.found[index] = True

    def missing(self) -> np.ndarray:
        return self.sorted_ids[~self.found]

    def row_order(self) -> np.ndarray:
        """Selected seq_ids in output row order."""
        out = np.empty_like(self.sorted_ids)
        out[self.positions] = self.sorted_ids
        return out
