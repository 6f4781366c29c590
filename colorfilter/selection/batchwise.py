"""`color_batchwise` (Algorithm 1) over a streamed pool, in memory bounded by a row budget.

The seeded permutation orders rows by (hash(seq_id), seq_id), and its blocks are consecutive in
that order. One pass over the source spills (hash, seq_id, score) to temporary files, one per
range of hash values (top bits, so the buckets are in permutation order and, the hash being
uniform, about equally full); each bucket is then sorted alone, and a block that straddles two
buckets carries its first rows over. Only one bucket (about `max_buffer_rows` rows, ~40 bytes
each while sorting) and the kept seq_ids are in memory: the result equals `batchwise_select`.
"""

from __future__ import annotations

import math
import tempfile
from collections.abc import Iterable
from pathlib import Path

import numpy as np

from colorfilter.errors import BadDataError
from colorfilter.selection.sources import SEQ_ID, Source, as_seq_ids, sortable_key


def batchwise_stream(
    source: Source,
    taus: Iterable[float],
    *,
    block_n: int,
    seed: int,
    max_buffer_rows: int,
    permutation_hash,
    spill_dir: str | None = None,
) -> dict[float, np.ndarray]:
    """Chosen seq_ids (sorted) per tau; `permutation_hash(seq_id)` is the seeded uint64 key.

    The spill (~24 bytes per row) goes to a temporary folder under `spill_dir` (default: the
    system's temporary folder), removed at the end.
    """
    taus = list(taus)
    n_rows = source.num_rows()
    bits = max(0, math.ceil(math.log2(max(1, 2 * n_rows / max(1, max_buffer_rows)))))
    with tempfile.TemporaryDirectory(prefix=".batchwise-", dir=spill_dir) as tmp:
        dtype = _spill(source, Path(tmp), bits, permutation_hash, max_buffer_rows)
        blocks = {tau: _Blocks(tau, block_n) for tau in taus}
        for bucket in range(1 << bits):
            path = Path(tmp) / f"{bucket:06d}.bin"
            if not path.exists():
                continue
            rows = np.fromfile(path, dtype=dtype)
            path.unlink()
            rows = rows[np.lexsort((rows["seq_id"], rows["hash"]))]
            for state in blocks.values():
                state.add(rows["seq_id"], rows["score"])
    return {tau: state.finish() for tau, state in blocks.items()}


def _spill(
    source: Source, tmp: Path, bits: int, permutation_hash, max_buffer_rows: int
) -> np.dtype:
    """Append every row to its hash bucket's file; refuse NaN scores (counted over all rows)."""
    dtype = None
    buffers: dict[int, list[np.ndarray]] = {}
    buffered = nan_count = total = 0
    for batch in source.iter_batches([SEQ_ID, "score"]):
        seq_id, score = as_seq_ids(batch[SEQ_ID]), np.asarray(batch["score"])
        total += len(seq_id)
        if score.dtype.kind == "f":
            nan_count += int(np.count_nonzero(np.isnan(score)))
        if dtype is None:
            dtype = np.dtype([("hash", "u8"), ("seq_id", "u8"), ("score", score.dtype)])
        rows = np.empty(len(seq_id), dtype=dtype)
        rows["hash"], rows["seq_id"], rows["score"] = permutation_hash(seq_id), seq_id, score
        bucket = (rows["hash"] >> np.uint64(64 - bits)) if bits else np.zeros(len(rows), int)
        order = np.argsort(bucket, kind="stable")
        ids, starts = np.unique(bucket[order], return_index=True)
        for b, part in zip(ids.tolist(), np.split(rows[order], starts[1:])):
            buffers.setdefault(b, []).append(part)
        buffered += len(rows)
        if buffered >= max_buffer_rows:  # the buffers stay within the row budget
            _flush(tmp, buffers)
            buffered = 0
    _flush(tmp, buffers)
    if nan_count:
        raise BadDataError(f"{nan_count} of {total} rows have a NaN score")
    return dtype if dtype is not None else np.dtype([("hash", "u8"), ("seq_id", "u8")])


def _flush(tmp: Path, buffers: dict[int, list[np.ndarray]]) -> None:
    for bucket, parts in buffers.items():
        with open(tmp / f"{bucket:06d}.bin", "ab") as handle:
            np.concatenate(parts).tofile(handle)
    buffers.clear()


class _Blocks:
    """Cuts rows arriving in permutation order into blocks; keeps each full block's best."""

    def __init__(self, tau: float, block_n: int):
        self.tau, self.block_n = tau, block_n
        self.size = math.floor(tau * block_n + 0.5)
        self.carry_ids = np.zeros(0, np.uint64)
        self.carry_scores: np.ndarray | None = None
        self.kept: list[np.ndarray] = []

    def add(self, seq_id: np.ndarray, score: np.ndarray) -> None:
        if self.carry_scores is not None:
            seq_id = np.concatenate([self.carry_ids, seq_id])
            score = np.concatenate([self.carry_scores, score])
        full = len(seq_id) // self.size * self.size
        if full:
            self.kept.append(_best(seq_id[:full], score[:full], self.size, self.block_n))
        self.carry_ids, self.carry_scores = seq_id[full:], score[full:]

    def finish(self) -> np.ndarray:
        tail = len(self.carry_ids)
        if tail:
            quota = math.floor(tail / self.tau)  # the partial last block keeps floor(L / tau)
            self.kept.append(_best(self.carry_ids, self.carry_scores, tail, quota))
        kept = np.concatenate(self.kept) if self.kept else np.zeros(0, np.uint64)
        return np.sort(kept)


def _best(seq_id: np.ndarray, score: np.ndarray, size: int, keep: int) -> np.ndarray:
    """The best `keep` of every consecutive block of `size` rows (score high, then seq_id low)."""
    block = np.arange(len(seq_id)) // size
    ranked = np.lexsort((seq_id, sortable_key(score, "max")[0], block))
    return seq_id[ranked[np.arange(len(seq_id)) % size < keep]]
