"""Which token chunks a training run sees, in which order, and loading them for one rank.

Order and selection come from a seeded hash of each chunk's `seq_id`, never from file listing
order, so the same seed picks the same chunks in the same order however the shards are listed
or sharded across workers. Only `seq_id` and `n_tokens` are read to plan a run; tokens are read
afterwards, for the chunks one data-parallel rank needs (which, for a small random slice, is
nearly every row group: colorfilter.models.blocks draws the prior's slice in whole row groups).
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any, ClassVar

import numpy as np
import pyarrow as pa

from colorfilter.hashing import seeded_keys
from colorfilter.io.location import Location
from colorfilter.io.token_shards import pad_input_ids
from colorfilter.io.transfer import open_parquet, read_parquet


def chunk_keys(seq_ids: np.ndarray, seed: int, salt: int = 0) -> np.ndarray:
    """A seeded pseudo-random uint64 key per chunk for training-data slice `salt`."""
    return seeded_keys(seq_ids, seed, "models.train-slice", salt)


@dataclass
class ChunkIndex:
    """A list of chunks (no tokens): where each lives, its id and its length."""

    paths: list[Path | Location]  # shards on disk or on a bucket (read via io.transfer)
    file_index: np.ndarray  # int32, index into paths
    row_index: np.ndarray  # int64, row within that file
    seq_id: np.ndarray  # uint64
    n_tokens: np.ndarray  # int32

    def __len__(self) -> int:
        return len(self.seq_id)

    def take(self, positions: np.ndarray) -> ChunkIndex:
        """The chunks at `positions`, in that order."""
        return ChunkIndex(
            self.paths,
            self.file_index[positions],
            self.row_index[positions],
            self.seq_id[positions],
            self.n_tokens[positions],
        )


def _read_shard_index(path: Path | Location) -> tuple[np.ndarray, np.ndarray]:
    table = read_parquet(path, columns=["seq_id", "n_tokens"])
    seq_id = table.column("seq_id").to_numpy().astype(np.uint64)
    return seq_id, table.column("n_tokens").to_numpy().astype(np.int32)


def read_chunk_index(
    paths: Sequence[str | Path | Location], seed: int = 0, salt: int = 0,
    keep_fraction: float = 1.0,
) -> ChunkIndex:
    """Index the chunks of `paths`, keeping those whose key falls in the lowest `keep_fraction`."""
    paths = [p if isinstance(p, Location) else Path(p) for p in paths]
    threshold = None if keep_fraction >= 1.0 else np.uint64(int(keep_fraction * 2.0**64))
    parts: list[tuple[np.ndarray, ...]] = []
    for file_number, path in enumerate(paths):
        seq_id, n_tokens = _read_shard_index(path)
        rows = np.arange(len(seq_id), dtype=np.int64)
        if threshold is not None:
            keep = chunk_keys(seq_id, seed, salt) < threshold
            seq_id, n_tokens, rows = seq_id[keep], n_tokens[keep], rows[keep]
        parts.append((np.full(len(rows), file_number, dtype=np.int32), rows, seq_id, n_tokens))
    if not parts:
        raise ValueError("no token shards to index")
    columns = [np.concatenate(column) for column in zip(*parts, strict=True)]
    return ChunkIndex(paths, *columns)


def shuffled(index: ChunkIndex, seed: int, salt: int = 0) -> ChunkIndex:
    """`index` in seeded random order (by chunk key; ties, if any, by seq_id)."""
    order = np.lexsort((index.seq_id, chunk_keys(index.seq_id, seed, salt)))
    return index.take(order)


def select_token_budget(
    paths: Sequence[str | Path | Location], token_budget: int, seed: int
) -> ChunkIndex:
    """A seeded random set of chunks holding about `token_budget` tokens, in training order.

    Chunks are taken in key order until the budget is reached, so a larger budget extends a
    smaller one. Two cheap passes over `n_tokens` keep memory proportional to the selection.
    """
    paths = [p if isinstance(p, Location) else Path(p) for p in paths]
    total_tokens = sum(int(_read_shard_index(p)[1].sum()) for p in paths)
    n_rows = sum(_num_rows(p) for p in paths)
    fraction = 1.0
    if 0 < token_budget < total_tokens:
        fraction = min(1.0, 1.05 * token_budget / total_tokens + 64.0 / max(n_rows, 1))
    index = shuffled(read_chunk_index(paths, seed, 0, fraction), seed, 0)
    if fraction < 1.0 and int(index.n_tokens.sum()) < token_budget:
        index = shuffled(read_chunk_index(paths, seed, 0, 1.0), seed, 0)
    if token_budget > 0:
        before = np.cumsum(index.n_tokens, dtype=np.int64) - index.n_tokens
        index = index.take(np.flatnonzero(before < token_budget))
    return index


def epoch_order(index: ChunkIndex, epochs: int, seed: int) -> np.ndarray:
    """Positions into `index` for `epochs` passes, each pass its own seeded shuffle."""
    orders = []
    for epoch in range(epochs):
        keys = seeded_keys(index.seq_id, seed, "models.epoch-order", epoch)
        orders.append(np.lexsort((index.seq_id, keys)))
    return np.concatenate(orders) if orders else np.zeros(0, dtype=np.int64)


@dataclass
class RankBatches:
    """The token chunks one data-parallel rank trains on, with the whole run's batch plan."""

    order: np.ndarray  # global training order: positions into the chunk index
    n_tokens: np.ndarray  # tokens per chunk of the index (all ranks know every batch's size)
    tokens: pa.ListArray  # this rank's chunks (list<int32>)
    row_of: np.ndarray  # index position -> row in `tokens` (-1 where another rank's)
    batch_size: int  # global sequences per step
    rank: int
    world_size: int
    counts_are_local: ClassVar[bool] = False  # step_token_counts is already the global batch's

    @property
    def num_steps(self) -> int:
        return len(self.order) // self.batch_size

    def global_positions(self, step: int) -> np.ndarray:
        return self.order[step * self.batch_size : (step + 1) * self.batch_size]

    def step_token_counts(self, step: int) -> tuple[int, int]:
        """(real tokens, predicted positions) of the global batch at `step`."""
        lengths = self.n_tokens[self.global_positions(step)].astype(np.int64)
        return int(lengths.sum()), int(np.maximum(lengths - 1, 0).sum())

    def local_batch(self, step: int, seq_len: int, pad_id: int) -> tuple[np.ndarray, np.ndarray]:
        """This rank's share of step `step`: (input_ids [b, seq_len] padded, n_tokens [b])."""
        local = self.global_positions(step)[self.rank :: self.world_size]
        return pad_input_ids(self.tokens.take(pa.array(self.row_of[local])), seq_len, pad_id)


def load_rank_batches(
    index: ChunkIndex,
    order: np.ndarray,
    batch_size: int,
    num_steps: int,
    rank: int = 0,
    world_size: int = 1,
) -> RankBatches:
    """Read the tokens of the chunks that `rank` trains on over the first `num_steps` steps."""
    order = order[: num_steps * batch_size]
    needed = np.unique(order.reshape(num_steps, batch_size)[:, rank::world_size])
    pieces = []
    for file_number in np.unique(index.file_index[needed]):
        in_file = needed[index.file_index[needed] == file_number]
        pieces.append((in_file, _read_rows(index.paths[file_number], index.row_index[in_file])))
    positions = np.concatenate([p for p, _ in pieces]) if pieces else np.zeros(0, np.int64)
    tokens = (
        pa.concat_arrays([t for _, t in pieces]) if pieces else pa.array([], pa.list_(pa.int32()))
    )
    row_of = np.full(len(index), -1, dtype=np.int64)
    row_of[positions] = np.arange(len(positions))
    return RankBatches(order, index.n_tokens, tokens, row_of, batch_size, rank, world_size)


@dataclass
class IndexedData:
    """Chunks of an index in one global order, split per batch across ranks: the prior under
    `prior.data_sampling: chunks` and the conditional. (models.blocks.BlockData: the same methods.)
    """

    index: ChunkIndex
    order: np.ndarray  # positions into index

    def n_chunks(self, world_size: int) -> int:
        return len(self.index)

    def usable_chunks(self, batch_size: int, world_size: int) -> int:
        return len(self.order)

    def trained_seq_ids(self, steps: int, batch_size: int, world_size: int) -> np.ndarray:
        return self.index.seq_id[self.order[: steps * batch_size]]

    def rank_batches(self, steps: int, batch_size: int, rank: int, world_size: int) -> RankBatches:
        return load_rank_batches(self.index, self.order, batch_size, steps, rank, world_size)

    def resume_key(self, world_size: int) -> str:
        return ""  # the global order does not depend on the world size


def _num_rows(path: Path | Location) -> int:
    with open_parquet(path) as parquet:
        return parquet.metadata.num_rows


def _read_rows(path: Path | Location, rows: np.ndarray) -> pa.ListArray:
    """`input_ids` of `rows` of one shard, reading only the row groups that hold them."""
    with open_parquet(path) as parquet:
        return _take_rows(parquet, rows)


def _take_rows(parquet: Any, rows: np.ndarray) -> pa.ListArray:
    starts = np.cumsum(
        [0] + [parquet.metadata.row_group(i).num_rows for i in range(parquet.num_row_groups)]
    )
    group_of_row = np.searchsorted(starts, rows, side="right") - 1
    groups = np.unique(group_of_row)
    table = parquet.read_row_groups([int(g) for g in groups], columns=["input_ids"])
    group_offsets = np.cumsum([0] + [int(starts[g + 1] - starts[g]) for g in groups])
    local = group_offsets[np.searchsorted(groups, group_of_row)] + rows - starts[group_of_row]
    return table.column("input_ids").combine_chunks().take(pa.array(local))
