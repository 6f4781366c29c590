"""Prepare's per-file bookkeeping, and one big file prepared as several tasks.

A file that colorfilter.io.splits cuts into spans is prepared in two steps, so its shards are
byte-identical to the ones one task would write for the whole file:
1. `prepare_part` (one task per span, in parallel): read and tokenize the span's documents and
   write their token ids to tokens/<split>/_parts/<file>-<part>.parquet, then its commit record
   (<file>-<part>.json, colorfilter.io.commit). A retried file keeps its committed parts.
2. `assemble_file` (one cheap task per file, no tokenizer): feed the parts' documents in order to
   the same Chunker the unsplit path uses (global document indices = local + records before the
   part), write the shards and the file's completion record, then drop the parts.

Every object goes through colorfilter.io.storage, so the split folder may be on a bucket: shards
and parts are written whole or not at all, and a file's record is written after its shards.
"""

from __future__ import annotations

import hashlib
import time
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any

import numpy as np
import pyarrow as pa

from colorfilter.chunking import Chunker
from colorfilter.io import storage
from colorfilter.io.commit import Unit, commit_unit, committed, discard_unit, read_unit
from colorfilter.io.location import Location
from colorfilter.io.readers import BadRecord, TruncatedFileError, iter_records
from colorfilter.io.redact import redact_obj
from colorfilter.io.transfer import open_parquet, write_parquet

BAD_SAMPLE_LIMIT = 20
EMPTY_FILE = "empty_file"  # a file-level skip reason in stats.json `files_skipped`
PIECE_SCHEMA = pa.schema(
    [("doc_index", pa.int64()), ("tokens", pa.large_list(pa.int32())), ("source", pa.string())]
)


@dataclass
class FileStats:
    """Counts for one input file; merged across files for the split's stats.json."""

    records: int = 0
    documents: int = 0
    bytes_text: int = 0
    tokens: int = 0
    chunks: int = 0
    tail_tokens_dropped: int = 0
    skipped: dict[str, int] = field(default_factory=dict)
    file_skipped: str = ""  # why the whole file gave nothing: empty_file (no record at all)
    bad_samples: list[str] = field(default_factory=list)
    parts: list[str] = field(default_factory=list)
    seconds: float = 0.0


def part_name(file_index: int, part: int) -> str:
    return f"{file_index:05d}-{part:05d}.parquet"


FILE_RECORD = "{:05d}.done.json"  # an input file's completion record, beside its shards
LEGACY_DONE_DIR = "_done"  # where earlier versions kept it: _done/<file>.json


def done_path(split_dir: Path | Location, file_index: int) -> Path | Location:
    """A file's completion record (a Path for a Path, a Location for a Location)."""
    name = FILE_RECORD.format(file_index)
    if isinstance(split_dir, Location):
        return split_dir.join(name)
    return Path(split_dir) / name


def legacy_done_path(split_dir: Location, file_index: int) -> Location:
    """The record an earlier version wrote for the file (read once, to resume, then replaced)."""
    return split_dir.join(LEGACY_DONE_DIR, f"{file_index:05d}.json")


def piece_path(split_dir: Location, file_index: int, part: int) -> Location:
    return split_dir.join("_parts", part_name(file_index, part))


def piece_record(split_dir: Location, file_index: int, part: int) -> Location:
    """The part's commit record, beside its data: <file>-<part>.json."""
    return split_dir.join("_parts", f"{file_index:05d}-{part:05d}.json")


class ShardWriter:
    """Cuts a Chunker's chunks into shards of `rows_per_shard` rows, written as they fill, in
    row groups of `row_group_rows` rows (0: one per shard).

    Each shard is serialized once, sized and hashed from those bytes and written as one object
    (whole or not at all), so the record's sizes and sha256s cost no request to a bucket.
    """

    def __init__(
        self, split_dir: Location, file_index: int, rows: int, chunker: Any, stats: FileStats,
        row_group_rows: int = 0,
    ):
        self.split_dir, self.file_index, self.rows = split_dir, file_index, rows
        self.chunker, self.stats = chunker, stats
        self.row_group_rows = row_group_rows or None
        self.sizes: dict[str, int] = {}
        self.sha256: dict[str, str] = {}

    @classmethod
    def for_file(cls, task: Any, settings: Any) -> ShardWriter:
        """A writer (with a fresh Chunker and FileStats) for one input file's shards, as the
        whole-file and the split-file paths both cut them."""
        chunker = Chunker(settings.seq_len, task.file_index, task.item.uri)
        return cls(task.split_dir, task.file_index, settings.rows_per_shard, chunker,
                   FileStats(), settings.row_group_rows)  # fmt: skip

    def flush(self, final: bool) -> None:
        chunker, stats = self.chunker, self.stats
        while chunker.full_chunks() >= self.rows or (final and chunker.pending_tokens):
            table = chunker.take(self.rows, final=final)
            if table.num_rows == 0:
                stats.tail_tokens_dropped += chunker.pending_tokens  # too short to score
                break
            name = part_name(self.file_index, len(stats.parts))
            data = parquet_bytes(table, row_group_size=self.row_group_rows)
            storage.write_bytes(self.split_dir.join(name), data)  # whole, or it raises
            self.sizes[name] = len(data)
            self.sha256[name] = hashlib.sha256(data).hexdigest()
            stats.parts.append(name)
            stats.chunks += table.num_rows


def parquet_bytes(
    table: pa.Table, compression: str = "zstd", row_group_size: int | None = None
) -> bytes:
    """The parquet file of `table`, as bytes (the same bytes pq.write_table puts in a file)."""
    import pyarrow.parquet as pq

    sink = pa.BufferOutputStream()
    pq.write_table(table, sink, compression=compression, row_group_size=row_group_size)
    return sink.getvalue().to_pybytes()


def mark_empty(stats: FileStats, uri: str) -> None:
    if stats.records == 0 and not stats.skipped:  # zero bytes, or nothing once decompressed
        stats.file_skipped = EMPTY_FILE
        stats.bad_samples.append(f"{uri}: {EMPTY_FILE} (no records; skipped)")


def write_done_record(task: Any, settings: Any, stats: FileStats, shards: ShardWriter) -> dict:
    """The file's completion record (colorfilter.io.commit), written after its shards: every
    shard's size and sha256 (hashed from the bytes written; reused by manifests), its input,
    the settings and the tokenizer it was tokenized with, and its counts."""
    meta = {
        "input": asdict(task.item),
        "settings_hash": settings.settings_hash,
        "tokenizer_sha256": settings.tokenizer_sha256,
        "stats": asdict(stats),
    }
    shard_locs = [task.split_dir.join(name) for name in stats.parts]
    commit_unit(done_path(task.split_dir, task.file_index), shard_locs, meta, sha256=shards.sha256)
    return meta


def _count_bad(stats: FileStats, uri: str, index: int, reason: str, detail: str) -> None:
    stats.skipped[reason] = stats.skipped.get(reason, 0) + 1
    if len(stats.bad_samples) < BAD_SAMPLE_LIMIT:
        stats.bad_samples.append(f"{uri}:{index + 1}: {reason}{': ' + detail if detail else ''}")


def prepare_part(task: Any, tokenizer: Any, settings: Any) -> dict:
    """Tokenize one span of a split file; write its documents' tokens, then its record."""
    start = time.perf_counter()
    span = task.spans[task.part]
    counts = {"records": 0, "documents": 0, "tokens": 0, "bytes_text": 0}
    skipped: dict[str, int] = {}
    bad: list[list] = []  # [local index, reason, detail], the part's first BAD_SAMPLE_LIMIT
    docs: list = []
    index, tokens, sources = [], [], []

    def note_bad(at: int, reason: str, detail: str) -> None:
        skipped[reason] = skipped.get(reason, 0) + 1
        if len(bad) < BAD_SAMPLE_LIMIT:
            bad.append([at, reason, detail])

    def tokenize() -> None:
        for doc, ids in zip(docs, tokenizer.encode_documents([d.text for d in docs])):
            index.append(doc.index)
            tokens.append(ids)
            sources.append(doc.source)
            counts["documents"] += 1
            counts["tokens"] += len(ids)
            counts["bytes_text"] += len(doc.text.encode("utf-8"))
        docs.clear()

    records = iter_records(
        task.item,
        settings.text_field,
        settings.source_field,
        settings.hf_split,
        settings.storage,
        span=span,
    )
    try:
        for record in records:
            counts["records"] += 1
            if isinstance(record, BadRecord):
                note_bad(record.index, record.reason, record.detail)
                continue
            docs.append(record)
            if len(docs) >= settings.tokenize_batch_docs:
                tokenize()
    except TruncatedFileError as exc:
        note_bad(counts["records"], "truncated_file", str(exc))
    tokenize()
    path = piece_path(task.split_dir, task.file_index, task.part)
    write_parquet(path, _piece_table(index, tokens, sources))
    meta = {
        "input": asdict(task.item),
        "settings_hash": settings.settings_hash,
        "span": list(span),
        "counts": counts,
        "skipped": skipped,
        "bad": bad,
        "seconds": time.perf_counter() - start,
    }
    record = commit_unit(piece_record(task.split_dir, task.file_index, task.part), [path], meta)
    return {"stats": {"tokens": counts["tokens"]}, "part": record}


def _piece_table(index: list[int], tokens: list[np.ndarray], sources: list) -> pa.Table:
    lengths = np.array([len(t) for t in tokens], dtype=np.int64)
    offsets = np.concatenate([[0], np.cumsum(lengths)]).astype(np.int64)
    flat = np.concatenate(tokens) if tokens else np.zeros(0, dtype=np.int32)
    ids = pa.LargeListArray.from_arrays(pa.array(offsets), pa.array(flat, pa.int32()))
    columns = [pa.array(index, pa.int64()), ids, pa.array(sources, pa.string())]
    return pa.Table.from_arrays(columns, schema=PIECE_SCHEMA)


def pending_parts(tasks: list[Any], settings_hash: str) -> list[Any]:
    """The part tasks still to do: those without a committed record matching this input,
    settings and span (one batched check, colorfilter.io.commit.committed)."""
    records = [piece_record(t.split_dir, t.file_index, t.part) for t in tasks]
    done = committed(records)
    return [
        task
        for task, loc in zip(tasks, records)
        if not _part_matches(done.get(loc.url), task, settings_hash)
    ]


def _part_matches(record: Unit | None, task: Any, settings_hash: str) -> bool:
    meta = record.meta if record is not None else {}
    return (
        record is not None
        and meta.get("input") == redact_obj(asdict(task.item))  # as commit_unit stored it
        and meta.get("settings_hash") == settings_hash
        and meta.get("span") == list(task.spans[task.part])
    )


def assemble_file(task: Any, settings: Any) -> dict:
    """Chunk a split file's parts, in order, exactly as the unsplit path would; then clean up."""
    start = time.perf_counter()
    split_dir = task.split_dir  # the driver cleared what an earlier try of this file left
    shards = ShardWriter.for_file(task, settings)
    stats, chunker = shards.stats, shards.chunker
    parts = range(len(task.spans))
    records = [piece_record(split_dir, task.file_index, p) for p in parts]
    for part, record_loc in zip(parts, records):
        path = piece_path(split_dir, task.file_index, part)
        unit = read_unit(record_loc)
        if unit is None:
            raise RuntimeError(f"{task.item.uri}: part {path.name} has no record; rerun prepare")
        record = unit.meta
        offset = stats.records
        for at, reason, detail in record["bad"]:
            _count_bad(stats, task.item.uri, offset + at, reason, detail)
        for reason, n in record["skipped"].items():  # _count_bad counted the sampled ones
            sampled = sum(1 for b in record["bad"] if b[1] == reason)
            stats.skipped[reason] = stats.skipped.get(reason, 0) + n - sampled
        for key in ("records", "documents", "tokens", "bytes_text"):
            setattr(stats, key, getattr(stats, key) + record["counts"][key])
        with open_parquet(path) as parquet:
            for batch in parquet.iter_batches(batch_size=256):
                docs = batch.column("doc_index").to_numpy() + offset
                sources = batch.column("source").to_pylist()
                for row, ids in enumerate(batch.column("tokens")):
                    chunker.add(int(docs[row]), ids.values.to_numpy(), sources[row])
                shards.flush(final=False)
    mark_empty(stats, task.item.uri)
    shards.flush(final=True)
    stats.seconds = time.perf_counter() - start
    record = write_done_record(task, settings, stats, shards)
    for record_loc in records:
        discard_unit(record_loc)  # the part's record first, then its data
    return record
