"""prepare.row_group_rows: token shards in row groups of that size, the same rows either way."""

from __future__ import annotations

import numpy as np
import pyarrow.parquet as pq
import pytest

from colorfilter.chunking import Chunker
from colorfilter.errors import ConfigError
from colorfilter.io import storage
from colorfilter.io.location import Location
from colorfilter.io.token_shards import list_shards
from colorfilter.pipeline.prepare import make_settings
from colorfilter.pipeline.prepare_parts import FileStats, ShardWriter
from colorfilter.pipeline.stages import run_stage
from tests.pipeline.test_prepare import make_config


def _group_sizes(path) -> list[int]:
    metadata = pq.ParquetFile(path).metadata
    return [metadata.row_group(i).num_rows for i in range(metadata.num_row_groups)]


def test_the_writer_changes_only_the_row_groups(tmp_path):
    rng = np.random.default_rng(0)
    tables = {}
    for rows in (0, 4):
        chunker = Chunker(8, 3, "file.jsonl")
        folder = Location.parse(tmp_path / str(rows))
        storage.makedirs(folder)
        writer = ShardWriter(folder, 3, 10, chunker, FileStats(), rows)
        for doc in range(30):
            chunker.add(doc, rng.integers(1, 50, size=7).astype(np.int32))
            writer.flush(final=False)
        writer.flush(final=True)
        tables[rows] = [pq.read_table(p) for p in list_shards(tmp_path / str(rows))]
        rng = np.random.default_rng(0)
    assert [t.to_pylist() for t in tables[0]] == [t.to_pylist() for t in tables[4]]
    sizes = [_group_sizes(p) for p in list_shards(tmp_path / "4")]
    assert sizes == [[4, 4, 2]] * (len(sizes) - 1) + [sizes[-1]] and len(sizes) > 1
    assert all(len(_group_sizes(p)) == 1 for p in list_shards(tmp_path / "0"))


def test_prepare_writes_the_requested_row_groups(tmp_path, tokenizer_dir, c4_inputs):
    config = make_config(tmp_path, tokenizer_dir, c4_inputs, **{"prepare.row_group_rows": 6})
    run_stage("prepare", config)
    for split in ("pool", "downstream_train", "downstream_eval"):
        for path in list_shards(config.output_path / "tokens" / split):
            sizes = _group_sizes(path)
            assert sizes[:-1] == [6] * (len(sizes) - 1) and 0 < sizes[-1] <= 6
    assert any(len(_group_sizes(p)) > 1 for p in list_shards(config.output_path / "tokens/pool"))
    # Another layout is another result: re-prepared when changed, refused in the same output dir.
    default = make_config(tmp_path, tokenizer_dir, c4_inputs)
    tokenizer = str(config.output_path / "tokenizer")
    assert (
        make_settings(default, tokenizer).settings_hash
        != make_settings(config, tokenizer).settings_hash
    )
    regrouped = make_config(tmp_path, tokenizer_dir, c4_inputs, **{"prepare.row_group_rows": 4})
    with pytest.raises(ConfigError, match="prepare.row_group_rows: 6 -> 4"):
        run_stage("prepare", regrouped)
