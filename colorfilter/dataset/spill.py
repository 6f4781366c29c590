"""Spill files: selected rows parked by output shard, so shards assemble in bounded memory.

Each input shard's selected rows are written once, sorted by output position, into a temp
parquet file with one row group per output shard they belong to; an output shard is then the
concatenation of its row groups across spill files, sorted by position.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from pathlib import Path

import numpy as np
import pyarrow as pa
import pyarrow.parquet as pq

from colorfilter.dataset.schema import OUTPUT_SCHEMA

POSITION = "__position"


@dataclass
class Spill:
    """Where each output shard's rows wait: (spill file, row group) pairs per output shard."""

    directory: Path
    rows_per_shard: int
    sources: dict[int, list[tuple[Path, int]]] = field(default_factory=dict)

    def add(self, table: pa.Table, index: int) -> None:
        """Spill one input shard's selected rows, one row group per output shard."""
        if table.num_rows == 0:
            return
        table = table.sort_by(POSITION)
        buckets = table.column(POSITION).to_numpy() // self.rows_per_shard
        starts = np.flatnonzero(np.r_[True, buckets[1:] != buckets[:-1]])
        ends = np.r_[starts[1:], buckets.size]
        path = self.directory / f"{index:06d}.parquet"
        self.directory.mkdir(parents=True, exist_ok=True)
        with pq.ParquetWriter(path, table.schema, compression="zstd") as writer:
            for group, (start, end) in enumerate(zip(starts, ends, strict=True)):
                length = int(end - start)
                writer.write_table(table.slice(int(start), length), row_group_size=length)
                self.sources.setdefault(int(buckets[start]), []).append((path, group))

    def read(self, bucket: int) -> pa.Table:
        tables = []
        for path, group in self.sources.get(bucket, []):
            with pq.ParquetFile(path) as parquet:
                tables.append(parquet.read_row_group(group))
        if not tables:
            return empty_spill_table()
        return pa.concat_tables(tables).sort_by(POSITION)


def empty_spill_table() -> pa.Table:
    schema = OUTPUT_SCHEMA.append(pa.field(POSITION, pa.int64()))
    return schema.empty_table()
