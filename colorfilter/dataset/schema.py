"""The columns and file names of a released selection folder."""

from __future__ import annotations

import pyarrow as pa

from colorfilter.io.token_shards import TOKEN_SCHEMA

# the token shard's columns, with the text and the scores after its ids
OUTPUT_SCHEMA = pa.schema(
    [
        *list(TOKEN_SCHEMA)[:2],
        ("text", pa.string()),
        ("score", pa.float32()),
        ("prior_loss", pa.float32()),
        ("cond_loss", pa.float32()),
        *list(TOKEN_SCHEMA)[2:],
    ]
)
DATA_DIR = "data"


def shard_name(index: int, total: int) -> str:
    """`train-00000-of-00004.parquet`: the Hub's split-shard naming."""
    return f"train-{index:05d}-of-{total:05d}.parquet"


def selection_dir_name(method: str, tau: float) -> str:
    """`<method>-tau<tau>`, e.g. `color-tau16`."""
    return f"{method}-tau{tau:g}"
