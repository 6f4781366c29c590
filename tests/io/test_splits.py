"""Cutting one input file into parts: every record lands in exactly one part, in file order."""

from __future__ import annotations

import gzip

import pyarrow as pa
import pyarrow.parquet as pq
import pytest
import zstandard

from colorfilter.io.files import InputFile
from colorfilter.io.readers import iter_line_range, iter_lines, iter_records, iter_zstd_line_range
from colorfilter.io.splits import plan_spans, zstd_frame_offsets

DATA = b'{"text": "one"}\n\n{"text": "two \\u00e9"}\n{bad\n' + b'{"text": "x"}\n' * 5 + b"tail"


def item(path) -> InputFile:
    fmt = "parquet" if str(path).endswith(".parquet") else "jsonl"
    return InputFile(str(path), fmt, path.stat().st_size)


def test_byte_ranges_cover_every_line_once(tmp_path):
    path = tmp_path / "a.jsonl"
    path.write_bytes(DATA)
    whole = list(iter_lines(str(path)))
    for split_bytes in range(1, len(DATA) + 2):
        spans = plan_spans(item(path), split_bytes)
        assert bool(spans) == (split_bytes < len(DATA))
        parts = [line for span in spans for line in iter_line_range(str(path), *span)]
        assert parts == whole or not spans, split_bytes


def write_frames(path, data: bytes, cuts: list[int]) -> None:
    """One zstd frame per piece between cuts (mid-line, at a newline, and an empty frame)."""
    compressor = zstandard.ZstdCompressor()
    bounds = [0, *cuts, len(data)]
    path.write_bytes(b"".join(compressor.compress(data[a:b]) for a, b in zip(bounds, bounds[1:])))


@pytest.mark.parametrize("cuts", [[5, 16, 16, 30, 41], [1, 2, 3, 60, 61, 100], [16]])
def test_zstd_frames_cover_every_line_once(tmp_path, cuts):
    path = tmp_path / "a.jsonl.zst"
    write_frames(path, DATA, cuts)
    offsets = zstd_frame_offsets(str(path))
    assert offsets is not None and len(offsets) == len(cuts) + 1
    whole = list(iter_lines(str(path)))
    seen_split = False
    for split_bytes in range(1, path.stat().st_size + 1):
        spans = plan_spans(item(path), split_bytes)
        seen_split |= len(spans) == len(offsets)  # one part per frame
        parts = [line for span in spans for line in iter_zstd_line_range(str(path), *span)]
        assert parts == whole or not spans, split_bytes
    assert seen_split


def test_records_of_parts_match_the_whole_file(tmp_path):
    table = pa.table({"text": [f"doc {i}" for i in range(23)]})
    parquet = tmp_path / "a.parquet"
    pq.write_table(table, parquet, row_group_size=4)
    spans = plan_spans(item(parquet), 1)
    assert spans == [(i, i + 1) for i in range(6)]
    texts = [r.text for s in spans for r in iter_records(item(parquet), span=s)]
    assert texts == table.column("text").to_pylist()
    assert [r.index for r in iter_records(item(parquet), span=spans[1])] == [0, 1, 2, 3]


def test_unsplittable_inputs_stay_one_task(tmp_path):
    gz = tmp_path / "a.jsonl.gz"
    gz.write_bytes(gzip.compress(DATA))
    single = tmp_path / "b.jsonl.zst"
    write_frames(single, DATA, [])
    truncated = tmp_path / "c.jsonl.zst"
    write_frames(truncated, DATA, [30])
    truncated.write_bytes(truncated.read_bytes()[:-5])
    plain = tmp_path / "d.jsonl"
    plain.write_bytes(DATA)
    assert plan_spans(item(gz), 1) == [] and plan_spans(item(single), 1) == []
    assert zstd_frame_offsets(str(truncated)) is None and plan_spans(item(truncated), 1) == []
    assert plan_spans(item(plain), 0) == []  # split_bytes 0: never
    assert plan_spans(InputFile("s3://b/k.jsonl", "jsonl", 10**9), 10) == []
