"""The selection folder an export reads: checked against its manifest, read shard by shard.

A folder is exported only when its `manifest.json` is there and marked complete (else exit 2:
the selection was not finished) and every file it lists has the listed size (one listing; else
exit 3). Each data shard is hashed from the very bytes that are then decoded, and a sha256 that
differs from the manifest's stops the export before anything is written for that shard (exit 3).
So an export never holds tokens that the selection's manifest does not vouch for.
"""

from __future__ import annotations

import fnmatch
import hashlib
from collections.abc import Mapping
from dataclasses import dataclass
from typing import Any

import numpy as np

from colorfilter.dataset.manifest import MANIFEST_NAME, parse_manifest, verify_files
from colorfilter.errors import EXIT_USAGE, BadDataError, ColorFilterError
from colorfilter.io import storage
from colorfilter.io.location import Location, as_location

SHARD_GLOB = "data/train-*.parquet"


class ExportError(ColorFilterError):
    """The export cannot start as asked (unfinished selection, unusable OUT, no vocabulary)."""

    exit_code = EXIT_USAGE


@dataclass(frozen=True)
class Shard:
    """One data shard of the selection, as its manifest lists it."""

    rel: str  # "data/train-00000-of-00004.parquet"
    size: int
    sha256: str

    @property
    def stem(self) -> str:
        """`train-00000-of-00004`: the base of every output name made from this shard."""
        return self.rel.rsplit("/", 1)[-1].removesuffix(".parquet")


@dataclass(frozen=True)
class Selection:
    """A finished selection folder: where it is, its manifest, and its shards in order."""

    location: Location
    manifest: Mapping[str, Any]
    manifest_sha256: str
    seq_len: int
    shards: tuple[Shard, ...]

    def describe(self) -> dict[str, Any]:
        """What the export's own manifest says it came from."""
        selection = self.manifest.get("selection", {})
        counts = self.manifest.get("counts", {})
        return {
            "url": self.location.url,
            "manifest_sha256": self.manifest_sha256,
            "config_hash": self.manifest.get("config_hash"),
            "method": selection.get("method"),
            "tau": selection.get("tau"),
            "num_shards": len(self.shards),
            "selected": counts.get("selected"),
            "selected_tokens": counts.get("selected_tokens"),
        }


@dataclass
class ShardTokens:
    """One shard's rows: every row's token count and all tokens back to back, in row order."""

    lengths: np.ndarray  # int64, one per row
    tokens: np.ndarray  # int32 (the selection's input_ids values), sum(lengths) of them


def open_selection(value: str | Location) -> Selection:
    """Check the folder against its manifest (completeness, sizes) and list its data shards."""
    loc = as_location(value, key="SELECTION")
    raw = _read_manifest_bytes(loc)
    manifest = parse_manifest(loc.join(MANIFEST_NAME), raw)
    if manifest is None:
        raise ExportError(
            f"{loc.url} has no complete {MANIFEST_NAME}: the selection was not finished; "
            "rerun the select stage"
        )
    files: Mapping[str, Mapping[str, Any]] = manifest["files"]
    problems = verify_files(loc, manifest, verify_sha256=False)
    if problems:
        raise BadDataError(
            f"{loc.url} does not match its manifest ({len(problems)} problems: "
            + "; ".join(problems[:5]) + "): rerun the select stage"
        )
    shards = tuple(
        Shard(rel, int(entry["size"]), str(entry["sha256"]))
        for rel, entry in sorted(files.items()) if fnmatch.fnmatch(rel, SHARD_GLOB)
    )
    expected = manifest.get("selection", {}).get("num_shards")
    if not shards or (expected is not None and len(shards) != expected):
        raise BadDataError(
            f"{loc.url}: its manifest lists {len(shards)} data shards, expected {expected}"
        )
    return Selection(loc, manifest, hashlib.sha256(raw).hexdigest(), _seq_len(loc, manifest),
                     shards)


def _read_manifest_bytes(loc: Location) -> bytes:
    try:
        return storage.read_bytes(loc.join(MANIFEST_NAME))
    except FileNotFoundError:
        raise ExportError(
            f"{loc.url} has no {MANIFEST_NAME}: not a selection folder, or its select stage "
            "did not finish; rerun the select stage"
        ) from None


def _seq_len(loc: Location, manifest: Mapping[str, Any]) -> int:
    """The run's chunk length, from the run config recorded in the manifest."""
    run = (manifest.get("config") or {}).get("run") or {}
    seq_len = run.get("seq_len")
    if not isinstance(seq_len, int) or seq_len < 1:
        raise ExportError(f"{loc.url}: its {MANIFEST_NAME} records no run seq_len")
    return seq_len


def read_shard(selection: Selection, shard: Shard) -> ShardTokens:
    """A shard's token column, after checking its bytes against the manifest's sha256."""
    import pyarrow as pa
    import pyarrow.compute as pc
    import pyarrow.parquet as pq

    loc = selection.location.join(shard.rel)
    if loc.is_local:  # hash the file, then memory-map it (page-cached: no second disk read)
        digest = storage.file_sha256(loc)
        source: Any = loc.path
    else:
        data = storage.read_bytes(loc)
        digest = hashlib.sha256(data).hexdigest()
        source = pa.BufferReader(data)
    if digest != shard.sha256:
        raise BadDataError(
            f"{loc.url}: sha256 differs from {selection.location.url}/{MANIFEST_NAME}; "
            "the selection was modified: rerun the select stage"
        )
    column = pq.read_table(source, columns=["input_ids"], memory_map=loc.is_local)["input_ids"]
    ids = column.combine_chunks() if column.num_chunks != 1 else column.chunk(0)
    if ids.null_count:
        raise BadDataError(f"{loc.url}: {ids.null_count} rows have no input_ids")
    lengths = pc.list_value_length(ids).to_numpy(zero_copy_only=False).astype(np.int64)
    tokens = ids.flatten().to_numpy(zero_copy_only=False)
    return ShardTokens(lengths, tokens)
