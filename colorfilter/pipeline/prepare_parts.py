"""Prepare's per-file bookkeeping, and one big file prepared as several tasks.

A file that colorfilter.io.splits cuts into spans is prepared in two steps, so its shards are
byte-identical to the ones one task would write for the whole file:
1. `prepare_part` (one task per span, in parallel): read and tokenize the span's documents and
   write their token ids to tokens/<split>/_parts/<file>-<part>.parquet plus a record (.json).
   A retried file keeps its parts whose record still matches.
2. `assemble_file` (one cheap task per file, no tokenizer): feed the parts' documents in order to
   the same Chunker the unsplit path uses (global document indices = local + records before the
   part), write the shards and the file's completion record, then drop the parts.
"""

from __future__ import annotations

import time
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any

import numpy as np
import pyarrow as pa

from colorfilter.io.atomic import read_json_object, write_json_atomic, write_parquet_atomic

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


def done_path(split_dir: Path, file_index: int) -> Path:
    return split_dir / "_done" / f"{file_index:05d}.json"


def piece_path(split_dir: Path, file_index: int, part: int) -> Path:
    return split_dir / "_parts" / part_name(file_index, part)


class ShardWriter:
    """Cuts a Chunker's chunks into shards of `rows_per_shard` rows, written as they fill, in
    row groups of `row_group_rows` rows (0: one per shard)."""

    def __init__(
        self,
        split_dir: Path,
        file_index: int,
        rows: int,
        chunker: Any,
        stats: FileStats,
        row_group_rows: int = 0,
    ):
        self.split_dir, self.file_index, self.rows = split_dir, file_index, rows
        self.chunker, self.stats = chunker, stats
        self.row_group_rows = row_group_rows or None

    def flush(self, final: bool) -> None:
        chunker, stats = self.chunker, self.stats
        while chunker.full_chunks() >= self.rows or (final and chunker.pending_tokens):
            table = chunker.take(self.rows, final=final)
            if table.num_rows == 0:
                stats.tail_tokens_dropped += chunker.pending_tokens  # too short to score
                break
            name = part_name(self.file_index, len(stats.parts))
            write_parquet_atomic(self.split_dir / name, table, row_group_size=self.row_group_rows)
            stats.parts.append(name)
            stats.chunks += table.num_rows


def mark_empty(stats: FileStats, uri: str) -> None:
    if stats.records == 0 and not stats.skipped:  # zero bytes, or nothing once decompressed
        stats.file_skipped = EMPTY_FILE
        stats.bad_samples.append(f"{uri}: {EMPTY_FILE} (no records; skipped)")


def write_done_record(task: Any, settings_hash: str, stats: FileStats) -> dict:
    """The file's completion record: its input, settings, every shard's size and hash."""
    split_dir = Path(task.split_dir)
    record = {
        "input": asdict(task.item),
        "settings_hash": settings_hash,
        "part_bytes": {name: (split_dir / name).stat().st_size for name in stats.parts},
        "part_sha256": {name: _sha256(split_dir / name) for name in stats.parts},  # manifests
        "stats": asdict(stats),
    }
    write_json_atomic(done_path(split_dir, task.file_index), record)
    return record


def _sha256(path: Path) -> str:
    from colorfilter.dataset.manifest import sha256_file

    return sha256_file(path)


def _count_bad(stats: FileStats, uri: str, index: int, reason: str, detail: str) -> None:
    stats.skipped[reason] = stats.skipped.get(reason, 0) + 1
    if len(stats.bad_samples) < BAD_SAMPLE_LIMIT:
        stats.bad_samples.append(f"{uri}:{index + 1}: {reason}{': ' + detail if detail else ''}")


def _remove_parts(split_dir: Path, file_index: int) -> None:
    for stale in split_dir.glob(f"{file_index:05d}-*.parquet"):
        stale.unlink()
    done = done_path(split_dir, file_index)
    if done.exists():
        done.unlink()


def prepare_part(task: Any, tokenizer: Any, settings: Any) -> dict:
    """Tokenize one span of a split file; write its documents' tokens, then its record."""
    from colorfilter.io.readers import BadRecord, TruncatedFileError, iter_records

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
    path = piece_path(Path(task.split_dir), task.file_index, task.part)
    write_parquet_atomic(path, _piece_table(index, tokens, sources))
    record = {
        "input": asdict(task.item),
        "settings_hash": settings.settings_hash,
        "span": list(span),
        "bytes": path.stat().st_size,
        "counts": counts,
        "skipped": skipped,
        "bad": bad,
        "seconds": time.perf_counter() - start,
    }
    write_json_atomic(path.with_suffix(".json"), record)
    return {"stats": {"tokens": counts["tokens"]}, "part": record}


def _piece_table(index: list[int], tokens: list[np.ndarray], sources: list) -> pa.Table:
    lengths = np.array([len(t) for t in tokens], dtype=np.int64)
    offsets = np.concatenate([[0], np.cumsum(lengths)]).astype(np.int64)
    flat = np.concatenate(tokens) if tokens else np.zeros(0, dtype=np.int32)
    ids = pa.LargeListArray.from_arrays(pa.array(offsets), pa.array(flat, pa.int32()))
    columns = [pa.array(index, pa.int64()), ids, pa.array(sources, pa.string())]
    return pa.Table.from_arrays(columns, schema=PIECE_SCHEMA)


def part_is_done(task: Any, settings_hash: str) -> bool:
    """Done when its record matches this input, settings and span, and its data is whole."""
    path = piece_path(Path(task.split_dir), task.file_index, task.part)
    record = read_json_object(path.with_suffix(".json"))
    if record is None:
        return False
    return (
        record.get("input") == asdict(task.item)
        and record.get("settings_hash") == settings_hash
        and record.get("span") == list(task.spans[task.part])
        and path.is_file()
        and path.stat().st_size == record.get("bytes")
    )


def assemble_file(task: Any, settings: Any) -> dict:
    """Chunk a split file's parts, in order, exactly as the unsplit path would; then clean up."""
    import pyarrow.parquet as pq

    from colorfilter.chunking import Chunker

    start = time.perf_counter()
    split_dir = Path(task.split_dir)
    _remove_parts(split_dir, task.file_index)
    stats = FileStats()
    chunker = Chunker(settings.seq_len, task.file_index, task.item.uri)
    shards = ShardWriter(
        split_dir, task.file_index, settings.rows_per_shard, chunker, stats, settings.row_group_rows
    )
    paths = [piece_path(split_dir, task.file_index, p) for p in range(len(task.spans))]
    for path in paths:
        record = read_json_object(path.with_suffix(".json"))
        if record is None:
            raise RuntimeError(f"{task.item.uri}: part {path.name} has no record; rerun prepare")
        offset = stats.records
        for at, reason, detail in record["bad"]:
            _count_bad(stats, task.item.uri, offset + at, reason, detail)
        for reason, n in record["skipped"].items():  # _count_bad counted the sampled ones
            sampled = sum(1 for b in record["bad"] if b[1] == reason)
            stats.skipped[reason] = stats.skipped.get(reason, 0) + n - sampled
        for key in ("records", "documents", "tokens", "bytes_text"):
            setattr(stats, key, getattr(stats, key) + record["counts"][key])
        for batch in pq.ParquetFile(path).iter_batches(batch_size=256):
            docs = batch.column("doc_index").to_numpy() + offset
            sources = batch.column("source").to_pylist()
            for row, ids in enumerate(batch.column("tokens")):
                chunker.add(int(docs[row]), ids.values.to_numpy(), sources[row])
            shards.flush(final=False)
    mark_empty(stats, task.item.uri)
    shards.flush(final=True)
    stats.seconds = time.perf_counter() - start
    record = write_done_record(task, settings.settings_hash, stats)
    for path in paths:
        path.unlink(missing_ok=True)
        path.with_suffix(".json").unlink(missing_ok=True)
    return record
