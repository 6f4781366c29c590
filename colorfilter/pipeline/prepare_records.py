"""What a prepare rerun trusts, what it clears, and the split's stats.json, on any backend.

A file's completion record `tokens/<split>/_done/<file>.json` is written after its shards and
lists each shard's size (`part_bytes`) and sha256 (`part_sha256`, reused by manifests). A rerun
trusts a record only when it names this input and settings and every listed shard is there with
its size; checked for all files of a split at once by the driver (one listing of the records,
fetched concurrently, and one of the split folder for the shards' sizes), which also clears what
unfinished files left, so resuming thousands of files on a bucket stays cheap.
"""

from __future__ import annotations

import json
from collections import Counter
from typing import Any

from colorfilter.errors import BadDataError, ConfigError
from colorfilter.io import storage
from colorfilter.io.files import InputFile
from colorfilter.io.location import Location
from colorfilter.io.token_shards import shard_locations
from colorfilter.pipeline.prepare_parts import BAD_SAMPLE_LIMIT, done_path

TOTALS = ("records", "documents", "bytes_text", "tokens", "chunks", "tail_tokens_dropped")


def read_records(split_dir: Location, indices: range) -> dict[int, dict | None]:
    """{file index: its record (a dict), or None when missing, torn or not an object}."""
    locs = {index: done_path(split_dir, index) for index in indices}
    data = storage.read_many(locs.values())
    return {index: _object(data[loc.url]) for index, loc in locs.items()}


def _object(data: bytes | None) -> dict | None:
    try:
        value = json.loads(data) if data is not None else None
    except ValueError:  # a torn record
        return None
    return value if isinstance(value, dict) else None


def resume_split(
    split_dir: Location, items: list[InputFile], settings_hash: str, overwrite: bool
) -> set[int]:
    """The indices of the split's files a rerun keeps; everything else of theirs is cleared.

    Refuses (or with `overwrite`, clears) shards of other settings. A file is kept when its
    record matches this input and settings and every shard it lists is there, whole (the size it
    records). The records and shards of the other files, and of inputs past the end (the inputs
    shrank), are removed here, records first (so no rerun trusts a file whose shards go next):
    a worker then writes all of a file's shards afresh, without listing the folder itself.
    """
    found = [r for r in storage.glob(split_dir.join("_done", "*.json")) if _index(r) is not None]
    records = {_index(r): _object(data) for r, data in zip(found, _read(found))}
    mismatched = [
        r for r in found
        if (record := records[_index(r)]) is not None
        and record.get("settings_hash") != settings_hash
    ]  # fmt: skip
    if mismatched and not overwrite:
        raise ConfigError(
            f"{split_dir} holds shards made with different prepare settings "
            f"(e.g. {mismatched[0].name}); use another output_dir or pass --overwrite"
        )
    if mismatched or overwrite:
        storage.remove(split_dir, recursive=True)
        return set()
    done = _intact(split_dir, records, items, settings_hash)
    if len(done) < len(items) or len(done) < len(found):
        storage.remove(split_dir.join(STATS_NAME))  # not finished until this run says so
    for record in found:
        if _index(record) not in done:
            storage.remove(record)
    for stale in shard_locations(split_dir):
        if _index(stale) not in done:
            storage.remove(stale)
    return done


STATS_NAME = "stats.json"  # the split's summary, written last: the "prepare ran" marker


def _index(loc: Location) -> int | None:
    """The input file index in a record's or shard's name (00012.json, 00012-00003.parquet)."""
    head = loc.name.split(".")[0].split("-")[0]
    return int(head) if head.isdigit() else None


def _read(locs: list[Location]) -> list[bytes | None]:
    data = storage.read_many(locs)
    return [data[loc.url] for loc in locs]


def _intact(
    split_dir: Location, records: dict[int, dict | None], items: list[InputFile],
    settings_hash: str,
) -> set[int]:
    listed = {
        index: record for index, record in records.items()
        if index < len(items) and record is not None
        and _matches(record, items[index], settings_hash)
    }  # fmt: skip
    shards = [split_dir.join(name) for r in listed.values() for name in r["part_bytes"]]
    sizes = storage.stat_many(shards)
    return {
        index for index, record in listed.items()
        if all(sizes[split_dir.join(name).url] == size
               for name, size in record["part_bytes"].items())
    }  # fmt: skip


def _matches(record: dict, item: InputFile, settings_hash: str) -> bool:
    part_bytes, source = record.get("part_bytes"), record.get("input")
    stats = record.get("stats")
    return (
        isinstance(part_bytes, dict) and isinstance(source, dict) and isinstance(stats, dict)
        and sorted(part_bytes) == sorted(stats.get("parts", []))
        and source.get("uri") == item.uri and source.get("size") == item.size
        and record.get("settings_hash") == settings_hash
    )  # fmt: skip


def finish_split(split_dir: Location, n_files: int, max_bad_fraction: float) -> dict:
    """Merge per-file records into stats.json; fail if bad records exceed the allowed fraction,
    or if the split's files gave no chunk at all (BadDataError, exit 3, naming the files)."""
    totals: Counter = Counter()
    skipped: Counter = Counter()
    files_skipped: Counter = Counter()
    samples: list[str] = []
    inputs: list[str] = []
    records = read_records(split_dir, range(n_files))
    for index in range(n_files):
        record = records[index]
        if record is None:
            raise RuntimeError(f"{done_path(split_dir, index)}: missing after prepare finished")
        stats = record["stats"]
        inputs.append(record["input"]["uri"])
        for key in TOTALS:
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
    error = split_error(split_dir.name, summary, inputs, max_bad_fraction)
    if error:
        summary["error"] = error  # later stages repeat it instead of "run prepare first"
    storage.write_json(split_dir.join("stats.json"), summary)
    if error:
        raise BadDataError(error)
    return summary


def split_error(split: str, totals: dict[str, Any], inputs: list[str],
                max_bad_fraction: float) -> str | None:
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
