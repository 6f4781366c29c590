"""Resolve configured inputs (files, globs, bucket URLs, hf:// names) into a sorted list.

The order is what makes seq_ids deterministic: it depends on the set of inputs, never on how
the user listed them or on what order the file system returns. Inputs may be local paths or
s3://, gs://, hf://datasets/ORG/NAME/... URLs (globs work on buckets): remote ones are checked
with colorfilter.io.preflight before any work (one ConfigError naming the key and the URL) and
keep their URL as `InputFile.uri`; local ones keep their absolute path, so the seq_ids and
records of runs made before buckets were supported stay valid.
`hf://NAME[:CONFIG]` (no `datasets/` prefix, no file suffix) is a hub dataset *name*, read with
`datasets.load_dataset`; it is a different thing from an hf:// file URL.
"""

from __future__ import annotations

import glob
import os
from dataclasses import dataclass
from pathlib import Path

from colorfilter.errors import ConfigError
from colorfilter.io import storage
from colorfilter.io.config import StorageConfig
from colorfilter.io.location import Location
from colorfilter.io.preflight import check_readable

HF_PREFIX = "hf://"
_GLOB_CHARS = set("*?[")
JSONL_SUFFIXES = (".jsonl", ".json", ".ndjson")
COMPRESSION_SUFFIXES = (".gz", ".zst", ".zstd")


@dataclass(frozen=True)
class InputFile:
    """One unit of input: a local file, a local HF dataset dir, or one shard of a hub dataset."""

    uri: str  # absolute path, SCHEME://BUCKET/KEY, or hf://NAME[:CONFIG]#SHARD-of-N
    format: str  # jsonl | parquet | hf_disk | hf_hub
    size: int  # bytes on disk (0 for hub shards)


HF_REPO_TYPES = ("datasets/", "models/", "spaces/", "buckets/")
_DATA_SUFFIXES = JSONL_SUFFIXES + (".parquet",) + COMPRESSION_SUFFIXES


def is_hf_dataset_name(text: str, configured: str = "auto") -> bool:
    """True for `hf://NAME[:CONFIG]` (a hub dataset read with `datasets`), False for a file URL.

    File URLs name a repo type (`hf://datasets/ORG/NAME/...`), a data file or a glob.
    """
    if not text.startswith(HF_PREFIX):
        return False
    if configured == "hf":
        return True
    body = text[len(HF_PREFIX):].partition("#")[0]
    if body.startswith(HF_REPO_TYPES) or _GLOB_CHARS & set(body):
        return False
    return not body.lower().endswith(_DATA_SUFFIXES)


def detect_format(path: str, configured: str = "auto") -> str:
    """The reader for `path`: by configuration, else by extension."""
    if configured == "hf":
        return "hf_hub" if path.startswith(HF_PREFIX) else "hf_disk"
    if configured != "auto":
        return configured
    if is_hf_dataset_name(path):
        return "hf_hub"
    if "://" in path:
        return format_from_name(path.rsplit("/", 1)[-1], path)
    p = Path(path)
    if p.is_dir():
        if (p / "dataset_info.json").exists() or (p / "state.json").exists():
            return "hf_disk"
        raise ConfigError(f"{path}: is a directory, not a data file or a saved HF dataset")
    return format_from_name(p.name, path)


def format_from_name(name: str, path: str) -> str:
    """jsonl or parquet by the file name's suffixes (ConfigError naming `path` otherwise)."""
    name = name.lower()
    for suffix in COMPRESSION_SUFFIXES:
        if name.endswith(suffix):
            name = name[: -len(suffix)]
            if not name.endswith(JSONL_SUFFIXES):
                return "jsonl"  # e.g. data.gz: C4-style files are JSON lines
    if name.endswith(JSONL_SUFFIXES):
        return "jsonl"
    if name.endswith(".parquet"):
        return "parquet"
    raise ConfigError(
        f"{path}: unknown file type; expected .jsonl/.json[.gz|.zst] or .parquet "
        "(or set data.format)"
    )


def resolve_inputs(
    patterns: list[str], key: str, configured_format: str = "auto",
    storage: StorageConfig | None = None,
) -> list[InputFile]:
    """Expand files and globs under config key `key`, check they are readable, sort them."""
    found: dict[str, InputFile] = {}
    for pattern in patterns:
        if is_hf_dataset_name(pattern, configured_format):
            found[pattern] = InputFile(pattern, "hf_hub", 0)
            continue
        loc = Location.parse(pattern, storage, key)  # an unknown scheme fails here
        if not loc.is_local:
            found.update((i.uri, i) for i in _resolve_remote(loc, key, configured_format))
            continue
        for path in _expand(pattern, key):
            resolved = str(Path(path).resolve())
            fmt = detect_format(resolved, configured_format)
            _check_readable(resolved, key)
            size = _size(Path(resolved))
            found[resolved] = InputFile(resolved, fmt, size)
    return [found[k] for k in sorted(found)]


def _resolve_remote(loc: Location, key: str, configured_format: str) -> list[InputFile]:
    """A bucket or hub file, or a glob over one: preflight first, then list with sizes."""
    check_readable(loc, key)
    if loc.has_glob:
        matches = [(f.location, f.size) for f in storage.glob_files(loc)]
    elif storage.is_dir(loc):
        raise ConfigError(
            f"{key}: '{loc.url}' is a folder; name its files or a glob such as "
            f"'{loc.url}/*.json.gz' (saved HF datasets are read from local disk only)"
        )
    else:
        matches = [(loc, storage.size(loc))]
    items = []
    for match, size in matches:
        fmt = detect_format(match.url, configured_format)
        if fmt == "hf_disk":
            raise ConfigError(f"{key}: '{match.url}': saved HF datasets are read from local "
                              "disk only; use parquet or JSON lines files on buckets")
        items.append(InputFile(match.url, fmt, size))
    return items


def _check_readable(path: str, key: str) -> None:
    """Open the file now, so an unreadable input fails before hours of work, naming the file."""
    if Path(path).is_dir():
        return
    try:
        with open(path, "rb") as handle:
            handle.read(1)
    except OSError as exc:
        raise ConfigError(f"{key}: cannot read '{path}': {exc.strerror or exc}") from exc


def _expand(pattern: str, key: str) -> list[str]:
    expanded = os.path.expanduser(pattern)
    if _GLOB_CHARS & set(expanded):
        matches = sorted(glob.glob(expanded, recursive=True))
        matches = [m for m in matches if Path(m).is_file() or detect_dir_dataset(m)]
        if not matches:
            raise ConfigError(f"{key}: the pattern '{pattern}' matches no files")
        return matches
    if not Path(expanded).exists():
        raise ConfigError(f"{key}: no such file or directory: '{pattern}'")
    return [expanded]


def detect_dir_dataset(path: str) -> bool:
    p = Path(path)
    return p.is_dir() and ((p / "dataset_info.json").exists() or (p / "state.json").exists())


def _size(path: Path) -> int:
    if path.is_dir():
        return sum(f.stat().st_size for f in path.rglob("*") if f.is_file())
    return path.stat().st_size
