"""Streaming document readers: JSON lines (plain, .gz, .zst), parquet, and HF datasets.

Each reader yields one item per input record, in file order, with the record's index in the file
(its 0-based line for JSON lines), so provenance points back to the exact line. Bad records are
yielded as `BadRecord`s with a reason rather than raised: the caller counts them. Memory stays
flat: files are read as streams in bounded blocks.

Inputs on buckets (s3://, gs://, hf:// file URLs) are streamed straight from the store through
colorfilter.io.storage (`open_read`, and pyarrow's own filesystems for parquet), so a worker on
any node reads them without a shared disk; `storage` carries the run's endpoint/region options.
Local files are opened directly, as before.
"""

from __future__ import annotations

import contextlib
import gzip
import json
import zlib
from collections.abc import Iterator
from dataclasses import dataclass
from typing import IO

from colorfilter.errors import ConfigError
from colorfilter.io import storage as store
from colorfilter.io.config import StorageConfig
from colorfilter.io.files import HF_PREFIX, InputFile
from colorfilter.io.location import Location
from colorfilter.io.splits import zstd_frame_offsets
from colorfilter.io.transfer import open_parquet

READ_BLOCK_BYTES = 1 << 20


@dataclass
class Document:
    index: int  # record index in the file (0-based line number for JSON lines)
    text: str
    source: str | None = None


@dataclass
class BadRecord:
    index: int
    reason: str  # malformed_json | invalid_utf8 | missing_text_field | non_string_text | ...
    detail: str = ""


Record = Document | BadRecord


def iter_records(
    item: InputFile,
    text_field: str = "text",
    source_field: str | None = None,
    hf_split: str = "train",
    storage: StorageConfig | None = None,
    span: tuple[int, int] | None = None,
) -> Iterator[Record]:
    """Dispatch on the input's format.

    `span` reads one part of a split file (see colorfilter.io.splits): a byte range of a plain
    JSON lines file, a frame range of a zstd one, or a row-group range of a parquet file;
    indices then count from the part's first record.
    """
    if span is not None and item.format == "jsonl":
        zstd = item.uri.lower().endswith((".zst", ".zstd"))
        lines = iter_zstd_line_range(item.uri, *span) if zstd else iter_line_range(item.uri, *span)
        try:
            for index, line in enumerate(lines):
                yield _parse_json_line(index, line, text_field, source_field)
        except EOFError as exc:
            raise TruncatedFileError(f"{item.uri}: compressed data is corrupt ({exc})") from exc
    elif span is not None and item.format == "parquet":
        yield from iter_parquet(item.uri, text_field, source_field, storage, range(*span))
    elif span is not None:
        raise ValueError(f"{item.uri}: format {item.format!r} cannot be read in parts")
    elif item.format == "jsonl":
        yield from iter_jsonl(item.uri, text_field, source_field, storage)
    elif item.format == "parquet":
        yield from iter_parquet(item.uri, text_field, source_field, storage)
    elif item.format == "hf_disk":
        yield from iter_hf_disk(item.uri, text_field, source_field)
    elif item.format == "hf_hub":
        yield from iter_hf_hub(item.uri, text_field, source_field, hf_split)
    else:
        raise ValueError(f"unknown input format {item.format!r} for {item.uri}")


class TruncatedFileError(Exception):
    """The compressed stream ended early or is corrupt: what came before it is still valid."""


def iter_jsonl(
    path: str, text_field: str, source_field: str | None, storage: StorageConfig | None = None
) -> Iterator[Record]:
    """JSON lines, one record per line; a blank line is a bad record (so indices match lines)."""
    for index, line in enumerate(iter_lines(path, storage)):
        yield _parse_json_line(index, line, text_field, source_field)


@contextlib.contextmanager
def open_binary(path: str, storage: StorageConfig | None = None) -> Iterator[IO[bytes]]:
    """A binary reader: the OS file for a local path, a streamed object for a URL."""
    if "://" not in path:
        with open(path, "rb") as handle:
            yield handle
        return

    with store.open_read(Location.parse(path, storage)) as handle:
        yield handle


def iter_lines(path: str, storage: StorageConfig | None = None) -> Iterator[bytes]:
    """Lines of a plain, .gz or .zst file, streamed; a truncated stream raises at its end."""
    lower = path.lower()
    try:
        with open_binary(path, storage) as raw:
            if lower.endswith((".zst", ".zstd")):
                yield from _split_lines(_zstd_blocks(raw))
            elif lower.endswith(".gz"):
                with gzip.GzipFile(fileobj=raw, mode="rb") as handle:
                    yield from handle
            elif "://" in path:  # remote readers are not line-buffered: split blocks here
                yield from _split_lines(iter(lambda: raw.read(READ_BLOCK_BYTES), b""))
            else:
                yield from raw
    except (EOFError, gzip.BadGzipFile, zlib.error) as exc:
        raise TruncatedFileError(
            f"{path}: compressed data is truncated or corrupt ({exc})"
        ) from exc


def iter_line_range(path: str, start: int, end: int) -> Iterator[bytes]:
    """The lines of a local plain file that start at a byte offset in [start, end).

    A line starts at 0 or right after a newline, so consecutive ranges cover every line once.
    """
    with open(path, "rb") as handle:
        if start > 0:
            handle.seek(start - 1)
            handle.readline()  # up to the first newline at or after start - 1
        position = handle.tell()
        while position < end:
            line = handle.readline()
            if not line:
                return
            yield line
            position += len(line)


def iter_zstd_line_range(path: str, start: int, end: int) -> Iterator[bytes]:
    """The lines of a local multi-frame zstd file that start in frames [start, end).

    `start` and `end` are compressed frame offsets (colorfilter.io.splits). Whether the part's
    first bytes begin a line depends on the previous frames' last byte; a line still open at
    the end of the part is completed from the frames after it.
    """
    skip_partial = False
    if start > 0:
        offsets = zstd_frame_offsets(path) or []
        earlier = [o for o in offsets if o < start]
        bounds = list(zip(earlier, earlier[1:] + [start]))
        for frame_start, frame_end in reversed(bounds):  # the last non-empty frame before
            data = b"".join(_zstd_blocks(_Bounded(path, frame_start, frame_end)))
            if data:
                skip_partial = not data.endswith(b"\n")
                break
    pending = b""
    for line in _split_lines(_zstd_blocks(_Bounded(path, start, end))):
        if skip_partial:
            skip_partial = not line.endswith(b"\n")
            continue
        if line.endswith(b"\n"):
            yield line
        else:
            pending = line
    if pending:
        for rest in _split_lines(_zstd_blocks(_Bounded(path, end, None))):
            pending += rest
            if rest.endswith(b"\n"):
                break
        yield pending


class _Bounded:
    """A file's bytes [start, end) (end None: to the end of the file) as a read(n) stream."""

    def __init__(self, path: str, start: int, end: int | None):
        self.path, self.position, self.end = path, start, end

    def read(self, size: int) -> bytes:
        limit = size if self.end is None else min(size, self.end - self.position)
        if limit <= 0:
            return b""
        with open(self.path, "rb") as handle:
            handle.seek(self.position)
            data = handle.read(limit)
        self.position += len(data)
        return data


def _zstd_blocks(handle: IO[bytes]) -> Iterator[bytes]:
    """Decompressed blocks of a (multi-frame) zstd stream; an unfinished last frame raises."""
    import zstandard

    in_frame = False
    decompressor = zstandard.ZstdDecompressor().decompressobj()
    while block := handle.read(READ_BLOCK_BYTES):
        while block:
            in_frame = True
            try:
                yield decompressor.decompress(block)
            except zstandard.ZstdError as exc:
                raise EOFError(f"zstd: {exc}") from exc
            block = b""
            if decompressor.eof:
                block, in_frame = decompressor.unused_data, False
                decompressor = zstandard.ZstdDecompressor().decompressobj()
    if in_frame:
        raise EOFError("zstd stream ends inside a frame")


def _split_lines(blocks: Iterator[bytes]) -> Iterator[bytes]:
    pending = b""
    for block in blocks:
        if not block:
            continue
        lines = (pending + block).split(b"\n")
        pending = lines.pop()
        for line in lines:
            yield line + b"\n"
    if pending:
        yield pending


def _parse_json_line(index: int, line: bytes, text_field: str, source_field: str | None) -> Record:
    try:
        decoded = line.decode("utf-8")
    except UnicodeDecodeError as exc:
        return BadRecord(index, "invalid_utf8", str(exc))
    if not decoded.strip():
        return BadRecord(index, "empty_line")
    try:
        record = json.loads(decoded)
    except json.JSONDecodeError as exc:
        return BadRecord(index, "malformed_json", str(exc))
    if not isinstance(record, dict):
        return BadRecord(index, "not_an_object", type(record).__name__)
    return _make_document(index, record, text_field, source_field)


def _make_document(index: int, record: dict, text_field: str, source_field: str | None) -> Record:
    if text_field not in record:
        return BadRecord(index, "missing_text_field", f"no '{text_field}' key")
    text = record[text_field]
    if not isinstance(text, str):
        return BadRecord(index, "non_string_text", type(text).__name__)
    if not text.strip():
        return BadRecord(index, "empty_text")
    if _has_surrogates(text):
        return BadRecord(index, "invalid_utf8", "lone surrogate escape in JSON string")
    source = record.get(source_field) if source_field else None
    return Document(index, text, None if source is None else str(source))


def _has_surrogates(text: str) -> bool:
    try:
        text.encode("utf-8")
    except UnicodeEncodeError:
        return True
    return False


def iter_parquet(
    path: str,
    text_field: str,
    source_field: str | None,
    storage: StorageConfig | None = None,
    row_groups: range | None = None,
) -> Iterator[Record]:
    """Parquet, read in record batches (bounded memory); URLs through pyarrow's filesystems."""
    with open_parquet(Location.parse(path, storage)) as parquet:
        names = parquet.schema_arrow.names
        if text_field not in names:
            raise ConfigError(f"{path}: no column '{text_field}' (columns: {', '.join(names)})")
        columns = [text_field] + ([source_field] if source_field and source_field in names else [])
        index = 0
        groups = None if row_groups is None else list(row_groups)
        for batch in parquet.iter_batches(batch_size=1024, columns=columns, row_groups=groups):
            yield from _rows_to_records(batch.to_pylist(), index, text_field, source_field)
            index += batch.num_rows


def _rows_to_records(
    rows: list[dict], start: int, text_field: str, source_field: str | None
) -> Iterator[Record]:
    for offset, row in enumerate(rows):
        yield _make_document(start + offset, row, text_field, source_field)


def iter_hf_disk(path: str, text_field: str, source_field: str | None) -> Iterator[Record]:
    """A dataset saved with `save_to_disk` (memory-mapped Arrow, so memory stays flat)."""
    from datasets import load_from_disk

    dataset = load_from_disk(path)
    if hasattr(dataset, "keys"):  # a DatasetDict: take its splits in name order
        raise ValueError(f"{path}: is a DatasetDict; point data.* at one split's directory")
    index = 0
    for batch in dataset.iter(batch_size=1024):
        rows = [dict(zip(batch, values)) for values in zip(*batch.values())]
        yield from _rows_to_records(rows, index, text_field, source_field)
        index += len(rows)


def parse_hf_uri(uri: str) -> tuple[str, str | None, int, int]:
    """`hf://NAME[:CONFIG][#SHARD-of-N]` -> (name, config, shard, num_shards)."""
    body = uri[len(HF_PREFIX) :]
    body, _, shard_part = body.partition("#")
    name, _, config = body.partition(":")
    shard, num_shards = 0, 1
    if shard_part:
        left, _, right = shard_part.partition("-of-")
        shard, num_shards = int(left), int(right)
    return name, config or None, shard, num_shards


def iter_hf_hub(
    uri: str, text_field: str, source_field: str | None, split: str
) -> Iterator[Record]:
    """One shard of a hub dataset, streamed (never downloaded whole)."""
    from datasets import load_dataset

    name, config, shard, num_shards = parse_hf_uri(uri)
    stream = load_dataset(name, config, split=split, streaming=True)
    if num_shards > 1:
        stream = stream.shard(num_shards=num_shards, index=shard)
    for index, row in enumerate(stream):
        yield _make_document(index, row, text_field, source_field)


def expand_hf_shards(uri: str, split: str) -> list[str]:
    """Split a hub dataset into its file shards so workers can read them in parallel."""
    from datasets import load_dataset

    name, config, _, _ = parse_hf_uri(uri)
    stream = load_dataset(name, config, split=split, streaming=True)
    count = max(1, int(getattr(stream, "num_shards", 1)))
    base = f"{HF_PREFIX}{name}" + (f":{config}" if config else "")
    return [f"{base}#{i:05d}-of-{count:05d}" for i in range(count)]
