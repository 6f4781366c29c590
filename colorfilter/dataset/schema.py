"""The columns and file names of a released selection folder."""

from __future__ import annotations

import pyarrow as pa

OUTPUT_SCHEMA = pa.schema(
    [
        ("seq_id", pa.uint64()),
        ("input_ids", pa.list_(pa.int32())),
        ("text", pa.string()),
        ("score", pa.float32()),
        ("prior_loss", pa.float32()),
        ("cond_loss", pa.float32()),
        ("n_tokens", pa.int32()),
        ("source_file", pa.string()),
        ("doc_first", pa.int64()),
        ("doc_last", pa.int64()),
        ("doc_offset", pa.int32()),
        ("source", pa.string()),
    ]
)
DATA_DIR = "data"


def shard_name(index: int, total: int) -> str:
    """`train-00000-of-00004.parquet`: the Hub's split-shard naming."""
    return f"train-{index:05d}-of-{total:05d}.parquet"


def selection_dir_name(method: str, tau: float) -> str:
    """`<method>-tau<tau>`, e.g. `color-tau16`."""
    return f"{method}-tau{tau:g}"
