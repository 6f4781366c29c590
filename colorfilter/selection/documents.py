"""Document mode: widen a chunk selection to the whole documents its chunks come from.

Why: chunks ignore document boundaries (as the paper's pipeline does), so a selected chunk can
hold the middle of a document whose beginning and end were not selected. Trainers that want
whole documents take every chunk holding any part of a document that a selected chunk holds.
The widening is one step, not a closure: a chunk added because it holds the end of a selected
document does not in turn pull in the next document it also holds.

Works one input file at a time (document indices are per file; a file's chunks may span several
token shards), so memory is bounded by the largest input file, not the pool.
"""

from __future__ import annotations

from collections.abc import Iterator
from pathlib import Path

import numpy as np
import pyarrow as pa

from colorfilter.errors import BadDataError
from colorfilter.io.location import Location
from colorfilter.io.token_shards import split_seq_ids
from colorfilter.io.transfer import read_parquet

PROVENANCE = ["seq_id", "doc_first", "doc_last"]


def expand_to_documents(selected: np.ndarray, token_paths: list[Path | Location]) -> np.ndarray:
    """Sorted seq_ids of every pool chunk holding part of a document that a selected chunk holds.

    Every selected chunk is kept (it holds its own documents). `token_paths` are the pool's
    token shards, sorted by name as `list_shards` returns them.
    """
    selected = np.unique(np.asarray(selected, dtype=np.uint64))
    kept, found = [], 0
    for seq_id, doc_first, doc_last in _per_file(token_paths):
        chosen = np.isin(seq_id, selected, assume_unique=True)
        found += int(chosen.sum())
        kept.append(seq_id[_touches(doc_first, doc_last, chosen)])
    if found != len(selected):
        raise BadDataError(
            f"{len(selected) - found} selected seq_ids are not in the pool's token shards"
        )
    return np.sort(np.concatenate(kept)) if kept else np.empty(0, np.uint64)


def _per_file(
    token_paths: list[Path | Location],
) -> Iterator[tuple[np.ndarray, np.ndarray, np.ndarray]]:
    """(seq_id, doc_first, doc_last) of each input file's chunks, across its token shards."""
    pending: list[pa.Table] = []
    pending_file = None
    for path in token_paths:
        table = read_parquet(path, columns=PROVENANCE)  # local or on a bucket
        if table.num_rows == 0:
            continue
        file_index = int(split_seq_ids(table.column("seq_id").to_numpy()[:1])[0][0])
        if pending and file_index != pending_file:
            yield _arrays(pending)
            pending = []
        pending.append(table)
        pending_file = file_index
    if pending:
        yield _arrays(pending)


def _arrays(tables: list[pa.Table]) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    table = pa.concat_tables(tables)
    return tuple(table.column(name).to_numpy() for name in PROVENANCE)  # type: ignore[return-value]


def _touches(doc_first: np.ndarray, doc_last: np.ndarray, chosen: np.ndarray) -> np.ndarray:
    """Mask of chunks whose [doc_first, doc_last] overlaps a chosen chunk's document range."""
    if not chosen.any():
        return np.zeros(len(doc_first), dtype=bool)
    starts, ends = _merged(doc_first[chosen], doc_last[chosen])
    slot = np.searchsorted(starts, doc_last, side="right") - 1
    return (slot >= 0) & (ends[np.maximum(slot, 0)] >= doc_first)


def _merged(firsts: np.ndarray, lasts: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """Union of closed integer intervals, as sorted disjoint (starts, ends)."""
    order = np.argsort(firsts, kind="stable")
    firsts, lasts = firsts[order], lasts[order]
    reach = np.maximum.accumulate(lasts)
    opens = np.ones(len(firsts), dtype=bool)
    opens[1:] = firsts[1:] > reach[:-1]
    heads = np.flatnonzero(opens)
    return firsts[heads], np.maximum.reduceat(lasts, heads)
