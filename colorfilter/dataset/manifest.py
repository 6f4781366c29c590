"""The manifest of a released selection: what produced it, from what, and what it holds.

Written last into the folder, so its presence (with `complete: true`) marks the folder finished.
Hashes are streamed sha256 of file bytes; a directory's hash covers its sorted
(relative path, file sha256) pairs, so it does not depend on listing order or mtimes.
"""

from __future__ import annotations

import os
from collections.abc import Callable, Iterable, Mapping
from datetime import datetime, timezone
from pathlib import Path
from typing import Any

from colorfilter.fingerprint import fingerprint
from colorfilter.io import storage
from colorfilter.io.atomic import TMP_PREFIX
from colorfilter.io.commit import MANIFEST_FORMAT, Unit, parse_unit, problems
from colorfilter.io.location import Location, as_location

MANIFEST_NAME = "manifest.json"
MANIFEST_VERSION = 1
PACKAGES = (
    "colorfilter",
    "torch",
    "transformers",
    "tokenizers",
    "datasets",
    "pyarrow",
    "ray",
    "numpy",
    "huggingface_hub",
)


def config_hash(resolved_config: Mapping[str, Any]) -> str:
    """sha256 of the canonical JSON of a resolved config (colorfilter.fingerprint)."""
    return fingerprint(resolved_config)


def list_files(directory: str | Path) -> list[str]:
    """Relative POSIX paths of the regular files under `directory`, sorted."""
    directory = Path(directory)
    return sorted(p.relative_to(directory).as_posix() for p in directory.rglob("*") if p.is_file())


def _listing(folder: Location) -> list[tuple[str, int | None]]:
    """(relative path, size or None when not listed) of every file under a folder, sorted."""
    if folder.is_local:
        return [(rel, None) for rel in list_files(folder.path)]
    found = [(i.location.relative_to(folder), i.size) for i in storage.find(folder)
             if i.location != folder]
    return sorted(found)


def describe_files(
    paths: Iterable[str | Path],
    *,
    checksum: bool = True,
    known: Callable[[Path], str | None] | None = None,
) -> list[dict[str, Any]]:
    """Path, size and (optionally) sha256 of each input file, in the given order.

    `known(path)` may supply a hash recorded when the file was written; files it does not
    know are read and hashed.
    """
    out = []
    for path in paths:
        path = Path(path)
        entry: dict[str, Any] = {"path": str(path), "size": path.stat().st_size}
        if checksum:
            entry["sha256"] = (known(path) if known else None) or storage.file_sha256(path)
        out.append(entry)
    return out


def folder_files(
    folder: str | Path | Location, known: Mapping[str, Mapping[str, Any]] | None = None
) -> dict[str, dict[str, Any]]:
    """{relative path: {size, sha256}} of every file in a selection folder but the manifest.

    `known`: {relative path: {size, sha256}} of files this run wrote (hashed from their bytes);
    a file whose size still matches is not read again, any other file is.
    """
    loc = as_location(folder)
    out = {}
    for rel, listed in _listing(loc):
        if rel == MANIFEST_NAME or any(part.startswith(TMP_PREFIX) for part in rel.split("/")):
            continue
        size = listed if listed is not None else os.path.getsize(os.path.join(loc.path, rel))
        entry = (known or {}).get(rel)
        fresh = entry is not None and entry.get("size") == size and entry.get("sha256")
        out[rel] = {"size": size,
                    "sha256": entry["sha256"] if fresh else storage.file_sha256(loc.join(rel))}
    return out


def package_versions(names: Iterable[str] = PACKAGES) -> dict[str, str | None]:
    """Installed versions (None when a package is absent)."""
    from importlib import metadata

    versions: dict[str, str | None] = {}
    for name in names:
        try:
            versions[name] = metadata.version(name)
        except metadata.PackageNotFoundError:
            versions[name] = None
    return versions


def build_counts(
    *,
    candidates: int,
    selected: int,
    not_selected: int,
    skipped: Mapping[str, int],
    selected_tokens: int,
) -> dict[str, Any]:
    """The manifest's counts; raises ValueError unless candidates = selected + not + skipped."""
    skipped = {reason: int(count) for reason, count in sorted(skipped.items())}
    total = selected + not_selected + sum(skipped.values())
    if candidates != total:
        raise ValueError(
            f"counts do not add up: candidates={candidates} but selected={selected} + "
            f"not_selected={not_selected} + skipped={skipped} = {total}"
        )
    return {
        "candidates": int(candidates),
        "selected": int(selected),
        "not_selected": int(not_selected),
        "skipped": skipped,
        "skipped_total": sum(skipped.values()),
        "selected_tokens": int(selected_tokens),
    }


def write_manifest(
    folder: str | Path | Location,
    fields: Mapping[str, Any],
    known: Mapping[str, Mapping[str, Any]] | None = None,
) -> dict[str, Any]:
    """List (and hash, unless `known`) every file in `folder`, then write manifest.json whole
    (the last write: its presence marks the folder complete)."""
    manifest = {
        "format": MANIFEST_FORMAT,
        "format_version": MANIFEST_VERSION,
        "created_at": datetime.now(timezone.utc).isoformat(timespec="seconds"),
        **fields,
        "files": folder_files(folder, known),
        "complete": True,
    }
    storage.write_json(as_location(folder).join(MANIFEST_NAME), manifest)
    return manifest


def parse_manifest(path: Location, data: bytes | None) -> dict[str, Any] | None:
    """A selection folder's manifest as io.commit reads it (the one reader of every record):
    the manifest when it is a complete selection manifest listing sized files, else None
    (missing, cut short, of another format, or not marked complete)."""
    unit = parse_unit(path, data)
    if unit is None or unit.kind != "manifest":
        return None
    return {**unit.meta, "files": dict(unit.objects)}


def read_manifest(folder: str | Path | Location) -> dict[str, Any] | None:
    """The folder's manifest, or None when it is missing, unreadable or not marked complete."""
    path = as_location(folder).join(MANIFEST_NAME)
    return parse_manifest(path, storage.read_many([path])[path.url])


def verify_files(folder: str | Path | Location, manifest: Mapping[str, Any],
                 verify_sha256: bool = True,
                 sizes: Mapping[str, int | None] | None = None) -> list[str]:  # fmt: skip
    """Problems between the folder and its manifest's file list, as "path: what is wrong"
    (empty when they agree), checked as io.commit checks every unit. `sizes` ({url: size},
    from a listing the caller already made) saves a second one."""
    base = as_location(folder)
    unit = Unit(base.join(MANIFEST_NAME), base, manifest["files"], {}, kind="manifest")
    sizes = sizes if sizes is not None else storage.stat_many(unit.locations())
    worded = []
    for loc, _reason in problems(unit, sizes, verify_sha256):
        rel, size = loc.relative_to(base), sizes.get(loc.url)
        expected = unit.objects[rel]["size"]
        if size is None:
            worded.append(f"{rel}: missing")
        elif size != expected:
            worded.append(f"{rel}: size {size} != {expected}")
        else:
            worded.append(f"{rel}: sha256 differs from the manifest")
    return worded
