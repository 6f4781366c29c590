"""The prepare stage: read inputs, tokenize, chunk, and write token shards, one task per file.

A file bigger than `prepare.split_bytes` (local parquet, plain or multi-frame zstd JSON lines)
is tokenized as several part tasks, then chunked by one cheap task per file into the same shards
(see prepare_parts).

Output: OUTPUT/tokens/<split>/<file_index>-<part>.parquet, a completion record per input file in
OUTPUT/tokens/<split>/_done/, and OUTPUT/tokens/<split>/stats.json with counts by reason.
A rerun skips files whose record matches (same input, same settings, every part present with
the recorded size) and redoes the rest.
"""

from __future__ import annotations

import math
import time
from collections import Counter
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from colorfilter.config import Config, section_hash
from colorfilter.errors import BadDataError, ConfigError
from colorfilter.io.atomic import (
    read_json,
    read_json_object,
    remove_stale_temps,
    write_json_atomic,
)
from colorfilter.io.config import StorageConfig
from colorfilter.io.files import InputFile, resolve_inputs
from colorfilter.io.splits import plan_spans
from colorfilter.pipeline.prepare_parts import (
    BAD_SAMPLE_LIMIT,
    FileStats,
    ShardWriter,
    _count_bad,
    _remove_parts,
    assemble_file,
    done_path,
    mark_empty,
    part_is_done,
    part_name,  # noqa: F401  (re-exported: shard names)
    prepare_part,
    write_done_record,
)

SPLITS = ("pool", "downstream_train", "downstream_eval")


@dataclass(frozen=True)
class PrepareSettings:
    """Everything a worker needs; picklable and hashed into every completion record."""

    tokenizer_dir: str
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


@dataclass(frozen=True)
class PrepareTask:
    split: str
    file_index: int
    item: InputFile
    split_dir: str
    kind: str = "file"  # file: all of it | part: one span of a split file | assemble: its shards
    part: int = 0
    spans: tuple[tuple[int, int], ...] = ()  # a split file's parts (kinds part and assemble)


class PrepareWorker:
    """Holds one tokenizer; prepares one input file per call."""

    def __init__(self, settings: PrepareSettings):
        from colorfilter.chunking import DocumentTokenizer

        self.settings = settings
        self.tokenizer = DocumentTokenizer(settings.tokenizer_dir, settings.max_segment_chars)

    def __call__(self, task: PrepareTask) -> dict:
        if task.kind == "part":
            return prepare_part(task, self.tokenizer, self.settings)
        if task.kind == "assemble":
            return assemble_file(task, self.settings)
        return prepare_file(task, self.tokenizer, self.settings)


def prepare_file(task: PrepareTask, tokenizer: Any, settings: PrepareSettings) -> dict:
    """Tokenize and chunk one file; write its parts, then its completion record."""
    from colorfilter.chunking import Chunker
    from colorfilter.io.readers import BadRecord, TruncatedFileError, iter_records

    start = time.perf_counter()
    split_dir = Path(task.split_dir)
    _remove_parts(split_dir, task.file_index)
    stats = FileStats()
    chunker = Chunker(settings.seq_len, task.file_index, task.item.uri)
    shards = ShardWriter(
        split_dir, task.file_index, settings.rows_per_shard, chunker, stats, settings.row_group_rows
    )
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
    return write_done_record(task, settings.settings_hash, stats)


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
    from colorfilter.pipeline.executor import WorkerSpec, map_tasks
    from colorfilter.progress import Progress

    out = config.output_path / "tokens"
    inputs = list_all_inputs(config)  # checks every input (buckets too) before any work
    tokenizer_dir = save_tokenizer(config.tokenizer, config.output_path / "tokenizer")
    settings = make_settings(config, tokenizer_dir)
    plan = plan_tasks(config, out, settings, overwrite, inputs)
    spec = WorkerSpec(
        PrepareWorker,
        (settings,),
        num_cpus=config.prepare.worker_cpus,
        env_vars={
            "RAYON_NUM_THREADS": str(max(1, math.ceil(config.prepare.worker_cpus))),
            "TOKENIZERS_PARALLELISM": "true",
        },
    )
    progress = Progress("prepare", len(plan.todo) + len(plan.assemble), unit="tokens")
    for tasks in (plan.todo, plan.assemble):  # a split file's shards need all its parts
        for task, record in map_tasks(
            spec,
            tasks,
            executor=config.executor,
            num_workers=config.prepare.num_workers,
            ray_cfg=config.ray,
        ):
            progress.update(1, 0 if task.kind == "assemble" else record["stats"]["tokens"])
    progress.close(f"({plan.skipped} files already done, skipped)")
    return {
        split: finish_split(out / split, n, config.data.max_bad_fraction)
        for split, n in plan.files_per_split.items()
    }


def save_tokenizer(name_or_path: str, target: Path) -> str:
    """Copy the configured tokenizer into the run, so every worker and stage uses the same one."""
    if (target / "tokenizer_config.json").exists():
        return str(target)
    from transformers import AutoTokenizer

    try:
        tokenizer = AutoTokenizer.from_pretrained(name_or_path)
    except (OSError, ValueError) as exc:
        raise ConfigError(f"tokenizer: cannot load '{name_or_path}': {exc}") from exc
    if tokenizer.eos_token_id is None:
        raise ConfigError(f"tokenizer '{name_or_path}' has no EOS token to join documents with")
    if tokenizer.pad_token is None:
        tokenizer.pad_token = tokenizer.eos_token
    tmp = target.with_name(target.name + ".tmp")
    tokenizer.save_pretrained(tmp)
    tmp.rename(target)
    return str(target)


def make_settings(config: Config, tokenizer_dir: str) -> PrepareSettings:
    p, d = config.prepare, config.data
    fingerprint = section_hash(
        {
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
        }
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
        fingerprint,
        config.storage,
        p.row_group_rows,
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
        from colorfilter.io.readers import expand_hf_shards

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
    config: Config,
    out: Path,
    settings: PrepareSettings,
    overwrite: bool,
    inputs: dict[str, list[InputFile]] | None = None,
) -> Plan:
    """Decide which files need work; refuse to mix outputs of different settings."""
    inputs = list_all_inputs(config) if inputs is None else inputs
    todo, skipped, counts, assemble = [], 0, {}, []
    for split, items in inputs.items():
        split_dir = out / split
        remove_stale_temps(split_dir)
        _check_previous(split_dir, items, settings, overwrite)
        counts[split] = len(items)
        for index, item in enumerate(items):
            if is_done(split_dir, index, item, settings):
                skipped += 1
                continue
            spans = tuple(plan_spans(item, config.prepare.split_bytes))
            if not spans:
                todo.append(PrepareTask(split, index, item, str(split_dir)))
                continue
            parts = [
                PrepareTask(split, index, item, str(split_dir), "part", part, spans)
                for part in range(len(spans))
            ]
            todo += [task for task in parts if not part_is_done(task, settings.settings_hash)]
            assemble.append(PrepareTask(split, index, item, str(split_dir), "assemble", 0, spans))
    return Plan(todo, skipped, counts, assemble)


def _check_previous(
    split_dir: Path, items: list[InputFile], settings: PrepareSettings, overwrite: bool
) -> None:
    records = sorted((split_dir / "_done").glob("*.json")) if split_dir.exists() else []
    mismatched = [
        r
        for r in records
        if (record := read_json_object(r)) is not None
        and record.get("settings_hash") != settings.settings_hash
    ]
    if mismatched and not overwrite:
        raise ConfigError(
            f"{split_dir} holds shards made with different prepare settings "
            f"(e.g. {mismatched[0].name}); use another output_dir or pass --overwrite"
        )
    if mismatched or overwrite:
        import shutil

        shutil.rmtree(split_dir, ignore_errors=True)
        return
    for stale in split_dir.glob("*.parquet") if split_dir.exists() else []:
        if int(stale.name.split("-")[0]) >= len(items):  # inputs shrank since the last run
            stale.unlink()
    for record in records:
        if int(record.stem) >= len(items):
            record.unlink()


def is_done(split_dir: Path, file_index: int, item: InputFile, settings: PrepareSettings) -> bool:
    """A file is done when its record matches this input and all its parts are there, whole.

    Parts are checked against the sizes the record holds: a missing or truncated part, or a
    record without sizes, means the file is redone.
    """
    record = read_json_object(done_path(split_dir, file_index))
    if record is None or not isinstance(record.get("part_bytes"), dict):
        return False
    same_input = record["input"]["uri"] == item.uri and record["input"]["size"] == item.size
    part_bytes = record["part_bytes"]
    parts_intact = sorted(part_bytes) == sorted(record["stats"]["parts"]) and all(
        (split_dir / name).is_file() and (split_dir / name).stat().st_size == size
        for name, size in part_bytes.items()
    )
    return same_input and record["settings_hash"] == settings.settings_hash and parts_intact


def finish_split(split_dir: Path, n_files: int, max_bad_fraction: float) -> dict:
    """Merge per-file records into stats.json; fail if bad records exceed the allowed fraction,
    or if the split's files gave no chunk at all (BadDataError, exit 3, naming the files)."""
    totals: Counter = Counter()
    skipped: Counter = Counter()
    files_skipped: Counter = Counter()
    samples: list[str] = []
    inputs: list[str] = []
    for index in range(n_files):
        record = read_json(done_path(split_dir, index))
        stats = record["stats"]
        inputs.append(record["input"]["uri"])
        for key in (
            "records",
            "documents",
            "bytes_text",
            "tokens",
            "chunks",
            "tail_tokens_dropped",
        ):
            totals[key] += stats[key]
        skipped.update(stats["skipped"])
        if stats.get("file_skipped"):
            files_skipped[stats["file_skipped"]] += 1
        samples += stats["bad_samples"][: BAD_SAMPLE_LIMIT - len(samples)]
    summary = {
        "files": n_files,
        **totals,
        "skipped": dict(skipped),
        "files_skipped": dict(files_skipped),
        "bad_samples": samples,
    }
    error = _split_error(split_dir.name, summary, inputs, max_bad_fraction)
    if error:
        summary["error"] = error  # later stages repeat it instead of "run prepare first"
    write_json_atomic(split_dir / "stats.json", summary)
    if error:
        raise BadDataError(error)
    return summary


def _split_error(
    split: str, totals: dict, inputs: list[str], max_bad_fraction: float
) -> str | None:
    """Why the split is unusable (too many bad records, or no chunk at all), or None."""
    skipped, samples = totals["skipped"], totals["bad_samples"]
    bad = sum(skipped.values())
    if totals["records"] and bad / max(totals["records"], 1) > max_bad_fraction:
        return (
            f"{split}: {bad} of {totals['records']} records are bad "
            f"({skipped}), above data.max_bad_fraction={max_bad_fraction}; "
            f"first: {samples[:3]}"
        )
    if totals["chunks"] == 0:
        named = ", ".join(inputs[:3]) + (f" and {len(inputs) - 3} more" if len(inputs) > 3 else "")
        why = (
            f"{totals['records']} records, {totals['documents']} usable documents, "
            f"{totals['tokens']} tokens"
        )
        if skipped:
            why += f", bad records: {skipped}"
        if totals["files_skipped"]:
            why += f", skipped files: {totals['files_skipped']}"
        return f"data.{split}: no usable chunk in its {len(inputs)} file(s) ({named}): {why}"
    return None
