"""The pool's source labels as integer codes: same labels, compositions and masks as per-row str."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pyarrow as pa
import pyarrow.parquet as pq

from colorfilter.evaluation.plan import Pool, _read_sources, composition, is_target
from colorfilter.evaluation.report import _source_groups
from colorfilter.models.data import ChunkIndex


def write_sources(tmp_path: Path, parts: list[list]) -> list[Path]:
    paths = []
    for i, values in enumerate(parts):
        paths.append(tmp_path / f"{i:05d}-00000.parquet")
        pq.write_table(pa.table({"source": pa.array(values, pa.string())}), paths[-1])
    return paths


def make_pool(paths: list[Path], n: int, seed: int) -> Pool:
    rng = np.random.default_rng(seed)
    ids = rng.permutation(n).astype(np.uint64)
    tokens = rng.integers(1, 65, n).astype(np.int32)
    index = ChunkIndex(paths[:1], np.zeros(n, np.int32), np.arange(n), ids, tokens)
    return Pool(index, _read_sources(paths), np.argsort(ids, kind="stable"))


def test_codes_give_the_same_results_as_per_row_labels(tmp_path):
    rng = np.random.default_rng(1)
    vocab = ["web", "book:a", "book:b", "", "wiki", None]
    parts = [list(rng.choice(np.array(vocab, dtype=object), size)) for size in (50, 1, 80, 0, 40)]
    parts.append([None] * 7)  # a shard without labels
    paths = write_sources(tmp_path, parts)
    rows = [v for part in parts for v in part]
    pool = make_pool(paths, len(rows), 2)
    assert pool.source.codes.dtype == np.int32 and len(pool.source.names) <= len(vocab)
    assert [pool.source.names[c] for c in pool.source.codes] == rows
    labels = np.array(["" if s is None else str(s) for s in rows], dtype=object)  # the old index
    assert np.array_equal(pool.source.mask(["book:"]), is_target(labels, ["book:"]))
    chosen = pool.index.seq_id[rng.choice(len(rows), 60, replace=False)]
    got = composition(pool, chosen, ["book:", "wiki"])
    picked = pool.positions(chosen)
    tokens = pool.index.n_tokens[picked].astype(np.int64)
    expected = {str(s): int(tokens[labels[picked] == s].sum()) for s in np.unique(labels[picked])}
    assert got["tokens_by_source"] == expected and list(got["tokens_by_source"]) == list(expected)
    hits = is_target(labels, ["book:", "wiki"])
    assert got["recall"] == tokens[hits[picked]].sum() / pool.index.n_tokens[hits].sum()
    groups = _source_groups(pool, ["book:"])
    shown = np.array(["(none)" if s is None else str(s) for s in rows], dtype=object)
    assert set(groups.sources) == set(np.unique(shown))
    for name, mask in groups.sources.items():
        assert np.array_equal(mask, shown == name), name


def test_shards_without_any_label_have_no_sources(tmp_path):
    assert _read_sources(write_sources(tmp_path, [[None, None], [None]])) is None
