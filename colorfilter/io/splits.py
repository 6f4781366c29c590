"""Where one big input file can be cut into parts that are read (and tokenized) independently.

A part is a `span`: a byte range [start, end) of a local plain JSON lines file (a line belongs
to the part its first byte falls in), a range of whole frames of a local multi-frame zstd JSON
lines file (compressed offsets of its first frame and of the frame after it; a line belongs to
the part whose decompressed bytes hold its first byte), or a row-group range [first, stop) of a
local parquet file. Gzip (one stream), single-frame zstd, remote and hub inputs stay one task.
"""

from __future__ import annotations

import os

from colorfilter.io.files import InputFile

COMPRESSED = (".gz", ".zst", ".zstd")
ZSTD_MAGIC = 0xFD2FB528
SKIPPABLE = range(0x184D2A50, 0x184D2A60)


def plan_spans(item: InputFile, split_bytes: int) -> list[tuple[int, int]]:
    """The parts of `item` at about `split_bytes` each; [] when the file stays one task."""
    if split_bytes <= 0 or "://" in item.uri or item.size <= split_bytes:
        return []
    if item.format == "jsonl" and not item.uri.lower().endswith(COMPRESSED):
        spans = [
            (start, min(start + split_bytes, item.size))
            for start in range(0, item.size, split_bytes)
        ]
    elif item.format == "jsonl" and item.uri.lower().endswith((".zst", ".zstd")):
        spans = _pack(zstd_frame_offsets(item.uri) or [0], item.size, split_bytes)
    elif item.format == "parquet":
        spans = _row_group_spans(item.uri, split_bytes)
    else:
        return []
    return spans if len(spans) > 1 else []


def _row_group_spans(path: str, split_bytes: int) -> list[tuple[int, int]]:
    """Consecutive row groups packed greedily up to about `split_bytes` (compressed) each."""
    import pyarrow.parquet as pq

    metadata = pq.ParquetFile(path).metadata
    spans, first, size = [], 0, 0
    for index in range(metadata.num_row_groups):
        group = metadata.row_group(index)
        size += sum(group.column(c).total_compressed_size for c in range(group.num_columns))
        if size >= split_bytes:
            spans.append((first, index + 1))
            first, size = index + 1, 0
    if first < metadata.num_row_groups:
        spans.append((first, metadata.num_row_groups))
    return spans


def _pack(starts: list[int], size: int, split_bytes: int) -> list[tuple[int, int]]:
    """Consecutive units (given by their start offsets) packed up to about `split_bytes`."""
    ends = starts[1:] + [size]
    spans, first = [], starts[0]
    for end in ends:
        if end - first >= split_bytes or end == size:
            spans.append((first, end))
            first = end
    return spans


def zstd_frame_offsets(path: str) -> list[int] | None:
    """Compressed start offsets of a zstd file's frames, read from frame and block headers only.

    None when the file does not parse as whole frames (truncated, not zstd): it then stays one
    task, whose reader reports what is wrong.
    """
    size = os.path.getsize(path)
    offsets: list[int] = []
    with open(path, "rb") as handle:
        position = 0
        while position < size:
            handle.seek(position)
            head = handle.read(8)
            if len(head) < 5:
                return None
            magic = int.from_bytes(head[:4], "little")
            if magic in SKIPPABLE:
                position += 8 + int.from_bytes(head[4:8], "little")
                continue
            if magic != ZSTD_MAGIC:
                return None
            offsets.append(position)
            position = _frame_end(handle, position, head[4])
            if position is None or position > size:
                return None
    return offsets


def _frame_end(handle, start: int, descriptor: int) -> int | None:
    """The offset just past the frame at `start`, from its header and block headers."""
    single = (descriptor >> 5) & 1
    content_size = ((1 if single else 0), 2, 4, 8)[descriptor >> 6]
    position = start + 5 + (0 if single else 1) + (0, 1, 2, 4)[descriptor & 3] + content_size
    while True:
        handle.seek(position)
        block = handle.read(3)
        if len(block) < 3:
            return None
        value = int.from_bytes(block, "little")
        kind, length = (value >> 1) & 3, value >> 3
        if kind == 3:  # reserved: not zstd
            return None
        position += 3 + (1 if kind == 1 else length)
        if value & 1:  # last block
            return position + (4 if (descriptor >> 2) & 1 else 0)
