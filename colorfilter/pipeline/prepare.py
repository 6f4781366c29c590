"""The prepare stage: read inputs, tokenize, chunk, and write token shards, one task per file.

A file bigger than `prepare.split_bytes` (local parquet, plain or multi-frame zstd JSON lines)
is tokenized as several part tasks, then chunked by one cheap task per file into the same shards
(see prepare_parts).

Output (colorfilter.layout.RunLayout; a local folder or a bucket prefix, written only through
colorfilter.io.storage, by the workers themselves): OUTPUT/tokenizer (pipeline.prepare_tokenizer),
OUTPUT/tokens/<split>/<file_index>-<part>.parquet, a completion record per input file
(<file_index>.done.json, colorfilter.io.commit) written after its shards, OUTPUT/tokens/<split>/
stats.json with counts by reason, and last the stage's marker OUTPUT/prepare.done.json, which
lists the tokenizer's files, the splits' stats and the file records, and names the tokenizer's
hash (every later stage checks the tokenizer against it). A rerun skips files whose record
matches (same input, settings and tokenizer, every part present with the recorded size) and
redoes the rest (pipeline.prepare_records).
"""

from __future__ import annotations

import math
import os
import time
from dataclasses import dataclass, field
from typing import Any

from colorfilter.chunking import DocumentTokenizer
from colorfilter.config import Config
from colorfilter.errors import BadDataError, ConfigError
from colorfilter.fingerprint import fingerprint
from colorfilter.io import storage
from colorfilter.io.atomic import remove_stale_temps
from colorfilter.io.cache import CACHE_ENV, local_copy
from colorfilter.io.config import StorageConfig
from colorfilter.io.files import InputFile, resolve_inputs
from colorfilter.io.location import Location
from colorfilter.io.readers import BadRecord, TruncatedFileError, expand_hf_shards, iter_records
from colorfilter.io.splits import plan_spans
from colorfilter.layout import RunLayout
from colorfilter.pipeline import executor
from colorfilter.pipeline.executor import WorkerSpec
from colorfilter.pipeline.prepare_parts import (
    FileStats,
    ShardWriter,
    _count_bad,
    assemble_file,
    done_path,
    mark_empty,
    part_name,  # noqa: F401  (re-exported: shard names)
    pending_parts,
    prepare_part,
    write_done_record,
)
from colorfilter.pipeline.prepare_records import finish_split, resume_split
from colorfilter.pipeline.prepare_tokenizer import save_tokenizer
from colorfilter.progress import Progress

SPLITS = ("pool", "downstream_train", "downstream_eval")


@dataclass(frozen=True)
class PrepareSettings:
    """Everything a worker needs; picklable and hashed into every completion record."""

    tokenizer_dir: str  # the run's tokenizer: a local folder or a URL (fetched via local_copy)
    seq_len: int
    text_field: str
    source_field: str | None
    hf_split: str
    rows_per_shard: int
    tokenize_batch_docs: int
    max_segment_chars: int
    settings_hash: str
    storage: StorageConfig = field(default_factory=StorageConfig)  # to read bucket inputs
    row_group_rows: int = 0  # rows per row group of a shard; 0 = one row group per shard
    tokenizer_sha256: str = ""  # the run's tokenizer folder (sha256_dir): every record names it


@dataclass(frozen=True)
class PrepareTask:
    split: str
    file_index: int
    item: InputFile
    split_dir: Location  # tokens/<split>, local or on a bucket (the worker writes there itself)
    kind: str = "file"  # file: all of it | part: one span of a split file | assemble: its shards
    part: int = 0
    spans: tuple[tuple[int, int], ...] = ()  # a split file's parts (kinds part and assemble)


class PrepareWorker:
    """Holds one tokenizer; prepares one input file per call."""

    def __init__(self, settings: PrepareSettings):
        self.settings = settings
        folder = local_copy(Location.parse(settings.tokenizer_dir, settings.storage))
        self.tokenizer = DocumentTokenizer(str(folder), settings.max_segment_chars)

    def __call__(self, task: PrepareTask) -> dict:
        if task.kind == "part":
            return prepare_part(task, self.tokenizer, self.settings)
        if task.kind == "assemble":
            return assemble_file(task, self.settings)
        return prepare_file(task, self.tokenizer, self.settings)


def prepare_file(task: PrepareTask, tokenizer: Any, settings: PrepareSettings) -> dict:
    """Tokenize and chunk one file; write its parts, then its completion record."""
    start = time.perf_counter()
    shards = ShardWriter.for_file(task, settings)  # the driver cleared an earlier try's shards
    stats, chunker = shards.stats, shards.chunker
    batch: list = []
    records = iter_records(
        task.item, settings.text_field, settings.source_field, settings.hf_split, settings.storage
    )
    try:
        for record in records:
            stats.records += 1
            if isinstance(record, BadRecord):
                _count_bad(stats, task.item.uri, record.index, record.reason, record.detail)
                continue
            batch.append(record)
            if len(batch) >= settings.tokenize_batch_docs:
                _tokenize_batch(batch, tokenizer, chunker, stats)
                batch = []
                shards.flush(final=False)
    except TruncatedFileError as exc:
        _count_bad(stats, task.item.uri, stats.records, "truncated_file", str(exc))
    mark_empty(stats, task.item.uri)
    _tokenize_batch(batch, tokenizer, chunker, stats)
    shards.flush(final=True)
    stats.seconds = time.perf_counter() - start
    return write_done_record(task, settings, stats, shards)


def _tokenize_batch(batch: list, tokenizer: Any, chunker: Any, stats: FileStats) -> None:
    if not batch:
        return
    encoded = tokenizer.encode_documents([doc.text for doc in batch])
    for doc, tokens in zip(batch, encoded):
        chunker.add(doc.index, tokens, doc.source)
        stats.documents += 1
        stats.tokens += len(tokens)
        stats.bytes_text += len(doc.text.encode("utf-8"))


def run_prepare(config: Config, overwrite: bool = False) -> dict:
    """Prepare every configured split; return the merged stats per split."""
    layout = RunLayout.of(config)
    inputs = list_all_inputs(config)  # checks every input (buckets too) before any work
    tokenizer_dir = save_tokenizer(config.tokenizer, layout.tokenizer)
    settings = make_settings(config, tokenizer_dir, storage.folder_sha256(layout.tokenizer))
    plan = plan_tasks(config, layout.tokens_root, settings, overwrite, inputs)
    if plan.todo or plan.assemble or not layout.has_run("prepare"):
        layout.withdraw_stage("prepare")  # first: not finished until this run says so
    spec = WorkerSpec(
        PrepareWorker,
        (settings,),
        num_cpus=config.prepare.worker_cpus,
        env_vars={
            "RAYON_NUM_THREADS": str(max(1, math.ceil(config.prepare.worker_cpus))),
            "TOKENIZERS_PARALLELISM": "true",
            **cache_env(),
        },
    )
    progress = Progress("prepare", len(plan.todo) + len(plan.assemble), unit="tokens")
    for tasks in (plan.todo, plan.assemble):  # a split file's shards need all its parts
        for task, record in executor.map_tasks(
            spec,
            tasks,
            executor=config.executor,
            num_workers=config.prepare.num_workers,
            ray_cfg=config.ray,
        ):
            progress.update(1, 0 if task.kind == "assemble" else record["stats"]["tokens"])
    progress.close(f"({plan.skipped} files already done, skipped)")
    return finish_splits(layout, plan.files_per_split, config.data.max_bad_fraction, settings)


def finish_splits(layout: RunLayout, files: dict[str, int], max_bad_fraction: float,
                  settings: PrepareSettings) -> dict:  # fmt: skip
    """Every split's stats.json, then the stage's marker (the splits' errors included: later
    stages repeat a split's error instead of "run prepare first"); then the first error."""
    stats, errors = {}, {}
    for split in files:
        try:
            stats[split] = finish_split(layout.tokens(split), files[split], max_bad_fraction)
        except BadDataError as exc:
            errors[split] = exc
    listed = [info.location for info in storage.find(layout.tokenizer)]
    for split, count in files.items():
        split_dir = layout.tokens(split)
        listed += [layout.token_stats(split), *(done_path(split_dir, i) for i in range(count))]
    layout.finish_stage("prepare", listed, {
        "tokenizer_sha256": settings.tokenizer_sha256, "settings_hash": settings.settings_hash,
        "files": files, "errors": {split: str(exc) for split, exc in errors.items()},
    })  # fmt: skip
    for split in files:
        if split in errors:
            raise errors[split]
    return {split: stats[split] for split in files}


def cache_env() -> dict[str, str]:
    """The driver's node cache setting, when it has one, for its actors' `local_copy` of the
    tokenizer (a cluster's nodes without it use their own default, ~/.cache/colorfilter)."""
    value = os.environ.get(CACHE_ENV)
    return {CACHE_ENV: value} if value else {}


def make_settings(
    config: Config, tokenizer_dir: str, tokenizer_sha256: str = ""
) -> PrepareSettings:
    p, d = config.prepare, config.data
    settings_hash = fingerprint(
        [{
            "tokenizer": config.tokenizer,
            "seq_len": config.seq_len,
            "text_field": d.text_field,
            "source_field": d.source_field,
            "format": d.format,
            "hf_split": d.hf_split,
            "rows_per_shard": p.rows_per_shard,
            "max_segment_chars": p.max_segment_chars,
            # the shards' layout: in the hash only when set, so shards prepared before the key
            # existed (one row group each, as 0 writes) stay done
            **({"row_group_rows": p.row_group_rows} if p.row_group_rows else {}),
        }]
    )
    return PrepareSettings(
        tokenizer_dir,
        config.seq_len,
        d.text_field,
        d.source_field,
        d.hf_split,
        p.rows_per_shard,
        p.tokenize_batch_docs,
        p.max_segment_chars,
        settings_hash,
        config.storage,
        p.row_group_rows,
        tokenizer_sha256,
    )


@dataclass
class Plan:
    todo: list[PrepareTask]
    skipped: int
    files_per_split: dict[str, int]
    assemble: list[PrepareTask] = field(default_factory=list)  # split files, after their parts


def list_inputs(config: Config, split: str) -> list[InputFile]:
    """The split's inputs in canonical order (hub datasets expanded to their file shards)."""
    patterns = getattr(config.data, split)
    items = resolve_inputs(patterns, f"data.{split}", config.data.format, config.storage)
    if any(item.format == "hf_hub" and "#" not in item.uri for item in items):
        expanded = []
        for item in items:
            uris = (
                expand_hf_shards(item.uri, config.data.hf_split)
                if item.format == "hf_hub" and "#" not in item.uri
                else [item.uri]
            )
            expanded += [InputFile(uri, item.format, item.size) for uri in uris]
        items = sorted(expanded, key=lambda i: i.uri)
    return items


def list_all_inputs(config: Config) -> dict[str, list[InputFile]]:
    """Every configured split's inputs, resolved and checked (ConfigError on the first bad one)."""
    if not config.data.pool:
        raise ConfigError("data.pool is empty: name the candidate pool's files or globs")
    return {split: list_inputs(config, split) for split in SPLITS if getattr(config.data, split)}


def plan_tasks(
    config: Config, out: Location, settings: PrepareSettings, overwrite: bool,
    inputs: dict[str, list[InputFile]] | None = None,
) -> Plan:
    """Decide which files need work (tokens root `out`, local or a bucket); refuse to mix
    outputs of different settings."""
    inputs = list_all_inputs(config) if inputs is None else inputs
    todo, skipped, counts, assemble = [], 0, {}, []
    for split, items in inputs.items():
        split_dir = out.join(split)
        if split_dir.is_local:
            remove_stale_temps(split_dir.path)  # buckets: an aborted upload leaves nothing
        done = resume_split(split_dir, items, settings, overwrite)
        counts[split] = len(items)
        tasks = []
        for index, item in enumerate(items):
            if index in done:
                skipped += 1
                continue
            spans = tuple(plan_spans(item, config.prepare.split_bytes))
            if not spans:
                tasks.append(PrepareTask(split, index, item, split_dir))
                continue
            tasks += [
                PrepareTask(split, index, item, split_dir, "part", part, spans)
                for part in range(len(spans))
            ]
            assemble.append(PrepareTask(split, index, item, split_dir, "assemble", 0, spans))
        pending = {
            (t.file_index, t.part)
            for t in pending_parts([t for t in tasks if t.kind == "part"], settings.settings_hash)
        }
        todo += [t for t in tasks if t.kind == "file" or (t.file_index, t.part) in pending]
    return Plan(todo, skipped, counts, assemble)
