"""Document mode: selected chunks widened to their whole documents, per input file."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pyarrow as pa
import pyarrow.parquet as pq
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from colorfilter.errors import BadDataError
from colorfilter.io.token_shards import make_seq_ids
from colorfilter.selection.documents import expand_to_documents


def write_file(directory: Path, file_index: int, ranges: list[tuple[int, int]], parts: int) -> None:
    """One input file's chunks (doc_first, doc_last per chunk) split over `parts` token shards."""
    seq_ids = make_seq_ids(file_index, 0, len(ranges))
    firsts = np.array([r[0] for r in ranges], dtype=np.int64)
    lasts = np.array([r[1] for r in ranges], dtype=np.int64)
    for part, rows in enumerate(np.array_split(np.arange(len(ranges)), parts)):
        table = pa.table(
            {"seq_id": seq_ids[rows], "doc_first": firsts[rows], "doc_last": lasts[rows]}
        )
        pq.write_table(table, directory / f"{file_index:05d}-{part:05d}.parquet")


def chunk_ranges(doc_lengths: list[int], chunk_len: int) -> list[tuple[int, int]]:
    """(first, last) document of each chunk when documents of these token lengths are joined."""
    owner = np.repeat(np.arange(len(doc_lengths)), doc_lengths)
    return [
        (int(owner[start]), int(owner[min(start + chunk_len, len(owner)) - 1]))
        for start in range(0, len(owner), chunk_len)
    ]


def brute_force(files: dict[int, list[tuple[int, int]]], selected: set[int]) -> list[int]:
    kept = []
    for file_index, ranges in files.items():
        ids = make_seq_ids(file_index, 0, len(ranges)).tolist()
        docs = {
            doc
            for seq_id, (first, last) in zip(ids, ranges, strict=True)
            if seq_id in selected
            for doc in range(first, last + 1)
        }
        kept += [
            seq_id
            for seq_id, (first, last) in zip(ids, ranges, strict=True)
            if docs & set(range(first, last + 1))
        ]
    return sorted(kept)


def test_a_document_split_over_shards_is_taken_whole(tmp_path):
    # file 0: doc 0 in chunks 0-1, doc 1 in chunks 1-2, doc 2 in chunks 3-4, doc 3 in chunk 4
    write_file(tmp_path, 0, [(0, 0), (0, 1), (1, 1), (2, 2), (2, 3)], parts=1)
    # file 1: doc 0 runs over chunks 0-2, across the boundary between its two shards
    write_file(tmp_path, 1, [(0, 0), (0, 0), (0, 1), (1, 1)], parts=2)
    paths = sorted(tmp_path.glob("*.parquet"))
    file0, file1 = make_seq_ids(0, 0, 5), make_seq_ids(1, 0, 4)

    widened = expand_to_documents(np.array([file0[2], file1[0]]), paths)
    # file 0: chunk 2 holds doc 1 -> chunks 1 and 2 (chunk 1 also holds doc 0: one step only)
    # file 1: chunk 0 holds doc 0 -> chunks 0, 1, 2 (in both shards), not chunk 3 (doc 1 only)
    assert widened.tolist() == [file0[1], file0[2], file1[0], file1[1], file1[2]]
    assert expand_to_documents(np.array([], np.uint64), paths).size == 0
    with pytest.raises(BadDataError, match="1 selected seq_ids are not in the pool"):
        expand_to_documents(np.array([file0[0], make_seq_ids(7, 0, 1)[0]]), paths)


@settings(max_examples=60, deadline=None)
@given(
    st.lists(st.lists(st.integers(1, 40), min_size=1, max_size=12), min_size=1, max_size=3),
    st.integers(4, 16),
    st.integers(1, 3),
    st.data(),
)
def test_matches_a_brute_force_over_document_sets(tmp_path_factory, files, chunk_len, parts, data):
    directory = tmp_path_factory.mktemp("docs")
    layout = {index: chunk_ranges(lengths, chunk_len) for index, lengths in enumerate(files)}
    for index, ranges in layout.items():
        write_file(directory, index, ranges, parts=min(parts, len(ranges)))
    every_id = np.concatenate([make_seq_ids(i, 0, len(r)) for i, r in layout.items()]).tolist()
    selected = data.draw(st.sets(st.sampled_from(every_id)))
    widened = expand_to_documents(
        np.array(sorted(selected), np.uint64), sorted(directory.glob("*.parquet"))
    )
    assert widened.tolist() == brute_force(layout, selected)
    assert selected <= set(widened.tolist())
