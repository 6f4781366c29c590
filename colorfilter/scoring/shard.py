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
import queue
import threading
import time
from collections.abc import Callable, Iterable, Iterator, Mapping, Sequence
from dataclasses import dataclass, replace
from pathlib import Path
from typing import Any, Protocol

import numpy as np
import pyarrow as pa
import pyarrow.compute as pc

from colorfilter.fingerprint import LEGACY_SEPARATORS, Digest
from colorfilter.io import storage
from colorfilter.io.atomic import TMP_PREFIX
from colorfilter.io.commit import Unit, commit_unit, committed
from colorfilter.io.location import Location, as_location
from colorfilter.io.token_shards import pad_input_ids
from colorfilter.io.transfer import open_parquet, read_parquet, write_parquet
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
# The cascade's sample shards also keep each row's tokens and, per predicted position (1..n-1),
# prior NLL - conditional NLL: what the cheap scorer learns from (colorfilter.distill).
SAMPLE_SCHEMA = SCORE_SCHEMA.append(pa.field("input_ids", pa.list_(pa.int32()))).append(
    pa.field("token_delta", pa.list_(pa.float32()))
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
    record: Unit | None, score: Location, token_path: Shard | None, fingerprint: str | None
) -> bool:
    """A committed record vouches for this shard: it lists the shard, has the fingerprint and
    the token shard's row count (token shards rewritten since get rescored). Records of shards
    scored whole before `token_rows` was recorded hold it as `rows`."""
    if record is None or score.name not in record.objects:
        return False
    meta = record.meta
    if fingerprint is not None and meta.get("fingerprint") != fingerprint:
        return False
    if token_path is None:
        return isinstance(meta.get("rows"), int)
    try:
        with open_parquet(token_path) as parquet:
            token_rows = parquet.metadata.num_rows
    except (OSError, ValueError, pa.ArrowException):
        return False
    return meta.get("token_rows", meta.get("rows")) == token_rows


def exact_batches(path: Shard, batch_size: int, expected: Mapping[str, Any] | None = None
                  ) -> Iterator[pa.Table]:  # fmt: skip
    """(seq_id, input_ids) tables of exactly batch_size rows (the last may be short).

    Parquet readers cut batches at row-group ends; static shapes want full batches. `expected`:
    the shard's record (size, sha256), checked before any row is used.
    """
    pending: list[pa.RecordBatch] = []
    pending_rows = 0
    with open_parquet(path, expected) as parquet:
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


@dataclass(frozen=True)
class ShardScoring:
    """What every shard of one score run shares: batch shape, padding, read-ahead, identity."""

    batch_size: int
    seq_len: int
    pad_id: int
    prefetch_batches: int = 2
    fingerprint: str | None = None

    def with_batch(self, batch_size: int) -> ShardScoring:
        return replace(self, batch_size=batch_size)


class RowPlan(Protocol):
    """Which rows of a token shard the LM pair scores (a `ScoreTask` without one: every row).

    The cascade's plans (colorfilter.distill.rows): its sample, whose shards keep each row's
    tokens and per-position loss differences (`token_deltas`) to teach the cheap scorer; and
    its candidates, scored now and merged with the sample's rows already scored (`merged`).
    """

    token_deltas: bool

    def choose(self, seq_ids: np.ndarray, token_path: Location) -> np.ndarray:
        """Mask of the rows to score now."""

    def merged(self, token_path: Location) -> pa.Table | None:
        """Rows scored before (SCORE_SCHEMA columns) that the score shard also holds."""


@dataclass(frozen=True)
class ScoreTask:
    token_path: str | Location  # a Location from the driver; local paths are accepted too
    score_path: str | Location
    rows: RowPlan | None = None  # None: every row of the token shard
    token_entry: Mapping[str, Any] | None = None  # prepare's record of the token shard: checked


def _table_batches(table: pa.Table, batch_size: int) -> Iterator[pa.Table]:
    for start in range(0, table.num_rows, batch_size):
        yield table.slice(start, batch_size)


def _source(task: ScoreTask, how: ShardScoring) -> tuple[Iterator[pa.Table], int]:
    """(seq_id, input_ids) batches of the rows to score, and the token shard's row count."""
    token = as_location(task.token_path)
    if task.rows is None:
        with open_parquet(token, task.token_entry) as parquet:
            token_rows = parquet.metadata.num_rows
        return exact_batches(token, how.batch_size, task.token_entry), token_rows
    table = read_parquet(token, columns=["seq_id", "input_ids"], expected=task.token_entry)
    mask = task.rows.choose(table.column("seq_id").to_numpy().astype(np.uint64), token)
    return _table_batches(table.filter(pa.array(mask)), how.batch_size), table.num_rows


def _prepared_batches(
    tables: Iterable[pa.Table], scorer: PairScorer, how: ShardScoring
) -> Iterator[tuple[pa.Table, np.ndarray, Any]]:
    for table in tables:
        input_ids, n_tokens = pad_input_ids(table.column("input_ids"), how.seq_len, how.pad_id)
        yield table, n_tokens, scorer.prepare(input_ids, n_tokens)


def score_token_shard(
    task: ScoreTask, scorer: PairScorer, how: ShardScoring, on_batch: OnBatch | None = None
) -> dict[str, Any]:
    """Score one token shard's rows with both models; write the score shard, then its record.

    Any older record goes first, so it never vouches for the object written after it.
    """
    score = as_location(task.score_path)
    started_at, start = time.time(), time.perf_counter()
    keep_tokens = task.rows is not None and task.rows.token_deltas
    parts: list[dict[str, Any]] = []
    wait_s = 0.0
    tables, token_rows = _source(task, how)
    batches = prefetch(_prepared_batches(tables, scorer, how), how.prefetch_batches)
    with contextlib.closing(batches):  # stops the reader thread if scoring fails
        while True:
            tick = time.perf_counter()
            item = next(batches, None)
            wait_s += time.perf_counter() - tick
            if item is None:
                break
            table, n_tokens, prepared = item
            parts.append(_score_batch(table, n_tokens, prepared, scorer, keep_tokens))
            if on_batch is not None:
                on_batch(table.num_rows, int(n_tokens.sum()))
    scored = _score_table(parts, keep_tokens)
    merged = task.rows.merged(as_location(task.token_path)) if task.rows is not None else None
    table = scored if merged is None else _merge(scored, merged)
    record = done_record_path(score)
    storage.remove(record)
    write_parquet(score, table)
    seconds = time.perf_counter() - start
    tokens = int(pc.sum(scored.column("n_tokens")).as_py() or 0)
    stats = {
        "shard": score.name,
        "rows": table.num_rows,
        "rows_scored_now": scored.num_rows,  # the rest came scored (the cascade's sample)
        "token_rows": token_rows,
        "tokens": tokens,
        "seconds": round(seconds, 3),
        "tokens_per_s": round(tokens / seconds, 1) if seconds > 0 else 0.0,
        "input_wait_s": round(wait_s, 3),  # time the models waited for data: I/O not hidden
        "started_at": round(started_at, 3),  # unix times: steady-state rates across actors
        "finished_at": round(time.time(), 3),
        **scorer.memory_stats(),
        "precision": scorer.precision.as_dict(),  # what ran: resumes check it
    }
    meta = {"rows": table.num_rows, "token_rows": token_rows, "fingerprint": how.fingerprint,
            "stats": stats}  # fmt: skip
    # sha256 recorded: resumes verify it, and manifests reuse it without re-reading the shard
    commit_unit(record, [score], meta=meta, sha256=True)
    return stats


def _score_batch(
    table: pa.Table, n_tokens: np.ndarray, prepared: Any, scorer: PairScorer, keep_tokens: bool
) -> dict[str, Any]:
    """One scored batch's columns (with its tokens and per-position deltas for the sample)."""
    part: dict[str, Any] = {"seq_id": table.column("seq_id").to_numpy(), "n_tokens": n_tokens}
    if not keep_tokens:
        part["prior_loss"], part["cond_loss"] = scorer.score_prepared(prepared)
        return part
    losses = scorer.score_tokens_prepared(prepared)
    part["prior_loss"], part["cond_loss"] = losses.prior_loss, losses.cond_loss
    part["input_ids"] = table.column("input_ids")
    part["token_delta"] = losses.deltas(n_tokens)
    return part


def _score_table(parts: list[dict[str, Any]], keep_tokens: bool = False) -> pa.Table:
    schema = SAMPLE_SCHEMA if keep_tokens else SCORE_SCHEMA
    if not parts:
        return schema.empty_table()
    seq_ids, prior_loss, cond_loss, n_tokens = (
        np.concatenate([p[name] for p in parts])
        for name in ("seq_id", "prior_loss", "cond_loss", "n_tokens")
    )
    columns = [
        seq_ids.astype(np.uint64),
        prior_loss.astype(np.float32),
        cond_loss.astype(np.float32),
        (prior_loss - cond_loss).astype(np.float32),
        n_tokens.astype(np.int32),
    ]
    arrays = [pa.array(c) for c in columns]
    if keep_tokens:
        ids = [chunk for p in parts for chunk in p["input_ids"].chunks]
        arrays.append(pa.chunked_array(ids, type=pa.list_(pa.int32())).combine_chunks())
        deltas = [d for p in parts for d in p["token_delta"]]
        arrays.append(pa.array(deltas, type=pa.list_(pa.float32())))
    return pa.Table.from_arrays(arrays, schema=schema)


def _merge(scored: pa.Table, earlier: pa.Table) -> pa.Table:
    """Rows scored now and rows scored before, by seq_id (a seq_id in both is a bug)."""
    names = SCORE_SCHEMA.names
    table = pa.concat_tables([scored.select(names), earlier.select(names).cast(SCORE_SCHEMA)])
    ids = table.column("seq_id").to_numpy()
    order = np.argsort(ids, kind="stable")
    if ids.size > 1 and np.any(ids[order][1:] == ids[order][:-1]):
        raise ValueError("a row was scored twice: the cascade's candidates overlap its sample")
    return table.take(pa.array(order))


def score_shards(
    token_paths: Sequence[Shard],
    score_dir: Shard,
    scorer: PairScorer,
    how: ShardScoring,
    on_batch: OnBatch | None = None,
) -> list[dict[str, Any]]:
    """Score every unfinished shard in order (in-process); finished ones report skipped=True."""
    score_dir = as_location(score_dir)
    todo = {as_location(p) for p in pending_shards(token_paths, score_dir, how.fingerprint)}
    all_stats = []
    for token in map(as_location, token_paths):
        score = score_dir.join(token.name)
        if token not in todo:
            all_stats.append({"shard": score.name, "skipped": True})
            continue
        stats = score_token_shard(ScoreTask(token, score), scorer, how, on_batch)
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
    settings = {"backend": cfg.backend, "precision": precision.as_dict(), "seq_len": seq_len}
    digest = Digest().json(settings, LEGACY_SEPARATORS)  # the layout existing shards recorded
    for model_dir in map(as_location, (prior_dir, cond_dir)):
        files = [f.location for f in storage.find(model_dir) if f.location.parent == model_dir]
        for loc in files:  # sorted by name
            if Path(loc.name).suffix in {".json", ".safetensors", ".bin"}:
                digest.text(loc.name).text(storage.file_sha256(loc))
    return digest.hexdigest(16)
