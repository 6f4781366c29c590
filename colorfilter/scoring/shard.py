"""Score token shards into score shards: one score file per token file, atomic, resumable.

A finished shard has its parquet file and a completion record `_done/<name>.json` beside it
holding the row count, the file's sha256 and the scoring fingerprint; a rerun skips shards whose
record checks out and redoes every other one (a killed run leaves only temp files behind).
A background thread reads and pads the next batches while the models run on the current one.
"""

from __future__ import annotations

import contextlib
import hashlib
import json
import queue
import threading
import time
from collections.abc import Callable, Iterable, Iterator, Sequence
from pathlib import Path
from typing import Any

import numpy as np
import pyarrow as pa
import pyarrow.parquet as pq

from colorfilter.io.atomic import read_json, write_json_atomic, write_parquet_atomic
from colorfilter.io.token_shards import pad_input_ids
from colorfilter.scoring.base import PairScorer
from colorfilter.scoring.config import ScoreConfig

SCORE_SCHEMA = pa.schema(
    [
        ("seq_id", pa.uint64()),
        ("prior_loss", pa.float32()),
        ("cond_loss", pa.float32()),
        ("score", pa.float32()),
        ("n_tokens", pa.int32()),
    ]
)
DONE_DIR = "_done"
OnBatch = Callable[[int, int], None]  # (rows, tokens) after each scored batch


def done_record_path(score_path: str | Path) -> Path:
    score_path = Path(score_path)
    return score_path.parent / DONE_DIR / (score_path.stem + ".json")


def file_sha256(path: str | Path) -> str:
    digest = hashlib.sha256()
    with open(path, "rb") as handle:
        for block in iter(lambda: handle.read(1 << 20), b""):
            digest.update(block)
    return digest.hexdigest()


def is_shard_done(
    score_path: str | Path, token_path: str | Path | None = None, fingerprint: str | None = None
) -> bool:
    """True only if the score file, its record, its checksum, row counts and fingerprint agree."""
    score_path, record_path = Path(score_path), done_record_path(score_path)
    if not (score_path.is_file() and record_path.is_file()):
        return False
    try:
        record = read_json(record_path)
        rows = pq.ParquetFile(score_path).metadata.num_rows
        token_rows = pq.ParquetFile(token_path).metadata.num_rows if token_path else rows
    except (OSError, ValueError, pa.ArrowException):
        return False
    return (
        record.get("rows") == rows == token_rows
        and (fingerprint is None or record.get("fingerprint") == fingerprint)
        and record.get("sha256") == file_sha256(score_path)
    )


def pending_shards(
    token_paths: Sequence[str | Path], score_dir: str | Path, fingerprint: str | None = None
) -> list[Path]:
    """Token shards whose score shard is missing, partial, stale or unverifiable."""
    score_dir = Path(score_dir)
    return [
        Path(p) for p in token_paths if not is_shard_done(score_dir / Path(p).name, p, fingerprint)
    ]


def exact_batches(path: str | Path, batch_size: int) -> Iterator[pa.Table]:
    """(seq_id, input_ids) tables of exactly batch_size rows (the last may be short).

    Parquet readers cut batches at row-group ends; static shapes want full batches.
    """
    pending: list[pa.RecordBatch] = []
    pending_rows = 0
    with pq.ParquetFile(path) as parquet:
        for batch in parquet.iter_batches(batch_size=batch_size, columns=["seq_id", "input_ids"]):
            pending.append(batch)
            pending_rows += batch.num_rows
            while pending_rows >= batch_size:
                table = pa.Table.from_batches(pending)
                yield table.slice(0, batch_size)
                rest = table.slice(batch_size)
                pending, pending_rows = rest.to_batches(), rest.num_rows
    if pending_rows:
        yield pa.Table.from_batches(pending)


def prefetch(items: Iterable[Any], depth: int) -> Iterator[Any]:
    """Iterate `items` in a background thread, up to `depth` ahead (0: no thread)."""
    if depth <= 0:
        yield from items
        return
    slots: queue.Queue = queue.Queue(maxsize=depth)
    stop = threading.Event()

    def produce() -> None:
        try:
            for item in items:
                while not stop.is_set():
                    try:
                        slots.put(("item", item), timeout=0.1)
                        break
                    except queue.Full:
                        continue
                if stop.is_set():
                    return
            slots.put(("end", None))
        except BaseException as exc:  # re-raised in the consumer thread
            slots.put(("error", exc))

    thread = threading.Thread(target=produce, name="score-prefetch", daemon=True)
    thread.start()
    try:
        while True:
            kind, item = slots.get()
            if kind == "end":
                return
            if kind == "error":
                raise item
            yield item
    finally:
        stop.set()
        thread.join(timeout=5)


def _prepared_batches(
    token_path: Path, scorer: PairScorer, batch_size: int, seq_len: int, pad_id: int
) -> Iterator[tuple[np.ndarray, np.ndarray, Any]]:
    for table in exact_batches(token_path, batch_size):
        input_ids, n_tokens = pad_input_ids(table.column("input_ids"), seq_len, pad_id)
        seq_ids = table.column("seq_id").to_numpy()
        yield seq_ids, n_tokens, scorer.prepare(input_ids, n_tokens)


def score_token_shard(
    token_path: str | Path,
    score_path: str | Path,
    scorer: PairScorer,
    batch_size: int,
    seq_len: int,
    pad_id: int,
    prefetch_batches: int = 2,
    fingerprint: str | None = None,
    on_batch: OnBatch | None = None,
) -> dict[str, Any]:
    """Score one token shard with both models; write the score shard and its record atomically."""
    token_path, score_path = Path(token_path), Path(score_path)
    started_at, start = time.time(), time.perf_counter()
    parts: list[tuple[np.ndarray, ...]] = []
    wait_s = 0.0
    batches = prefetch(
        _prepared_batches(token_path, scorer, batch_size, seq_len, pad_id), prefetch_batches
    )
    with contextlib.closing(batches):  # stops the reader thread if scoring fails
        while True:
            tick = time.perf_counter()
            item = next(batches, None)
            wait_s += time.perf_counter() - tick
            if item is None:
                break
            seq_ids, n_tokens, prepared = item
            prior_loss, cond_loss = scorer.score_prepared(prepared)
            parts.append((seq_ids, prior_loss, cond_loss, n_tokens))
            if on_batch is not None:
                on_batch(len(seq_ids), int(n_tokens.sum()))
    table = _score_table(parts)
    write_parquet_atomic(score_path, table)
    seconds = time.perf_counter() - start
    tokens = int(table.column("n_tokens").to_numpy().sum())
    stats = {
        "shard": score_path.name,
        "rows": table.num_rows,
        "tokens": tokens,
        "seconds": round(seconds, 3),
        "tokens_per_s": round(tokens / seconds, 1) if seconds > 0 else 0.0,
        "input_wait_s": round(wait_s, 3),  # time the models waited for data: I/O not hidden
        "started_at": round(started_at, 3),  # unix times: steady-state rates across actors
        "finished_at": round(time.time(), 3),
        **scorer.memory_stats(),
        "precision": scorer.precision.as_dict(),  # what ran: resumes check it
    }
    record = {
        "rows": table.num_rows,
        "sha256": file_sha256(score_path),
        "bytes": score_path.stat().st_size,  # lets manifests reuse sha256 without re-reading
        "fingerprint": fingerprint,
    }
    write_json_atomic(done_record_path(score_path), {**record, "stats": stats})
    return stats


def _score_table(parts: list[tuple[np.ndarray, ...]]) -> pa.Table:
    if not parts:
        return SCORE_SCHEMA.empty_table()
    seq_ids, prior_loss, cond_loss, n_tokens = (np.concatenate(c) for c in zip(*parts))
    columns = [
        seq_ids.astype(np.uint64),
        prior_loss.astype(np.float32),
        cond_loss.astype(np.float32),
        (prior_loss - cond_loss).astype(np.float32),
        n_tokens.astype(np.int32),
    ]
    return pa.Table.from_arrays([pa.array(c) for c in columns], schema=SCORE_SCHEMA)


def score_shards(
    token_paths: Sequence[str | Path],
    score_dir: str | Path,
    scorer: PairScorer,
    batch_size: int,
    seq_len: int,
    pad_id: int,
    prefetch_batches: int = 2,
    fingerprint: str | None = None,
    on_batch: OnBatch | None = None,
) -> list[dict[str, Any]]:
    """Score every unfinished shard in order (in-process); finished ones report skipped=True."""
    score_dir = Path(score_dir)
    todo = set(pending_shards(token_paths, score_dir, fingerprint))
    all_stats = []
    for token_path in map(Path, token_paths):
        score_path = score_dir / token_path.name
        if token_path not in todo:
            all_stats.append({"shard": score_path.name, "skipped": True})
            continue
        stats = score_token_shard(
            token_path, score_path, scorer, batch_size, seq_len, pad_id,
            prefetch_batches, fingerprint, on_batch,
        )  # fmt: skip
        all_stats.append({**stats, "skipped": False})
    return all_stats


def scoring_fingerprint(
    prior_dir: str | Path, cond_dir: str | Path, cfg: ScoreConfig, seq_len: int, precision: Any
) -> str:
    """Hash of both checkpoints' files and the settings that change scores (not batch size).

    `precision` is the resolved `scoring.precision.Precision` the workers run (never "auto"):
    weights dtype, autocast dtype and device type.
    """
    digest = hashlib.sha256()
    settings = {"backend": cfg.backend, "precision": precision.as_dict(), "seq_len": seq_len}
    digest.update(json.dumps(settings, sort_keys=True).encode())
    for model_dir in (Path(prior_dir), Path(cond_dir)):
        for path in sorted(model_dir.iterdir()):
            if path.is_file() and path.suffix in {".json", ".safetensors", ".bin"}:
                digest.update(path.name.encode())
                digest.update(file_sha256(path).encode())
    return digest.hexdigest()[:16]
