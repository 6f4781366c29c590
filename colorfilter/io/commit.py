"""Commits that hold on every backend: data objects first, a completion record last.

A *unit* (a prepare file's shards, a score shard, a model folder, a training checkpoint, a
select task, an evaluation run, a stage's finished marker) is a set of data objects plus a small
JSON completion record written after all of them, that lists each object's size and sha256
(relative to the record's folder) and carries the unit's facts (`meta`). Everything that says
"this is done" is such a record, and `read_unit` is the one reader of records: it also
understands the records of earlier versions (prepare's per-file `_done/<file>.json`, score's
`_done/<shard>.json`), a selection folder's `manifest.json` and an export's `export.json`,
which list their files the same way. A rerun trusts a unit only through `committed` /
`is_committed`: the record parses, and every object it lists exists with the recorded size
(and, when asked, sha256). So a kill at any
moment leaves nothing a rerun believes: objects without a record are redone; a record cut short,
or one whose objects were since removed, truncated or replaced, is not trusted.

Why this works without rename: on local disk each file is still written temp-then-rename
(colorfilter.io.storage.open_write), and the record is renamed into place last; on object stores
(S3, GCS: strong read-after-write consistency) each object appears whole at the end of its PUT
or multipart upload, and the record is one more PUT after them. FUSE mounts of buckets, which
cannot rename, are handled by addressing the bucket by URL instead.

Usage in a stage (the record name is the run layout's business, e.g. `shard-00012.done.json`):

    for name, table in outputs.items():
        write_parquet(folder.join(name), table)                          # objects first
    commit_unit(folder.join("shard-00012.done.json"), [folder.join(n) for n in outputs],
                meta={"rows": rows, "config_hash": h})                   # record last
    ...
    if is_committed(folder.join("shard-00012.done.json")) is None:  # on resume
        redo()
"""

from __future__ import annotations

import json
from collections.abc import Iterable, Mapping
from dataclasses import dataclass
from typing import Any

from colorfilter.io.redact import redact_obj
from colorfilter.io.storage import (
    Location,
    as_location,
    file_sha256,
    read_many,
    remove,
    stat_many,
    write_bytes,
    write_json,
)

RECORD_FORMAT = "colorfilter.unit/1"
# Manifests that list their folder's files as records do, `complete: true` written last:
MANIFEST_FORMAT = "colorfilter-selection"  # a selection folder's manifest.json (dataset/)
EXPORT_FORMAT = "colorfilter-export"  # an export folder's export.json (export/)
MANIFEST_KINDS = {MANIFEST_FORMAT: "manifest", EXPORT_FORMAT: "export"}


@dataclass(frozen=True)
class Unit:
    """A completion record as read: the objects it vouches for and what it says about them."""

    record: Location
    base: Location  # the folder its object names are relative to
    objects: Mapping[str, Mapping[str, Any]]  # name -> {"size": int, "sha256": str (if known)}
    meta: Mapping[str, Any]
    kind: str = "unit"  # unit | manifest | prepare-file, score-shard (earlier versions' records)

    def locations(self) -> list[Location]:
        """The objects' Locations, in name order."""
        return [self.base.join(name) for name in sorted(self.objects)]

    def entry(self, loc: Location) -> Mapping[str, Any] | None:
        """What the record says of `loc` (its size, its sha256), if it lists it."""
        try:
            return self.objects.get(loc.relative_to(self.base))
        except ValueError:
            return None


def commit_unit(
    record: str | Location,
    objects: Iterable[str | Location],
    meta: Mapping[str, Any] | None = None,
    sha256: bool | Mapping[str, str] = False,
) -> dict:
    """Write the completion record for data objects already written under the record's folder.

    Sizes are read back from the store (one listing per folder), so the record states what is
    really there. `sha256`: True hashes every object (a streamed read); a mapping {name: sha256}
    gives the hashes of objects hashed from their bytes as they were written (the others are
    read). `meta` (counts, config hashes) is stored redacted. Returns the record.
    """
    known = sha256 if isinstance(sha256, Mapping) else {}
    record = as_location(record)
    base = record.parent
    locs = [as_location(o, record.storage) for o in objects]
    sizes = stat_many(locs)
    entries: dict[str, dict[str, Any]] = {}
    for loc in locs:
        name = loc.relative_to(base)
        if sizes[loc.url] is None:
            raise FileNotFoundError(f"cannot commit {record.url}: {loc.url} was not written")
        entries[name] = {"size": sizes[loc.url]}
        if sha256:
            entries[name]["sha256"] = known.get(name) or file_sha256(loc)
    payload = {"format": RECORD_FORMAT, "objects": entries, "meta": redact_obj(dict(meta or {}))}
    write_json(record, payload)
    return payload


def write_unit(
    record: str | Location,
    files: Mapping[str, bytes],
    meta: Mapping[str, Any] | None = None,
    sha256: bool = False,
) -> dict:
    """Write small objects (name under the record's folder -> bytes), then their record."""
    record = as_location(record)
    for name, data in files.items():
        write_bytes(record.parent.join(name), data)
    return commit_unit(record, [record.parent.join(n) for n in files], meta, sha256)


def read_unit(record: str | Location) -> Unit | None:
    """The record as written, or None when missing, cut short or not a record (no checks)."""
    record = as_location(record)
    return parse_unit(record, read_many([record])[record.url])


def parse_unit(record: Location, data: bytes | None) -> Unit | None:
    """A record's bytes as a Unit: this version's records, and the others colorfilter wrote."""
    try:
        payload = json.loads(data) if data is not None else None
    except ValueError:  # a record cut short
        return None
    if not isinstance(payload, dict):
        return None
    for parse in (_unit, _manifest, _prepare_file, _score_shard):
        unit = parse(record, payload)
        if unit is not None:
            return unit
    return None


def _sized(objects: Any) -> bool:
    return isinstance(objects, dict) and all(
        isinstance(v, dict) and isinstance(v.get("size"), int) and not isinstance(v["size"], bool)
        for v in objects.values()
    )


def _unit(record: Location, payload: dict) -> Unit | None:
    objects, meta = payload.get("objects"), payload.get("meta", {})
    if payload.get("format") != RECORD_FORMAT or not _sized(objects) or not isinstance(meta, dict):
        return None
    return Unit(record, record.parent, objects, meta)


def _manifest(record: Location, payload: dict) -> Unit | None:
    """A selection's manifest.json or an export's export.json: its `files` (size, sha256) are
    its objects."""
    files, kind = payload.get("files"), MANIFEST_KINDS.get(payload.get("format"))
    if kind is None or payload.get("complete") is not True or not _sized(files):
        return None
    meta = {k: v for k, v in payload.items() if k != "files"}
    return Unit(record, record.parent, files, meta, kind=kind)


def _prepare_file(record: Location, payload: dict) -> Unit | None:
    """prepare's per-file record of earlier versions, `tokens/<split>/_done/<file>.json`."""
    sizes, hashes = payload.get("part_bytes"), payload.get("part_sha256") or {}
    if not isinstance(sizes, dict) or not isinstance(hashes, dict):
        return None
    objects = {name: {"size": size, **({"sha256": hashes[name]} if name in hashes else {})}
               for name, size in sizes.items()}  # fmt: skip
    if not _sized(objects):
        return None
    meta = {k: v for k, v in payload.items() if k not in ("part_bytes", "part_sha256")}
    return Unit(record, record.parent.parent, objects, meta, kind="prepare-file")


def _score_shard(record: Location, payload: dict) -> Unit | None:
    """score's per-shard record of earlier versions, `scores/<split>/_done/<shard>.json`."""
    size, sha = payload.get("bytes"), payload.get("sha256")
    if not isinstance(size, int) or not isinstance(sha, str) or record.parent.name != "_done":
        return None
    name = record.name[: -len(".json")] + ".parquet"
    meta = {k: v for k, v in payload.items() if k not in ("bytes", "sha256")}
    return Unit(record, record.parent.parent, {name: {"size": size, "sha256": sha}}, meta,
                kind="score-shard")  # fmt: skip


def problems(unit: Unit, sizes: Mapping[str, int | None], verify_sha256: bool
             ) -> list[tuple[Location, str]]:  # fmt: skip
    """(object, what is wrong with it) for each object that does not match the unit's record
    (empty: the unit is whole). `sizes`: {url: size or None} of the unit's objects
    (colorfilter.io.storage.stat_many)."""
    found = []
    for name, loc in zip(sorted(unit.objects), unit.locations()):
        expected, size = unit.objects[name], sizes.get(loc.url)
        if size is None:
            found.append((loc, "missing"))
        elif size != expected["size"]:
            found.append((loc, f"{size} bytes, its record says {expected['size']}"))
        elif verify_sha256 and "sha256" in expected and file_sha256(loc) != expected["sha256"]:
            found.append((loc, "its bytes differ from its record's sha256"))
    return found


def units(records: Iterable[str | Location]) -> dict[str, Unit]:
    """{record url: Unit} for the records that parse (fetched concurrently), no checks."""
    locs = [as_location(r) for r in records]
    data = read_many(locs)
    parsed = {loc.url: parse_unit(loc, data[loc.url]) for loc in locs}
    return {url: unit for url, unit in parsed.items() if unit is not None}


def committed(records: Iterable[str | Location], verify_sha256: bool = False) -> dict[str, Unit]:
    """{record url: Unit} for the records among `records` whose units are complete.

    Batched for resume over thousands of units: the records are fetched concurrently and the
    objects' sizes come from one listing per folder (colorfilter.io.storage.stat_many).
    """
    found = units(records)
    sizes = stat_many(loc for unit in found.values() for loc in unit.locations())
    return {url: unit for url, unit in found.items() if not problems(unit, sizes, verify_sha256)}


def is_committed(record: str | Location, verify_sha256: bool = False) -> Unit | None:
    """The unit when it is complete (every object present with its size), else None."""
    record = as_location(record)
    return committed([record], verify_sha256).get(record.url)


def discard_unit(record: str | Location) -> None:
    """Undo a unit: the record goes first (so no rerun trusts it), then the objects it lists."""
    record = as_location(record)
    unit = read_unit(record)
    remove(record)
    for loc in unit.locations() if unit is not None else []:
        remove(loc)
