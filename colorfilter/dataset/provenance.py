"""Input hashes for manifests, taken from the completion records prepare and score write.

Prepare records each input file's parts (`tokens/<split>/_done/<file>.json`: part_bytes and
part_sha256 by part name); score commits each score shard with a colorfilter.io.commit record
(`scores/<split>/<shard>.done.json`: the object's size and sha256; older runs wrote
`scores/<split>/_done/<shard>.json` with bytes and sha256). A hash is reused only when the
record names the file and its size matches; otherwise (older records, a file rewritten since)
the file is hashed again. Works on any backend: sizes come from one listing per folder and the
records are fetched together.
"""

from __future__ import annotations

import json
from collections.abc import Sequence
from pathlib import Path
from typing import Any

from colorfilter.io import storage
from colorfilter.io.location import Location, as_location
from colorfilter.scoring.shard import done_record_path

DONE_DIR = "_done"


def recorded_sha256(path: str | Path | Location) -> str | None:
    """The sha256 a stage recorded when it wrote `path`, if it still describes the file."""
    loc = as_location(path)
    size = storage.stat_many([loc])[loc.url]
    return None if size is None else _recorded([loc], {loc.url: size})[loc.url]


def describe_inputs(paths: Sequence[str | Path | Location], checksum: bool) -> list[dict]:
    """Path (URL), size and (with `checksum`) sha256 of each input, in the given order; the
    hashes come from the stages' records where they still describe the file."""
    from colorfilter.dataset.manifest import _sha256

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
            entry["sha256"] = known[loc.url] or _sha256(loc)
        out.append(entry)
    return out


def _candidates(loc: Location) -> tuple[Location, Location, Location]:
    """The records that may describe `loc`: the score stage's (this and the older format) and
    the prepare stage's."""
    done, stem = loc.parent.join(DONE_DIR), loc.name.rsplit(".", 1)[0]
    return (done_record_path(loc), done.join(f"{stem}.json"),
            done.join(f"{stem.split('-')[0]}.json"))  # fmt: skip


def _recorded(locs: list[Location], sizes: dict[str, int | None]) -> dict[str, str | None]:
    records = storage.read_many({r.url: r for loc in locs for r in _candidates(loc)}.values())
    return {loc.url: _hash_in(loc, sizes[loc.url], records) for loc in locs}


def _hash_in(loc: Location, size: int | None, records: dict[str, bytes | None]) -> str | None:
    unit, score, prepare = (_parse(records.get(r.url)) for r in _candidates(loc))
    if score is not None and score.get("bytes") == size and isinstance(score.get("sha256"), str):
        return score["sha256"]
    for record in (unit, score, prepare):
        entry = ((record or {}).get("objects") or {}).get(loc.name)  # an io.commit record
        if isinstance(entry, dict) and entry.get("size") == size and entry.get("sha256"):
            return str(entry["sha256"])
    if prepare is not None:
        part_sizes, hashes = prepare.get("part_bytes"), prepare.get("part_sha256")
        if isinstance(part_sizes, dict) and isinstance(hashes, dict):
            if part_sizes.get(loc.name) == size:
                value = hashes.get(loc.name)
                return value if isinstance(value, str) else None
    return None


def _parse(data: bytes | None) -> dict | None:
    try:
        value = json.loads(data) if data is not None else None
    except ValueError:
        return None
    return value if isinstance(value, dict) else None
