"""Score token shards into score shards: one score file per token file, atomic, resumable.

Token and score shards are Locations (local files or bucket objects; plain paths are accepted).
A finished shard is a unit of `colorfilter.io.commit`: its parquet object, then its completion
record `<stem>.done.json` beside it listing the object's size and sha256, with the row count, the
scoring fingerprint and the shard's stats as meta. A rerun skips shards whose record is committed
(object whole, hash matching), names the shard, has this fingerprint and the token shard's row
count; it redoes every other one, so nothing a killed run left (an object without its record, a
torn record, a record over a replaced object) is trusted. A background thread reads and pads the
next batches while the models run on the current one.
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

from colorfilter.io import storage
from colorfilter.io.atomic import TMP_PREFIX
from colorfilter.io.commit import commit_unit, committed, file_sha256
from colorfilter.io.location import Location, as_location
from colorfilter.io.token_shards import pad_input_ids
from colorfilter.io.transfer import open_parquet, write_parquet
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
RECORD_SUFFIX = ".done.json"
OnBatch = Callable[[int, int], None]  # (rows, tokens) after each scored batch
Shard = str | Path | Location


def done_record_path(score_path: Shard) -> Location:
    """The completion record of a score shard: `<stem>.done.json` in the shard's folder."""
    score = as_location(score_path)
    return score.parent.join(Path(score.name).stem + RECORD_SUFFIX)


def score_records(score_dir: Shard) -> list[Location]:
    """The completion records in a score folder (one listing; temp files excluded)."""
    return [loc for loc in storage.list_dir(score_dir)
            if loc.name.endswith(RECORD_SUFFIX) and not loc.name.startswith(TMP_PREFIX)]


def record_shard_stem(record: Location) -> str:
    """The name (without .parquet) of the shard a record belongs to."""
    return record.name[: -len(RECORD_SUFFIX)]


def is_shard_done(
    score_path: Shard, token_path: Shard | None = None, fingerprint: str | None = None
) -> bool:
    """True only if the record is committed (object whole, sha256 matching) and its row count
    (and the token shard's) and fingerprint agree."""
    score = as_location(score_path)
    record = committed([done_record_path(score)], verify_sha256=True)
    return _trusted(next(iter(record.values()), None), score, token_path, fingerprint)


def pending_shards(
    token_paths: Sequence[Shard], score_dir: Shard, fingerprint: str | None = None
) -> list:
    """The token shards (as given) whose score shard is missing, partial, stale or unverifiable."""
    score_dir = as_location(score_dir)
    scores = [score_dir.join(as_location(p).name) for p in token_paths]
    records = [done_record_path(s) for s in scores]
    complete = committed(records, verify_sha256=True)
    return [
        token for token, score, record in zip(token_paths, scores, records)
        if not _trusted(complete.get(record.url), score, token, fingerprint)
    ]


def _trusted(
    record: dict | None, score: Location, token_path: Shard | None, fingerprint: str | None
) -> bool:
    """A committed record vouches for this shard: it lists the shard, has the fingerprint and
    the token shard's row count (token shards rewritten since get rescored)."""
    if record is None or score.name not in record["objects"]:
        return False
    meta = record.get("meta") or {}
    if fingerprint is not None and meta.get("fingerprint") != fingerprint:
        return False
    if token_path is None:
        return isinstance(meta.get("rows"), int)
    try:
        with open_parquet(token_path) as parquet:
            token_rows = parquet.metadata.num_rows
    except (OSError, ValueError, pa.ArrowException):
        return False
    return meta.get("rows") == token_rows


def exact_batches(path: Shard, batch_size: int) -> Iterator[pa.Table]:
    """(seq_id, input_ids) tables of exactly batch_size rows (the last may be short).

    Parquet readers cut batches at row-group ends; static shapes want full batches.
    """
    pending: list[pa.RecordBatch] = []
    pending_rows = 0
    with open_parquet(path) as parquet:
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
    token_path: Location, scorer: PairScorer, batch_size: int, seq_len: int, pad_id: int
) -> Iterator[tuple[np.ndarray, np.ndarray, Any]]:
    for table in exact_batches(token_path, batch_size):
        input_ids, n_tokens = pad_input_ids(table.column("input_ids"), seq_len, pad_id)
        seq_ids = table.column("seq_id").to_numpy()
        yield seq_ids, n_tokens, scorer.prepare(input_ids, n_tokens)


def score_token_shard(
    token_path: Shard,
    score_path: Shard,
    scorer: PairScorer,
    batch_size: int,
    seq_len: int,
    pad_id: int,
    prefetch_batches: int = 2,
    fingerprint: str | None = None,
    on_batch: OnBatch | None = None,
) -> dict[str, Any]:
    """Score one token shard with both models; write the score shard, then its record.

    Any older record goes first, so it never vouches for the object written after it.
    """
    token, score = as_location(token_path), as_location(score_path)
    started_at, start = time.time(), time.perf_counter()
    parts: list[tuple[np.ndarray, ...]] = []
    wait_s = 0.0
    batches = prefetch(
        _prepared_batches(token, scorer, batch_size, seq_len, pad_id), prefetch_batches
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
    record = done_record_path(score)
    storage.remove(record)
    write_parquet(score, table)
    seconds = time.perf_counter() - start
    tokens = int(table.column("n_tokens").to_numpy().sum())
    stats = {
        "shard": score.name,
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
    meta = {"rows": table.num_rows, "fingerprint": fingerprint, "stats": stats}
    # sha256 recorded: resumes verify it, and manifests reuse it without re-reading the shard
    commit_unit(record, [score], meta=meta, sha256=True)
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
    token_paths: Sequence[Shard],
    score_dir: Shard,
    scorer: PairScorer,
    batch_size: int,
    seq_len: int,
    pad_id: int,
    prefetch_batches: int = 2,
    fingerprint: str | None = None,
    on_batch: OnBatch | None = None,
) -> list[dict[str, Any]]:
    """Score every unfinished shard in order (in-process); finished ones report skipped=True."""
    score_dir = as_location(score_dir)
    todo = {as_location(p) for p in pending_shards(token_paths, score_dir, fingerprint)}
    all_stats = []
    for token in map(as_location, token_paths):
        score = score_dir.join(token.name)
        if token not in todo:
            all_stats.append({"shard": score.name, "skipped": True})
            continue
        stats = score_token_shard(
            token, score, scorer, batch_size, seq_len, pad_id, prefetch_batches, fingerprint,
            on_batch,
        )  # fmt: skip
        all_stats.append({**stats, "skipped": False})
    return all_stats


def scoring_fingerprint(
    prior_dir: Shard, cond_dir: Shard, cfg: ScoreConfig, seq_len: int, precision: Any
) -> str:
    """Hash of both checkpoints' files and the settings that change scores (not batch size).

    `precision` is the resolved `scoring.precision.Precision` the workers run (never "auto"):
    weights dtype, autocast dtype and device type. The model folders may be on a bucket: their
    files are hashed as streamed from the store (the same hash as of a local copy).
    """
    digest = hashlib.sha256()
    settings = {"backend": cfg.backend, "precision": precision.as_dict(), "seq_len": seq_len}
    digest.update(json.dumps(settings, sort_keys=True).encode())
    for model_dir in map(as_location, (prior_dir, cond_dir)):
        files = [f.location for f in storage.find(model_dir) if f.location.parent == model_dir]
        for loc in files:  # sorted by name
            if Path(loc.name).suffix in {".json", ".safetensors", ".bin"}:
                digest.update(loc.name.encode())
                digest.update(file_sha256(loc).encode())
    return digest.hexdigest()[:16]
