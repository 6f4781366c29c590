"""The token shard format shared by every stage, and fast padding of Arrow list columns.

A token shard is a parquet file with one row per fixed-length chunk:
`seq_id` (uint64, unique and deterministic), `input_ids` (list<int32>, real tokens only; every
chunk has `seq_len` tokens except possibly the last chunk of an input file), `n_tokens` (int32),
and provenance: `source_file`, `doc_first`/`doc_last` (indices of the first and last document of
that file the chunk covers), `doc_offset` (token offset inside `doc_first` where the chunk starts),
and `source` (a per-document label from the input, when the config names one).
"""

from __future__ import annotations

from collections.abc import Iterator, Sequence
from pathlib import Path

import numpy as np
import pyarrow as pa

from colorfilter.errors import ConfigError
from colorfilter.io import storage
from colorfilter.io.atomic import TMP_PREFIX
from colorfilter.io.location import Location, as_location
from colorfilter.io.transfer import open_parquet

TOKEN_SCHEMA = pa.schema(
    [
        ("seq_id", pa.uint64()),
        ("input_ids", pa.list_(pa.int32())),
        ("n_tokens", pa.int32()),
        ("source_file", pa.string()),
        ("doc_first", pa.int64()),
        ("doc_last", pa.int64()),
        ("doc_offset", pa.int32()),
        ("source", pa.string()),
    ]
)

FILE_BITS = 32  # seq_id = file_index << FILE_BITS | chunk_index_in_file


def make_seq_ids(file_index: int, first_chunk: int, count: int) -> np.ndarray:
    """Seq ids for `count` chunks of one input file: stable whatever the worker or listing order."""
    base = np.uint64(file_index) << np.uint64(FILE_BITS)
    return base + np.arange(first_chunk, first_chunk + count, dtype=np.uint64)


def split_seq_ids(seq_ids: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """Inverse of make_seq_ids: (file_index, chunk_index) arrays."""
    seq_ids = np.asarray(seq_ids, dtype=np.uint64)
    return seq_ids >> np.uint64(FILE_BITS), seq_ids & np.uint64((1 << FILE_BITS) - 1)


def list_shards(directory: str | Path) -> list[Path]:
    """Finished parquet shards in a local `directory`, sorted by name (temp files excluded)."""
    directory = Path(directory)
    if not directory.is_dir():
        return []
    return sorted(p for p in directory.glob("*.parquet") if not p.name.startswith(TMP_PREFIX))


def shard_locations(directory: str | Path | Location) -> list[Location]:
    """Finished parquet shards in a folder on any backend, sorted by name (one listing)."""
    folder = as_location(directory)
    found = storage.list_dir(folder)
    return [loc for loc in found
            if loc.name.endswith(".parquet") and not loc.name.startswith(TMP_PREFIX)]


def prepared_shards(split_dir: str | Path) -> list[Path]:
    """A split's token shards, or a ConfigError that says truly why there are none."""
    paths = list_shards(split_dir)
    if paths:
        return paths
    raise ConfigError(no_shards_message(split_dir))


def prepared_shard_locations(split_dir: str | Path | Location) -> list[Location]:
    """`prepared_shards` on any backend: a split's shards, or why there are none."""
    found = shard_locations(split_dir)
    if found:
        return found
    raise ConfigError(no_shards_message(split_dir))


def paired_shards(
    token_paths: Sequence[Location], folder: Location, stage: str = "score"
) -> list[Location]:
    """Each token shard's shard in `folder` (the same name: its scores, its cheap scores); a
    ConfigError names the token shards that have none and the stage that writes them."""
    listed = {loc.name for loc in shard_locations(folder)}
    missing = [p.name for p in token_paths if p.name not in listed]
    if missing:
        raise ConfigError(
            f"{len(missing)} of {len(token_paths)} token shards have no score shard in "
            f"{folder.url} (e.g. {missing[:3]}): rerun `colorfilter {stage}`"
        )
    return [folder.join(p.name) for p in token_paths]


def no_shards_message(split_dir: str | Path | Location) -> str:
    """Why OUTPUT/tokens/<split>/ has no shards: prepare never ran there, or it ran and found
    no usable chunk (its stats.json then holds the error naming the input files)."""
    split_dir = as_location(split_dir)
    stats_path = split_dir.join("stats.json")
    if not storage.exists(stats_path):
        return f"no {split_dir.name} token shards in {split_dir}: run `colorfilter prepare` first"
    stats = storage.read_json_object(stats_path) or {}
    detail = stats.get("error") or f"see {stats_path}"
    return f"prepare made no {split_dir.name} token shards ({detail}); fix the input and rerun it"


def pad_input_ids(
    input_ids: pa.Array | pa.ChunkedArray, seq_len: int, pad_id: int
) -> tuple[np.ndarray, np.ndarray]:
    """Turn a list<int32> column into a [B, seq_len] int64 matrix (right-padded) and lengths.

    Vectorised over Arrow offsets, so it costs one copy, not a Python loop per row.
    """
    if isinstance(input_ids, pa.ChunkedArray):
        input_ids = input_ids.combine_chunks()
    offsets = input_ids.offsets.to_numpy(zero_copy_only=False)
    lengths = np.diff(offsets).astype(np.int32)
    if lengths.size and lengths.max() > seq_len:
        raise ValueError(f"a chunk has {lengths.max()} tokens, more than seq_len={seq_len}")
    values = input_ids.flatten().to_numpy(zero_copy_only=False).astype(np.int64)
    out = np.full((len(lengths), seq_len), pad_id, dtype=np.int64)
    rows = np.repeat(np.arange(len(lengths)), lengths)
    cols = np.arange(values.size) - np.repeat(offsets[:-1] - offsets[0], lengths)
    out[rows, cols] = values
    return out, lengths


def iter_padded_batches(
    paths: Sequence[str | Path | Location], batch_size: int, seq_len: int, pad_id: int
) -> Iterator[tuple[np.ndarray, np.ndarray, np.ndarray]]:
    """Yield (seq_ids, input_ids [B, seq_len], n_tokens) batches over shards (local or on a
    bucket), streaming."""
    for path in paths:
        with open_parquet(path) as parquet:
            batches = parquet.iter_batches(batch_size=batch_size, columns=["seq_id", "input_ids"])
            for batch in batches:
                input_ids, n_tokens = pad_input_ids(batch.column("input_ids"), seq_len, pad_id)
                yield batch.column("seq_id").to_numpy(), input_ids, n_tokens
