"""Atomic writes and completion records: a killed job never leaves a file that looks finished.

Every output is written to a temp name in the same directory and renamed into place; a stage
marks a unit of work done only after all its files are in place, by writing a small JSON record.
"""

from __future__ import annotations

import contextlib
import json
import os
import tempfile
from collections.abc import Iterator
from pathlib import Path
from typing import Any

TMP_PREFIX = ".tmp-"


@contextlib.contextmanager
def atomic_path(path: str | Path) -> Iterator[Path]:
    """Yield a temp path beside `path`; rename it onto `path` only if the block succeeds."""
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    fd, tmp = tempfile.mkstemp(prefix=TMP_PREFIX + path.name + ".", dir=path.parent)
    os.close(fd)
    tmp_path = Path(tmp)
    os.chmod(tmp_path, 0o666 & ~_umask())  # mkstemp makes 0600; outputs are meant to be shared
    try:
        yield tmp_path
        _fsync_file(tmp_path)
        os.replace(tmp_path, path)
    finally:
        if tmp_path.exists():
            tmp_path.unlink()


def _umask() -> int:
    current = os.umask(0)
    os.umask(current)
    return current


def _fsync_file(path: Path) -> None:
    with open(path, "rb+") as handle:
        os.fsync(handle.fileno())


def write_text_atomic(path: str | Path, text: str) -> None:
    """Write `text` to `path` atomically."""
    with atomic_path(path) as tmp:
        tmp.write_text(text, encoding="utf-8")


def write_json_atomic(path: str | Path, payload: Any) -> None:
    """Write JSON (sorted keys, indented) atomically."""
    write_text_atomic(path, json.dumps(payload, indent=2, sort_keys=True, default=str) + "\n")


def write_parquet_atomic(
    path: str | Path, table: Any, compression: str = "zstd", row_group_size: int | None = None
) -> None:
    """Write an Arrow table to parquet atomically (`row_group_size` rows per row group; None:
    pyarrow's default, one group up to 1Mi rows)."""
    import pyarrow.parquet as pq

    with atomic_path(path) as tmp:
        pq.write_table(table, tmp, compression=compression, row_group_size=row_group_size)


def remove_stale_temps(directory: str | Path) -> int:
    """Delete temp files a killed run left behind; return how many."""
    directory = Path(directory)
    if not directory.exists():
        return 0
    stale = [p for p in directory.rglob(TMP_PREFIX + "*") if p.is_file()]
    for p in stale:
        p.unlink()
    return len(stale)


def read_json(path: str | Path) -> Any:
    """Read a JSON file."""
    return json.loads(Path(path).read_text(encoding="utf-8"))


def read_json_object(path: str | Path) -> dict | None:
    """A JSON object from `path`, or None when the file is missing, torn or not an object.

    For records a killed job may have left half-written: None means "redo", never a crash.
    """
    try:
        value = read_json(path)
    except (OSError, ValueError):
        return None
    return value if isinstance(value, dict) else None
