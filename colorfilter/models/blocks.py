"""The prior's training slice as whole parquet row groups ("blocks"), streamed by each rank.

Why: per-chunk sampling (`prior.data_sampling: chunks`, colorfilter.models.data) picks each
chunk on its own, so at a 1.8% slice nearly every row group holds a chosen chunk, every rank reads
the pool's whole token column and holds its slice in memory (on C4: ~12 GB and ~90 min before
the first step, 8x the reads under 8 ranks). Here (`prior.data_sampling: blocks`) the slice is
made of whole blocks, and a rank reads only its own blocks' rows, a window at a time.

- **Which blocks**: every row group of every pool shard is a block, named by its first
  `seq_id` (read from the row group's column statistics), so neither file names nor listing order
  matter. A seeded hash of that id orders the blocks; they are taken in that order, each to the
  rank with the fewest rows so far (ranks get disjoint blocks), until every rank holds its share
  of `token_budget` (the run then trains the steps that hold the budget, as per-chunk sampling
  does: a rank's last block may be partly unused). Only parquet footers are read to plan: rows
  and tokens per block come from the metadata (a block whose `n_tokens` statistics differ reads
  that small column).
- **Order within a rank**: the rank's blocks, in key order, are grouped into windows of at most
  `buffer_rows` rows (at least one block). A window's `seq_id` and `input_ids` are read, its
  rows put in seeded order (a hash of `seq_id`), and consumed in turn; at most the windows that one
  local batch spans are held. A window's place in the stream is known from the metadata, so a
  resumed run reads the window of its step directly, without replaying the stream.
- **Accounting**: steps = min(min over ranks of (rank rows // local batch), budget chunks //
  batch), known before training;
  each step's token counts are summed over ranks (exact, one scalar all-reduce each).

Trade-off against per-chunk sampling: a block is `prepare.row_group_rows` consecutive chunks of
one input file, so the slice is a sample of about (slice rows / block rows) pieces of the pool
instead of independent chunks (more variance in its composition), and a rank's consecutive steps
draw from the same window of blocks (local correlation across ~buffer_rows / local batch steps).
The slice also depends on the number of ranks (the assignment), so a checkpoint resumes only at
the world size it was written with. In exchange each rank reads about 1/world of the slice, and
memory is bounded by the window, not by the slice.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import ClassVar

import numpy as np
import pyarrow as pa
import pyarrow.parquet as pq

from colorfilter.errors import ConfigError
from colorfilter.hashing import seeded_keys
from colorfilter.io.location import Location
from colorfilter.io.token_shards import pad_input_ids
from colorfilter.io.transfer import open_parquet


@dataclass(frozen=True)
class Block:
    """One row group of one token shard."""

    path: Path | Location
    row_group: int
    first_seq_id: int
    num_rows: int
    n_tokens: int


def _column_stats(row_group: pq.RowGroupMetaData, column: int) -> tuple | None:
    stats = row_group.column(column).statistics
    if stats is None or not stats.has_min_max:
        return None
    return stats.min, stats.max


def list_blocks(paths: Sequence[str | Path | Location]) -> list[Block]:
    """Every row group of `paths` (local or on a bucket), from the parquet footers (plus the
    small `n_tokens` column of a row group whose lengths differ, or any column whose statistics
    are missing)."""
    blocks = []
    for path in paths:
        path = path if isinstance(path, Location) else Path(path)
        with open_parquet(path) as parquet:
            blocks += _file_blocks(path, parquet)
    if not blocks:
        raise ValueError("no token shards to index")
    return blocks


def _file_blocks(path: Path | Location, parquet: pq.ParquetFile) -> list[Block]:
    """The non-empty row groups of one open shard."""
    blocks = []
    metadata = parquet.metadata
    names = metadata.schema.to_arrow_schema().names
    seq_col, len_col = names.index("seq_id"), names.index("n_tokens")
    for group in range(metadata.num_row_groups):
        row_group = metadata.row_group(group)
        seq, lengths = _column_stats(row_group, seq_col), _column_stats(row_group, len_col)
        if seq is None or lengths is None or lengths[0] != lengths[1]:
            table = parquet.read_row_group(group, columns=["seq_id", "n_tokens"])
            first = int(table.column("seq_id")[0].as_py()) if table.num_rows else 0
            tokens = int(np.sum(table.column("n_tokens").to_numpy(), dtype=np.int64))
        else:
            first, tokens = int(seq[0]), row_group.num_rows * int(lengths[0])
        if row_group.num_rows:
            blocks.append(Block(path, group, first, row_group.num_rows, tokens))
    return blocks


def block_keys(blocks: Sequence[Block], seed: int) -> np.ndarray:
    """A seeded uint64 key per block, from its first seq_id only."""
    ids = np.array([b.first_seq_id for b in blocks], dtype=np.uint64)
    return seeded_keys(ids, seed, "models.train-blocks")


@dataclass
class BlockSlice:
    """The chosen blocks, in key order, with the rank that reads each."""

    blocks: list[Block]
    owner: np.ndarray  # int32 rank per block
    world_size: int
    seed: int
    buffer_rows: int
    token_budget: int = 0  # 0: the whole pool

    @property
    def n_chunks(self) -> int:
        return sum(b.num_rows for b in self.blocks)

    def rank_blocks(self, rank: int) -> list[Block]:
        return [b for b, r in zip(self.blocks, self.owner) if r == rank]

    def rank_rows(self) -> np.ndarray:
        rows = np.zeros(self.world_size, dtype=np.int64)
        np.add.at(rows, self.owner, [b.num_rows for b in self.blocks])
        return rows

    def usable_chunks(self, batch_size: int) -> int:
        """steps * batch_size: the whole batches every rank can fill, and no more than hold the
        token budget (at the blocks' mean chunk length), as per-chunk sampling would train."""
        steps = int(self.rank_rows().min() // (batch_size // self.world_size))
        if self.token_budget > 0:
            tokens = sum(b.n_tokens for b in self.blocks)
            needed = -(-self.token_budget * self.n_chunks // max(tokens, 1))
            steps = min(steps, needed // batch_size)
        return steps * batch_size

    def windows(self, rank: int) -> list[list[Block]]:
        """The rank's blocks, in key order, in windows of at most buffer_rows (>= one block)."""
        windows: list[list[Block]] = []
        rows = 0
        for block in self.rank_blocks(rank):
            if not windows or rows + block.num_rows > self.buffer_rows:
                windows.append([])
                rows = 0
            windows[-1].append(block)
            rows += block.num_rows
        return windows

    def trained_seq_ids(self, steps: int, batch_size: int) -> np.ndarray:
        """The seq_ids of the chunks the run trains on, step by step (rank-major within a step);
        reads only the `seq_id` column of the blocks that are trained on."""
        local = batch_size // self.world_size
        per_rank = []
        for rank in range(self.world_size):
            ids, have = [], 0
            for window in self.windows(rank):
                if have >= steps * local:
                    break
                ids.append(_window_order(_read_window(window, ["seq_id"]), self.seed)[0])
                have += len(ids[-1])
            flat = np.concatenate(ids) if ids else np.zeros(0, np.uint64)
            per_rank.append(flat[: steps * local].reshape(steps, local))
        return np.stack(per_rank, axis=1).reshape(-1)


def choose_blocks(
    paths: Sequence[str | Path],
    token_budget: int,
    seed: int,
    world_size: int = 1,
    buffer_rows: int = 65536,
) -> BlockSlice:
    """Blocks in seeded key order, each to the rank with the fewest rows so far, until every
    rank holds token_budget / world_size tokens (or the pool runs out)."""
    blocks = list_blocks(paths)
    order = np.lexsort((np.array([b.first_seq_id for b in blocks], np.uint64),
                        block_keys(blocks, seed)))  # fmt: skip
    rows = np.zeros(world_size, dtype=np.int64)
    tokens = np.zeros(world_size, dtype=np.int64)
    share = -(-max(token_budget, 0) // world_size)
    chosen, owner = [], []
    for position in order:
        if token_budget > 0 and tokens.min() >= share:
            break
        block = blocks[position]
        rank = int(np.argmin(rows))
        rows[rank] += block.num_rows
        tokens[rank] += block.n_tokens
        chosen.append(block)
        owner.append(rank)
    if rows.min() == 0:
        raise ConfigError(
            f"prior.data_sampling=blocks: the pool's {len(blocks)} blocks (row groups) leave a "
            f"data-parallel rank of {world_size} without any; prepare with a smaller "
            "prepare.row_group_rows, or use prior.data_sampling=chunks"
        )
    owners = np.array(owner, dtype=np.int32)
    return BlockSlice(chosen, owners, world_size, seed, buffer_rows, max(token_budget, 0))


def _read_window(window: list[Block], columns: list[str]) -> pa.Table:
    """`columns` of a window's row groups (only those; a file's groups in one read)."""
    tables = []
    by_path: dict[Path | Location, list[int]] = {}
    for block in window:
        by_path.setdefault(block.path, []).append(block.row_group)
    for path, groups in by_path.items():
        with open_parquet(path) as parquet:
            tables.append(parquet.read_row_groups(groups, columns=columns))
    return pa.concat_tables(tables)


def _window_order(table: pa.Table, seed: int) -> tuple[np.ndarray, np.ndarray]:
    """(seq_ids, positions) of a window's rows in seeded order (by a hash of seq_id only)."""
    seq_ids = table.column("seq_id").to_numpy().astype(np.uint64)
    order = np.lexsort((seq_ids, seeded_keys(seq_ids, seed, "models.block-order")))
    return seq_ids[order], order


@dataclass
class BlockBatches:
    """One rank's local batches, streamed from its blocks a window at a time.

    Same interface as models.data.RankBatches for the training loop, but token counts are this
    rank's own (`counts_are_local`): the loop sums them over ranks.
    """

    counts_are_local: ClassVar[bool] = True

    slice: BlockSlice
    rank: int
    batch_size: int  # global sequences per step
    num_steps: int
    max_rows_held: int = 0  # the most rows ever held at once (tests check the bound)
    windows_read: int = 0
    _windows: list[list[Block]] = field(default_factory=list)
    _starts: np.ndarray = field(default_factory=lambda: np.zeros(1, np.int64))
    _held: dict[int, pa.ListArray] = field(default_factory=dict)
    _step: tuple[int, pa.ListArray] | None = None

    def __post_init__(self) -> None:
        self._windows = self.slice.windows(self.rank)
        sizes = [sum(b.num_rows for b in w) for w in self._windows]
        self._starts = np.concatenate([[0], np.cumsum(sizes, dtype=np.int64)])

    @property
    def local_size(self) -> int:
        return self.batch_size // self.slice.world_size

    def _load(self, window: int) -> pa.ListArray:
        if window not in self._held:
            table = _read_window(self._windows[window], ["seq_id", "input_ids"])
            _, order = _window_order(table, self.slice.seed)
            self._held[window] = table.column("input_ids").combine_chunks().take(pa.array(order))
            self.windows_read += 1
            self.max_rows_held = max(self.max_rows_held, sum(len(a) for a in self._held.values()))
        return self._held[window]

    def _rows(self, step: int) -> pa.ListArray:
        """input_ids of stream positions [step * local, (step + 1) * local)."""
        if self._step is not None and self._step[0] == step:
            return self._step[1]
        start, stop = step * self.local_size, (step + 1) * self.local_size
        first = int(np.searchsorted(self._starts, start, side="right") - 1)
        last = int(np.searchsorted(self._starts, stop - 1, side="right") - 1)
        for done in [w for w in self._held if w < first]:  # consumed: let it go
            del self._held[done]
        pieces = []
        for window in range(first, last + 1):
            rows = self._load(window)
            lo, hi = self._starts[window], self._starts[window + 1]
            pieces.append(rows.slice(max(start, lo) - lo, min(stop, hi) - max(start, lo)))
        rows = pa.concat_arrays(pieces) if len(pieces) > 1 else pieces[0]
        self._step = (step, rows)
        return rows

    def step_token_counts(self, step: int) -> tuple[int, int]:
        """(real tokens, predicted positions) of this rank's share of step `step`."""
        lengths = np.diff(self._rows(step).offsets.to_numpy()).astype(np.int64)
        return int(lengths.sum()), int(np.maximum(lengths - 1, 0).sum())

    def local_batch(self, step: int, seq_len: int, pad_id: int) -> tuple[np.ndarray, np.ndarray]:
        """This rank's share of step `step`: (input_ids [b, seq_len] padded, n_tokens [b])."""
        return pad_input_ids(self._rows(step), seq_len, pad_id)


@dataclass
class BlockData:
    """The prior's training data under `prior.data_sampling: blocks` (see the module docstring);
    the same methods as models.data.IndexedData, for the training stage."""

    paths: list[Path]
    token_budget: int
    seed: int
    buffer_rows: int
    _slices: dict[int, BlockSlice] = field(default_factory=dict)

    def slice(self, world_size: int) -> BlockSlice:
        if world_size not in self._slices:
            self._slices[world_size] = choose_blocks(
                self.paths, self.token_budget, self.seed, world_size, self.buffer_rows
            )
        return self._slices[world_size]

    def n_chunks(self, world_size: int) -> int:
        return self.slice(world_size).n_chunks

    def usable_chunks(self, batch_size: int, world_size: int) -> int:
        return self.slice(world_size).usable_chunks(batch_size)

    def trained_seq_ids(self, steps: int, batch_size: int, world_size: int) -> np.ndarray:
        return self.slice(world_size).trained_seq_ids(steps, batch_size)

    def rank_batches(self, steps: int, batch_size: int, rank: int, world_size: int) -> BlockBatches:
        return BlockBatches(self.slice(world_size), rank, batch_size, steps)

    def resume_key(self, world_size: int) -> str:
        """The rank assignment depends on the world size: a checkpoint resumes only at its own."""
        return f"/blocks-world{world_size}"
