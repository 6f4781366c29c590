"""Input hashes for manifests, taken from the completion records prepare and score write.

Prepare commits each input file's shards with a record beside them (`<file>.done.json`), score
each score shard (`<shard>.done.json`); both list every object's size and sha256 (records of
earlier versions under `_done/` too: colorfilter.io.commit reads them all). A hash is reused only
when a record lists the file and its size still matches; otherwise the file is hashed again.
Works on any backend: sizes come from one listing per folder and the records are fetched
together.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from pathlib import Path
from typing import Any

from colorfilter.io import storage
from colorfilter.io.commit import units
from colorfilter.io.location import Location, as_location

LEGACY_DONE_DIR = "_done"
RECORD_SUFFIX = ".done.json"


def recorded_sha256(path: str | Path | Location) -> str | None:
    """The sha256 a stage recorded when it wrote `path`, if it still describes the file."""
    loc = as_location(path)
    size = storage.stat_many([loc])[loc.url]
    return None if size is None else _recorded([loc], {loc.url: size})[loc.url]


def describe_inputs(paths: Sequence[str | Path | Location], checksum: bool) -> list[dict]:
    """Path (URL), size and (with `checksum`) sha256 of each input, in the given order; the
    hashes come from the stages' records where they still describe the file."""
    locs = [as_location(p) for p in paths]
    sizes = storage.stat_many(locs)
    missing = [loc.url for loc in locs if sizes[loc.url] is None]
    if missing:
        raise FileNotFoundError(f"input file {missing[0]} is gone")
    known = _recorded(locs, sizes) if checksum else {}
    out = []
    for loc in locs:
        entry: dict[str, Any] = {"path": loc.url, "size": sizes[loc.url]}
        if checksum:
            entry["sha256"] = known[loc.url] or storage.file_sha256(loc)
        out.append(entry)
    return out


def _candidates(loc: Location) -> list[Location]:
    """The records that may list `loc`: its own (a score shard's), its input file's (a token
    shard's, `<file>-<part>.parquet` -> `<file>`), and both as earlier versions named them."""
    stem = loc.name.rsplit(".", 1)[0]
    head = stem.split("-")[0]
    done = loc.parent.join(LEGACY_DONE_DIR)
    return [loc.parent.join(stem + RECORD_SUFFIX), loc.parent.join(head + RECORD_SUFFIX),
            done.join(f"{stem}.json"), done.join(f"{head}.json")]  # fmt: skip


def recorded_entries(locs: Sequence[Location]) -> dict[str, Mapping[str, Any] | None]:
    """{url: what the completion record of the stage that wrote it says of the file (size,
    sha256), or None when no record lists it}: read shards are checked against these."""
    records = units({r.url: r for loc in locs for r in _candidates(loc)}.values())
    out: dict[str, Mapping[str, Any] | None] = {}
    for loc in locs:
        found = (records[c.url].entry(loc) for c in _candidates(loc) if c.url in records)
        out[loc.url] = next((entry for entry in found if entry), None)
    return out


def _recorded(locs: list[Location], sizes: dict[str, int | None]) -> dict[str, str | None]:
    """{url: the recorded sha256, when the record's size still matches the file}."""
    entries = recorded_entries(locs)
    out: dict[str, str | None] = {}
    for loc in locs:
        entry = entries[loc.url]
        fits = entry is not None and entry.get("sha256") and entry.get("size") == sizes[loc.url]
        out[loc.url] = str(entry["sha256"]) if fits else None
    return out
