"""Resolve configured inputs (files, globs, hf:// names) into a canonical, sorted list.

The order is what makes seq_ids deterministic: it depends on the set of inputs, never on how
the user listed them or on what order the file system returns.
"""

from __future__ import annotations

import glob
import hashlib
import os
from dataclasses import dataclass
from pathlib import Path

from colorfilter.errors import ConfigError

HF_PREFIX = "hf://"
_GLOB_CHARS = set("*?[")
JSONL_SUFFIXES = (".jsonl", ".json", ".ndjson")
COMPRESSION_SUFFIXES = (".gz", ".zst", ".zstd")


@dataclass(frozen=True)
class InputFile:
    """One unit of input: a local file, a local HF dataset dir, or one shard of a hub dataset."""

    uri: str  # absolute path, or hf://NAME[/CONFIG]#SHARD-of-N
    format: str  # jsonl | parquet | hf_disk | hf_hub
    size: int  # bytes on disk (0 for hub shards)


def detect_format(path: str, configured: str = "auto") -> str:
    """The reader for `path`: by configuration, else by extension."""
    if configured == "hf":
        return "hf_hub" if path.startswith(HF_PREFIX) else "hf_disk"
    if configured != "auto":
        return configured
    if path.startswith(HF_PREFIX):
        return "hf_hub"
    p = Path(path)
    if p.is_dir():
        if (p / "dataset_info.json").exists() or (p / "state.json").exists():
            return "hf_disk"
        raise ConfigError(f"{path}: is a directory, not a data file or a saved HF dataset")
    name = p.name.lower()
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
    patterns: list[str], key: str, configured_format: str = "auto"
) -> list[InputFile]:
    """Expand files and globs under config key `key`, check they are readable, sort them."""
    found: dict[str, InputFile] = {}
    for pattern in patterns:
        if pattern.startswith(HF_PREFIX):
            found[pattern] = InputFile(pattern, "hf_hub", 0)
            continue
        for path in _expand(pattern, key):
            resolved = str(Path(path).resolve())
            fmt = detect_format(resolved, configured_format)
            _check_readable(resolved, key)
            size = _size(Path(resolved))
            found[resolved] = InputFile(resolved, fmt, size)
    return [found[k] for k in sorted(found)]


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


def sha256_file(path: str | Path, block: int = 1 << 20) -> str:
    """Streamed sha256 of a file."""
    digest = hashlib.sha256()
    with open(path, "rb") as handle:
        while chunk := handle.read(block):
            digest.update(chunk)
    return digest.hexdigest()
