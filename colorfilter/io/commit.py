"""Commits that hold on every backend: data objects first, a completion record last.

A *unit* (a prepare part, a score shard, a training checkpoint, an evaluation run, a dataset
manifest) is a set of data objects under one folder plus a small JSON completion record in that
folder, written after all of them, that lists each object's size (and, on request, its sha256).
A rerun trusts a unit only through `is_committed`: the record parses, has this format, and every
object it lists exists with the recorded size (and hash, when asked). So a kill at any moment
leaves nothing a rerun believes: objects without a record are redone; a record whose objects
were since removed, truncated or replaced by a torn upload is not trusted.

Why this works without rename: on local disk each file is still written temp-then-rename
(colorfilter.io.storage.open_write), and the record is renamed into place last; on object stores
(S3, GCS: strong read-after-write consistency) each object appears whole at the end of its PUT
or multipart upload, and the record is one more PUT after them. FUSE mounts of buckets, which
cannot rename, are handled by addressing the bucket by URL instead.

Usage in a stage (the record name is the run layout's business, e.g. `shard-00012.done.json`):

    for name, table in outputs.items():
        pq.write_table(table, *parquet_filesystem(folder.join(name)))  # objects first
    commit_unit(folder.join("shard-00012.done.json"), [folder.join(n) for n in outputs],
                meta={"rows": rows, "config_hash": h})                   # record last
    ...
    if is_committed(folder.join("shard-00012.done.json")) is None:  # on resume
        redo()
"""

from __future__ import annotations

import hashlib
import json
from collections.abc import Iterable, Mapping
from typing import Any

from colorfilter.io.redact import redact_obj
from colorfilter.io.storage import (
    Location,
    as_location,
    open_read,
    read_json_object,
    read_many,
    remove,
    stat_many,
    write_bytes,
    write_json,
)

RECORD_FORMAT = "colorfilter.unit/1"


def commit_unit(
    record: str | Location,
    objects: Iterable[str | Location],
    meta: Mapping[str, Any] | None = None,
    sha256: bool = False,
) -> dict:
    """Write the completion record for data objects already written under the record's folder.

    Sizes are read back from the store (one listing per folder), so the record states what is
    really there. `meta` (counts, config hashes) is stored redacted. Returns the record.
    """
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
            entries[name]["sha256"] = file_sha256(loc)
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


def read_record(record: str | Location) -> dict | None:
    """The record as written, or None when missing, torn or not a unit record (no checks)."""
    return _parse_record(read_json_object(record))


def _parse_record(payload: Any) -> dict | None:
    if not isinstance(payload, dict) or payload.get("format") != RECORD_FORMAT:
        return None
    objects = payload.get("objects")
    if not isinstance(objects, dict) or not all(
        isinstance(v, dict) and isinstance(v.get("size"), int) for v in objects.values()
    ):
        return None
    return payload


def is_committed(record: str | Location, verify_sha256: bool = False) -> dict | None:
    """The record when its unit is complete (every object present with its size), else None."""
    record = as_location(record)
    return committed([record], verify_sha256).get(record.url)


def committed(records: Iterable[str | Location], verify_sha256: bool = False) -> dict[str, dict]:
    """{record url: record} for the records among `records` whose units are complete.

    Batched for resume over thousands of units: the records are fetched concurrently and the
    objects' sizes come from one listing per folder (colorfilter.io.storage.stat_many).
    """
    locs = [as_location(r) for r in records]
    payloads: dict[str, dict] = {}
    for url, data in read_many(locs).items():
        try:
            payload = _parse_record(json.loads(data)) if data is not None else None
        except ValueError:  # a torn record
            payload = None
        if payload is not None:
            payloads[url] = payload
    wanted = {loc.url: objects_of(loc, payloads[loc.url]) for loc in locs if loc.url in payloads}
    sizes = stat_many(o for objs in wanted.values() for o in objs)
    found = {}
    for url, objs in wanted.items():
        entries = payloads[url]["objects"]
        names = sorted(entries)
        if any(sizes[o.url] != entries[n]["size"] for n, o in zip(names, objs)):
            continue
        if verify_sha256 and any(
            "sha256" in entries[n] and file_sha256(o) != entries[n]["sha256"]
            for n, o in zip(names, objs)
        ):
            continue
        found[url] = payloads[url]
    return found


def discard_unit(record: str | Location) -> None:
    """Undo a unit: the record goes first (so no rerun trusts it), then the objects it lists."""
    record = as_location(record)
    payload = read_record(record)
    remove(record)
    for name in (payload or {}).get("objects", {}):
        remove(record.parent.join(name))


def file_sha256(value: str | Location, block: int = 1 << 20) -> str:
    """Streamed sha256 of one file or object."""
    digest = hashlib.sha256()
    with open_read(value) as handle:
        while chunk := handle.read(block):
            digest.update(chunk)
    return digest.hexdigest()


def objects_of(record: str | Location, payload: Mapping[str, Any]) -> list[Location]:
    """The Locations a record lists, in its (sorted) order."""
    base = as_location(record).parent
    return [base.join(name) for name in sorted(payload["objects"])]
