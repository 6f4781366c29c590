"""The export folder OUT: its names, what an earlier run left in it, and the refusals.

OUT holds the data files (`<shard stem>...`), one completion record per selection shard
(`<shard stem>.done.json`, colorfilter.io.commit: the shard's files first, the record last),
`data_paths.txt`, and `export.json`, written last. An export is identified by what it was made
from and how (format, the selection manifest's sha256, dtype, seq_len, vocabulary size):
- OUT empty, or holding this export (finished or not): go on; finished units are kept.
- OUT holding an export of something else, or files that no export wrote and no export at
  all: refused (exit 2) unless `--overwrite`, which removes what an export writes (export.json
  first, so nothing there looks finished any more) and leaves other files alone.
"""

from __future__ import annotations

import fnmatch
from collections.abc import Mapping
from dataclasses import dataclass, field
from typing import Any

from colorfilter.export.source import ExportError
from colorfilter.io import storage
from colorfilter.io.atomic import TMP_PREFIX
from colorfilter.io.commit import Unit, problems, units
from colorfilter.io.location import Location

EXPORT_NAME = "export.json"
PATHS_NAME = "data_paths.txt"
RECORD_SUFFIX = ".done.json"
DATA_PATTERNS = ("train-*-of-*.npy", "train-*-of-*.bin", "train-*-of-*.idx")


def record_name(stem: str) -> str:
    return stem + RECORD_SUFFIX


def is_ours(name: str) -> bool:
    """A name an export writes (top level of OUT), or a temp file of one."""
    if name.startswith(TMP_PREFIX):
        name = name[len(TMP_PREFIX):].rsplit(".", 1)[0]
    return (name in (EXPORT_NAME, PATHS_NAME) or name.endswith(RECORD_SUFFIX)
            or any(fnmatch.fnmatch(name, p) for p in DATA_PATTERNS))


@dataclass
class OutState:
    """What OUT holds now: file sizes, and the identities of the exports found there."""

    sizes: dict[str, int]
    export: Unit | None  # export.json, when it is a complete export manifest
    identities: list[Mapping[str, Any]] = field(default_factory=list)

    @property
    def foreign(self) -> list[str]:
        """Files no export wrote (an export.json that is not one counts too)."""
        theirs = {EXPORT_NAME} if EXPORT_NAME in self.sizes and self.export is None else set()
        return sorted(n for n in self.sizes if not is_ours(n) or n in theirs)


def read_state(out: Location) -> OutState:
    """One listing of OUT, export.json and the records' identities."""
    sizes = {info.location.relative_to(out): info.size for info in storage.find(out)
             if info.location != out}
    records = [out.join(n) for n in sorted(sizes) if n.endswith(RECORD_SUFFIX) and "/" not in n]
    found = units([*records, out.join(EXPORT_NAME)] if EXPORT_NAME in sizes else records)
    manifest = found.pop(out.join(EXPORT_NAME).url, None)
    export = manifest if manifest is not None and manifest.kind == "export" else None
    identities = [export.meta["identity"]] if export and "identity" in export.meta else []
    identities += [unit.meta["identity"] for unit in found.values() if "identity" in unit.meta]
    return OutState(sizes, export, identities)


def prepare_out(out: Location, identity: Mapping[str, Any], overwrite: bool) -> dict | None:
    """Refuse or clear OUT as the module docstring says; the finished export.json when OUT
    already holds this very export, whole, else None (and no export.json is left claiming it)."""
    state = read_state(out)
    other = [i for i in state.identities if dict(i) != dict(identity)]
    if other and not overwrite:
        theirs = other[0]
        raise ExportError(
            f"{out.url} holds another export ({theirs.get('format')} of selection manifest "
            f"{str(theirs.get('selection_manifest_sha256'))[:12]}, dtype {theirs.get('dtype')}); "
            "choose another OUT or pass --overwrite"
        )
    if state.foreign and not state.identities and not overwrite:
        raise ExportError(
            f"{out.url} is not empty and holds no colorfilter export ({len(state.foreign)} "
            f"other files, e.g. {state.foreign[0]}); choose an empty OUT or pass --overwrite"
        )
    if other:
        clear(out, state)
        return None
    if state.export is not None and _whole(out, state):
        return {**state.export.meta, "files": dict(state.export.objects)}
    storage.remove(out.join(EXPORT_NAME))  # unfinished or damaged: the shards' records decide
    _remove_temps(out, state)
    return None


def _whole(out: Location, state: OutState) -> bool:
    """export.json's files are all there at their recorded sizes (io.commit's check)."""
    listing = {out.join(name).url: size for name, size in state.sizes.items()}
    return state.export is not None and not problems(state.export, listing, verify_sha256=False)


def clear(out: Location, state: OutState) -> None:
    """Remove what an export wrote in OUT: export.json first, then the records, then the rest."""
    storage.remove(out.join(EXPORT_NAME))
    names = sorted(n for n in state.sizes if "/" not in n and is_ours(n) and n != EXPORT_NAME)
    for name in sorted(names, key=lambda n: not n.endswith(RECORD_SUFFIX)):
        storage.remove(out.join(name))


def _remove_temps(out: Location, state: OutState) -> None:
    """Temp files that a killed run left on local disk (object stores leave none)."""
    for name in state.sizes:
        if name.startswith(TMP_PREFIX) and "/" not in name and is_ours(name):
            storage.remove(out.join(name))
