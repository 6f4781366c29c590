"""Export a selection for a trainer, shard by shard, resumably; export.json last.

Each selection data shard is one unit: its output files (deterministic names from the shard's
name) are written whole, then its completion record (colorfilter.io.commit: data first, record
last). A rerun trusts a shard only through a record whose files are all there with their sizes
and whose identity is this export's, and redoes every other shard, so a kill -9 at any moment
reruns to byte-identical files. `data_paths.txt` and `export.json` (what the export came from,
how it was made, counts, every file's size and sha256) are written after all shards.
"""

from __future__ import annotations

import hashlib
import time
from dataclasses import dataclass
from datetime import datetime, timezone
from types import ModuleType
from typing import Any

import numpy as np

from colorfilter.dataset.manifest import package_versions
from colorfilter.export import megatron, olmo
from colorfilter.export.outdir import (
    EXPORT_NAME,
    PATHS_NAME,
    prepare_out,
    record_name,
)
from colorfilter.export.outputs import check_lengths, typed_tokens, write_file
from colorfilter.export.source import ExportError, Selection, Shard, open_selection, read_shard
from colorfilter.export.vocab import Vocabulary, find_vocabulary
from colorfilter.io import storage
from colorfilter.io.commit import EXPORT_FORMAT, Unit, commit_unit, committed
from colorfilter.io.location import Location
from colorfilter.io.preflight import check_readable, check_writable
from colorfilter.progress import Progress

FORMATS: dict[str, ModuleType] = {olmo.NAME: olmo, megatron.NAME: megatron}
EXPORT_VERSION = 1
ORDER = ("the selection's row order: data shards in name order, rows in file order (its seeded "
         "order, as listed by its indices.npy); output files sort in that order")


@dataclass(frozen=True)
class ExportRequest:
    """What `colorfilter export` was asked: SELECTION, OUT, the format, and the options."""

    selection: str | Location
    out: str | Location
    format: str
    overwrite: bool = False
    vocab_size: int | None = None


@dataclass(frozen=True)
class Plan:
    """Everything fixed before the first shard: the source, where, how, and the identity."""

    selection: Selection
    out: Location
    fmt: ModuleType
    vocab: Vocabulary
    dtype: np.dtype

    @property
    def identity(self) -> dict[str, Any]:
        return {
            "format": self.fmt.NAME,
            "version": EXPORT_VERSION,
            "selection_manifest_sha256": self.selection.manifest_sha256,
            "seq_len": self.selection.seq_len,
            "dtype": str(self.dtype),
            "vocab_size": self.vocab.size,
        }


def plan_export(request: ExportRequest) -> Plan:
    """Check the request, the selection and OUT; fix dtype and vocabulary (no writes)."""
    fmt = FORMATS.get(request.format)
    if fmt is None:
        raise ExportError(f"--format must be one of {', '.join(FORMATS)}, got {request.format!r}")
    source = check_readable(request.selection, "SELECTION")
    out = check_writable(request.out, "OUT")
    inside = out.scheme == source.scheme and (out.path + "/").startswith(source.path + "/")
    if inside:
        raise ExportError(f"OUT {out.url} is inside the selection folder {source.url}")
    selection = open_selection(source)
    vocab = find_vocabulary(selection, request.vocab_size)
    return Plan(selection, out, fmt, vocab, fmt.dtype_for(vocab.size))


def export_selection(request: ExportRequest) -> dict[str, Any]:
    """Export (or finish exporting) a selection; returns a summary for the CLI."""
    started = time.perf_counter()
    plan = plan_export(request)
    finished = prepare_out(plan.out, plan.identity, request.overwrite)
    if finished is not None:
        return _summary(plan, finished, reused=len(plan.selection.shards), noop=True,
                        seconds=time.perf_counter() - started)
    shards = plan.selection.shards
    records = [plan.out.join(record_name(s.stem)) for s in shards]
    trusted = committed(records)
    progress = Progress(f"export: {plan.fmt.NAME}", total=len(shards), unit="tokens")
    done: list[dict[str, Any]] = []
    reused = 0
    for shard, record in zip(shards, records):
        meta = _trusted_meta(trusted.get(record.url), plan)
        if meta is None:
            meta = export_shard(plan, shard, record)
        else:
            reused += 1
        done.append(meta)
        progress.update(1, meta["tokens"])
    progress.close(f"({reused} shards already done, skipped)")
    manifest = finish(plan, done)
    return _summary(plan, manifest, reused, noop=False, seconds=time.perf_counter() - started)


def _trusted_meta(record: Unit | None, plan: Plan) -> dict[str, Any] | None:
    meta = record.meta if record is not None else None
    if meta is None or meta.get("identity") != plan.identity:
        return None
    if sorted(meta.get("files", {})) != sorted(record.objects):
        return None
    return dict(meta)


def export_shard(plan: Plan, shard: Shard, record: Location) -> dict[str, Any]:
    """Write one shard's files, then its record; the record's meta says what they hold."""
    where = plan.selection.location.join(shard.rel).url
    storage.remove(record)  # an untrusted record: gone before its objects are rewritten
    rows = read_shard(plan.selection, shard)
    check_lengths(rows, plan.selection.seq_len, where)
    tokens = typed_tokens(rows, plan.dtype, plan.vocab.size, where)
    outputs = plan.fmt.shard_files(shard.stem, rows, tokens, plan.selection.seq_len)
    files = {}
    for output in outputs:
        written = write_file(plan.out.join(output.name), output)
        files[output.name] = {**written, "sequences": output.sequences, "tokens": output.tokens,
                              "extra": output.extra}
    meta = {
        "identity": plan.identity,
        "shard": shard.rel,
        "sequences": len(rows.lengths),
        "tokens": int(rows.lengths.sum()),
        "short_sequences": int(np.count_nonzero(rows.lengths < plan.selection.seq_len)),
        "files": files,
    }
    commit_unit(record, [plan.out.join(name) for name in files], meta)
    return meta


def finish(plan: Plan, done: list[dict[str, Any]]) -> dict[str, Any]:
    """data_paths.txt, then export.json (the last write: the export is complete)."""
    names = [name for meta in done for name in meta["files"]]
    paths_text = "".join(f"{path}\n" for path in plan.fmt.data_paths(plan.out, names)).encode()
    storage.write_bytes(plan.out.join(PATHS_NAME), paths_text)
    files = {
        name: {**entry, "shard": meta["shard"]}
        for meta in done for name, entry in meta["files"].items()
    }
    manifest = {
        "format": EXPORT_FORMAT,
        "format_version": EXPORT_VERSION,
        "created_at": datetime.now(timezone.utc).isoformat(timespec="seconds"),
        "identity": plan.identity,
        "trainer_format": plan.fmt.NAME,
        "source": plan.selection.describe(),
        "seq_len": plan.selection.seq_len,
        "dtype": str(plan.dtype),
        "vocab": plan.vocab.describe(),
        "order": ORDER,
        "eos": plan.fmt.EOS_RULE,
        "counts": {
            "shards": len(done),
            "sequences": sum(m["sequences"] for m in done),
            "tokens": sum(m["tokens"] for m in done),
            "short_sequences": sum(m["short_sequences"] for m in done),
            "files": len(files),
            "bytes": sum(e["size"] for e in files.values()),
        },
        plan.fmt.NAME: plan.fmt.summary(list(files.values()), plan.selection.seq_len, plan.dtype),
        "data_paths": PATHS_NAME,
        "files": {
            **files,
            PATHS_NAME: {"size": len(paths_text),
                         "sha256": hashlib.sha256(paths_text).hexdigest()},
        },
        "packages": package_versions(("colorfilter", "numpy", "pyarrow")),
        "complete": True,
    }
    storage.write_json(plan.out.join(EXPORT_NAME), manifest)
    return manifest


def _summary(plan: Plan, manifest: dict[str, Any], reused: int, noop: bool,
             seconds: float) -> dict[str, Any]:
    counts = manifest.get("counts", {})
    return {
        "out": plan.out.url,
        "export": plan.out.join(EXPORT_NAME).url,
        "format": plan.fmt.NAME,
        "dtype": str(plan.dtype),
        "seq_len": plan.selection.seq_len,
        "vocab_size": plan.vocab.size,
        "shards": counts.get("shards"),
        "shards_reused": reused,
        "sequences": counts.get("sequences"),
        "tokens": counts.get("tokens"),
        "short_sequences": counts.get("short_sequences"),
        "files": counts.get("files"),
        "bytes": counts.get("bytes"),
        "noop": noop,
        "seconds": round(seconds, 2),
    }
