"""What a prepare rerun trusts, what it clears, and the split's stats.json, on any backend.

A file's completion record `tokens/<split>/<file>.done.json` (colorfilter.io.commit) is written
after its shards and lists each shard's size and sha256 (reused by manifests), with the input,
the settings hash and the tokenizer's hash as meta. A rerun trusts a record only when it names
this input, settings and tokenizer and every listed shard is there with its size; checked for all
files of a split at once by the driver (one listing of the records, fetched concurrently, and one
of the split folder for the shards' sizes), which also clears what unfinished files left, so
resuming thousands of files on a bucket stays cheap. Records of earlier versions
(`_done/<file>.json`) are read the same way and, when they still describe their shards, replaced
by this version's record (no shard is read or written again).
"""

from __future__ import annotations

from collections import Counter
from typing import Any

from colorfilter.errors import BadDataError, ConfigError
from colorfilter.io import storage
from colorfilter.io.commit import Unit, commit_unit, committed, units
from colorfilter.io.files import InputFile
from colorfilter.io.location import Location
from colorfilter.io.token_shards import shard_locations
from colorfilter.layout import STATS
from colorfilter.pipeline.prepare_parts import (
    BAD_SAMPLE_LIMIT,
    LEGACY_DONE_DIR,
    done_path,
    legacy_done_path,
)

TOTALS = ("records", "documents", "bytes_text", "tokens", "chunks", "tail_tokens_dropped")


def read_records(split_dir: Location, indices: range) -> dict[int, Unit | None]:
    """{file index: its record, or None when missing or cut short}."""
    locs = {index: done_path(split_dir, index) for index in indices}
    found = units(locs.values())
    return {index: found.get(loc.url) for index, loc in locs.items()}


def resume_split(split_dir: Location, items: list[InputFile], settings: Any, overwrite: bool
                 ) -> set[int]:  # fmt: skip
    """The indices of the split's files a rerun keeps; everything else of theirs is cleared.

    Refuses (or with `overwrite`, clears) shards of other settings or of another tokenizer. A
    file is kept when its record matches this input, settings and tokenizer and every shard it
    lists is there, whole (the size it records). The records and shards of the other files, and
    of inputs past the end (the inputs shrank), are removed here, records first (so no rerun
    trusts a file whose shards go next): a worker then writes all of a file's shards afresh,
    without listing the folder itself.
    """
    found = _found_records(split_dir)
    records = units(found)
    stale = [r for r in found if (u := records.get(r.url)) is not None
             and u.meta.get("settings_hash") != settings.settings_hash]  # fmt: skip
    if stale and not overwrite:
        raise ConfigError(
            f"{split_dir} holds shards made with different prepare settings "
            f"(e.g. {stale[0].name}); use another output_dir or pass --overwrite"
        )
    _check_tokenizer(split_dir, records.values(), settings.tokenizer_sha256, overwrite)
    if stale or overwrite:
        storage.remove(split_dir, recursive=True)
        return set()
    done = _intact(split_dir, found, items, settings)
    for record in found:
        if _index(record) not in done or record.parent.name == LEGACY_DONE_DIR:
            storage.remove(record)  # a migrated one's new record is in place already
    for shard in shard_locations(split_dir):
        if _index(shard) not in done:
            storage.remove(shard)
    return done


def _found_records(split_dir: Location) -> list[Location]:
    """This version's file records, then any of an earlier version."""
    found = storage.glob(split_dir.join("*.done.json"))
    found += storage.glob(split_dir.join(LEGACY_DONE_DIR, "*.json"))
    return [r for r in found if _index(r) is not None]


def _check_tokenizer(split_dir: Location, records: Any, current: str, overwrite: bool) -> None:
    """Shards tokenized with another tokenizer than the run's are refused, naming both."""
    others = {u.meta["tokenizer_sha256"] for u in records
              if u.meta.get("tokenizer_sha256") not in (None, current)}  # fmt: skip
    if others and not overwrite:
        raise ConfigError(
            f"{split_dir.url} holds shards tokenized with tokenizer sha256 {sorted(others)[0]}, "
            f"but the run's tokenizer ({split_dir.parent.parent.join('tokenizer').url}) is now "
            f"sha256 {current}: restore that tokenizer, or pass --overwrite to tokenize again"
        )


def _index(loc: Location) -> int | None:
    """The input file index in a record's or shard's name (00012.done.json, 00012-00003.parquet,
    _done/00012.json)."""
    head = loc.name.split(".")[0].split("-")[0]
    return int(head) if head.isdigit() else None


def _intact(split_dir: Location, found: list[Location], items: list[InputFile], settings: Any
            ) -> set[int]:  # fmt: skip
    """Files whose record (this version's, else a migrated earlier one) is whole and matches."""
    complete = committed(found)
    done: set[int] = set()
    for record in found:  # this version's first: an earlier record is only a fallback
        index, unit = _index(record), complete.get(record.url)
        if index in done or index >= len(items) or unit is None:
            continue
        if not _matches(unit, items[index], settings):
            continue
        if unit.kind == "prepare-file":
            _migrate(split_dir, index, unit, settings)
        done.add(index)
    return done


def _matches(unit: Unit, item: InputFile, settings: Any) -> bool:
    source, stats = unit.meta.get("input"), unit.meta.get("stats")
    return (
        isinstance(source, dict) and isinstance(stats, dict)
        and sorted(unit.objects) == sorted(stats.get("parts", []))
        and source.get("uri") == item.uri and source.get("size") == item.size
        and unit.meta.get("settings_hash") == settings.settings_hash
    )  # fmt: skip


def _migrate(split_dir: Location, index: int, unit: Unit, settings: Any) -> None:
    """Replace an earlier version's record by this version's (same shards, hashes kept)."""
    hashes = {name: e["sha256"] for name, e in unit.objects.items() if e.get("sha256")}
    meta = {**unit.meta, "tokenizer_sha256": settings.tokenizer_sha256}
    commit_unit(done_path(split_dir, index), unit.locations(), meta, sha256=hashes)
    storage.remove(legacy_done_path(split_dir, index))


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
        stats = record.meta["stats"]
        inputs.append(record.meta["input"]["uri"])
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
    storage.write_json(split_dir.join(STATS), summary)
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
