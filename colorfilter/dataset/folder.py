"""One selection folder: its spec, and the files that finish it (indices, histogram, card, and
the manifest last), what an earlier run left in it, and its summary.

A folder is a Location (local or on a bucket): every file is written whole or not at all, and
hashed from the bytes written, so the manifest never reads the folder back.
"""

from __future__ import annotations

import fnmatch
import hashlib
import io
import logging
import math
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Literal

import numpy as np

from colorfilter.dataset import manifest as mf
from colorfilter.dataset.card import HISTOGRAM_NAME, INDICES_NAME, CardInfo, render_card
from colorfilter.dataset.histogram import ScoreHistogram, histogram_summary, plot_histogram
from colorfilter.dataset.join import LM_SCORES, ScoreColumns
from colorfilter.dataset.provenance import describe_inputs
from colorfilter.dataset.runfiles import load_array
from colorfilter.dataset.runs import index_paths
from colorfilter.dataset.schema import DATA_DIR, shard_name
from colorfilter.errors import BadDataError
from colorfilter.io import storage
from colorfilter.io.atomic import TMP_PREFIX
from colorfilter.io.location import Location
from colorfilter.names import LM_FREE_METHODS

log = logging.getLogger(__name__)

README_NAME = "README.md"
LEGACY_SPILL_DIR = TMP_PREFIX + "spill"
Threshold = float | Literal["min_selected"] | None
ROW_ORDER = (
    "ascending splitmix64(seq_id ^ salt), salt = splitmix64(splitmix64(seed) ^ "
    "u64le(blake2b('dataset.release-order/0', digest_size=8))) (colorfilter.hashing); "
    "indices.npy lists seq_ids in row order"
)


@dataclass(frozen=True)
class SelectionSpec:
    """What was selected and how it is laid out: the part of the config this stage hashes."""

    method: str
    tau: float
    params: Mapping[str, Any]
    seed: int
    rows_per_shard: int
    histogram_bins: int

    def resolved(self, run_config: Mapping[str, Any] | None) -> dict[str, Any]:
        return {
            "selection": {"method": self.method, "tau": self.tau, "params": dict(self.params)},
            "output": {
                "rows_per_shard": self.rows_per_shard,
                "seed": self.seed,
                "histogram_bins": self.histogram_bins,
            },
            "run": dict(run_config) if run_config is not None else None,
        }


@dataclass
class SelectionJob:
    """One folder to write: the selected seq_ids and what its manifest and card say."""

    seq_ids: np.ndarray
    out_dir: Path | Location  # a Location from write_selections on
    method: str
    tau: float
    params: Mapping[str, Any] = field(default_factory=dict)
    seed: int = 0
    rows_per_shard: int = 100_000
    threshold: Threshold = "min_selected"
    command: str | None = None
    manifest_extra: Mapping[str, Any] | None = None
    cascade: Any = None  # a distill.candidates.CascadeReport when the scores are the cascade's


@dataclass(frozen=True)
class PoolInputs:
    """The pool and run-wide facts every folder of one `write_selections` call shares."""

    token_dir: Path | Location
    score_dir: Path | Location
    tokenizer_dir: Path | Location
    config: Mapping[str, Any] | None = None
    skipped: Mapping[str, int] | None = None
    model_dirs: Mapping[str, str | Path | Location] | None = None
    extra_inputs: Sequence[str | Path | Location] = ()
    repo_id: str | None = None
    checksum_inputs: bool = True
    histogram_bins: int = 100
    score_columns: ScoreColumns = LM_SCORES  # which score shard column is each output one
    missing_reason: str = "unscored"  # pool rows without a score: "prefiltered" in the cascade
    scored_by: str = "score"  # the stage that writes the score shards (named when one is missing)


@dataclass
class PendingFolder:
    number: int  # the job's place in the call's list
    key: str
    job: SelectionJob
    spec: SelectionSpec
    resolved: dict[str, Any]
    identity: dict[str, str]
    n_rows: int = 0
    reducers_left: int = 0
    counts: dict[str, Any] = field(default_factory=dict)
    files: dict[str, dict[str, Any]] = field(default_factory=dict)  # written: size and sha256
    reducers: list[Location] = field(default_factory=list)  # their records, removed at the end


def finish_folder(
    item: PendingFolder, inputs: PoolInputs, work_dir: Location, provenance: dict[str, Any]
) -> dict[str, Any]:
    """indices.npy, the histogram, the card, then the manifest (last): the folder is done."""
    job, counts, out_dir = item.job, item.counts, item.job.out_dir
    num_shards = max(1, math.ceil(item.n_rows / job.rows_per_shard))
    shards = sorted(loc.name for loc in storage.list_dir(out_dir.join(DATA_DIR))
                    if fnmatch.fnmatch(loc.name, "train-*.parquet"))
    if shards != [shard_name(i, num_shards) for i in range(num_shards)]:
        raise BadDataError(f"{out_dir}: its data shards are not the {num_shards} expected")
    ids_path, pos_path = index_paths(work_dir, item.key)
    row_order = np.empty(item.n_rows, dtype=np.uint64)
    row_order[load_array(pos_path)] = load_array(ids_path)
    buffer = io.BytesIO()
    np.save(buffer, row_order)
    _write(item, INDICES_NAME, buffer.getvalue())
    hist = ScoreHistogram(edges=np.asarray(counts["edges"]))
    hist.pool, hist.selected = counts["pool_hist"], counts["hist"]
    hist.non_finite = counts["pool_non_finite"]
    selected_min, selected_max = counts["selected_min"], counts["selected_max"]
    line = selected_min if job.threshold == "min_selected" else job.threshold
    line = line if line is None or math.isfinite(line) else None
    counts_out = _counts(item, inputs)
    cascade = job.cascade.for_selection(job.method, job.tau, selected_min) if job.cascade else None
    title = f"{job.method}, tau={job.tau:g}: {item.n_rows} selected"
    png = io.BytesIO()
    plot_histogram(png, hist, line, title)
    _write(item, HISTOGRAM_NAME, png.getvalue())
    card = CardInfo(
        method=job.method,
        tau=job.tau,
        params=item.spec.params,
        counts=counts_out,
        config_hash=item.identity["config_hash"],
        seed=job.seed,
        num_shards=num_shards,
        threshold=line,
        command=job.command,
        repo_id=inputs.repo_id,
        cascade=cascade,
    )
    _write(item, README_NAME, render_card(card).encode("utf-8"))
    fields = {
        **item.identity,
        "config": item.resolved,
        "selection": {
            **item.resolved["selection"],
            "seed": job.seed,
            "threshold": line,
            "rows_per_shard": job.rows_per_shard,
            "num_shards": num_shards,
            "row_order": ROW_ORDER,
        },
        "counts": counts_out,
        "scores": {
            "selected_min": _finite_or_none(selected_min),
            "selected_max": _finite_or_none(selected_max),
            "histogram": histogram_summary(hist),
            "columns": dict(inputs.score_columns),  # output column <- score shard column
            "selected_without_score": int(counts.get("selected_unscored", 0)),
        },
        **provenance,
        "command": job.command,
        "cascade": cascade,
        "extra": dict(job.manifest_extra or {}),
    }
    written = mf.write_manifest(out_dir, fields, known=item.files)
    for record in item.reducers:  # the reducers' records: the manifest now says it all
        storage.remove(record)
    return summary(out_dir, written, noop=False)


def _counts(item: PendingFolder, inputs: PoolInputs) -> dict[str, Any]:
    """The manifest's counts: every pool chunk selected, not selected or skipped with a reason.

    Chunks without a score were never eligible for a method that ranks scores (skipped: the
    inputs' `missing_reason`, e.g. prefiltered by the cascade); a method that ranks the whole
    pool without them (random, dsir, color_distilled) simply did not select them.
    """
    counts = item.counts
    upstream = dict(inputs.skipped or {})
    skipped = dict(upstream)
    not_selected = counts["not_selected"]
    unscored = (("non_finite_score", counts["non_finite"]),)
    if item.job.method in LM_FREE_METHODS:
        not_selected += counts["unscored"]
    else:
        unscored += ((inputs.missing_reason, counts["unscored"]),)
    for reason, n in unscored:
        if n:
            skipped[reason] = skipped.get(reason, 0) + n
    return mf.build_counts(
        candidates=counts["token_rows"] + sum(upstream.values()),
        selected=item.n_rows,
        not_selected=not_selected,
        skipped=skipped,
        selected_tokens=counts["selected_tokens"],
    )


def _write(item: PendingFolder, rel: str, data: bytes) -> None:
    storage.write_bytes(item.job.out_dir.join(rel), data)
    item.files[rel] = {"size": len(data), "sha256": hashlib.sha256(data).hexdigest()}


def provenance(
    tokenizer_dir: str | Path | Location,
    model_dirs: Mapping[str, str | Path | Location] | None,
    inputs: Sequence[str | Path | Location],
    checksum_inputs: bool,
) -> dict[str, Any]:
    """Hashes of the tokenizer, checkpoints and input files; package versions."""
    return {
        "tokenizer": {"path": str(tokenizer_dir), "sha256": storage.folder_sha256(tokenizer_dir)},
        "models": {
            name: {"path": str(path), "sha256": storage.folder_sha256(path)}
            for name, path in sorted((model_dirs or {}).items())
        },
        "inputs": describe_inputs(inputs, checksum=checksum_inputs),
        "packages": mf.package_versions(),
    }


def clear_outputs(out_dir: Location, keep: set[str]) -> None:
    """Delete what an earlier (incomplete or different) run wrote, but the `keep` files
    (relative paths: this plan's finished reducers' shards and records); leave other files."""
    storage.remove(out_dir.join(mf.MANIFEST_NAME))  # first: the folder is now incomplete
    for info in storage.find(out_dir):
        rel = info.location.relative_to(out_dir)
        parts = rel.split("/")
        ours = (
            parts[-1].startswith(TMP_PREFIX)  # temp files, reducers' records
            or parts[0] == LEGACY_SPILL_DIR
            or (parts[0] == DATA_DIR and fnmatch.fnmatch(rel, f"{DATA_DIR}/train-*.parquet"))
            or rel in (INDICES_NAME, HISTOGRAM_NAME, README_NAME)
        )
        if ours and rel not in keep:
            storage.remove(info.location)
    storage.makedirs(out_dir)


def complete_manifest(out_dir: Location, identity: Mapping[str, str]) -> dict[str, Any] | None:
    """The manifest if the folder is complete for this config, selection and inputs."""
    manifest = mf.read_manifest(out_dir)
    if manifest is None:
        return None
    if any(manifest.get(key) != value for key, value in identity.items()):
        log.warning("%s holds another selection or config: rewriting it", out_dir)
        return None
    files = manifest.get("files", {})
    sizes = storage.stat_many(out_dir.join(rel) for rel in files)
    if any(sizes[out_dir.join(rel).url] != entry["size"] for rel, entry in files.items()):
        return None
    return manifest


def _finite_or_none(value: float) -> float | None:
    return value if math.isfinite(value) else None


def summary(out_dir: Location, manifest: Mapping[str, Any], *, noop: bool) -> dict[str, Any]:
    return {
        "out_dir": str(out_dir),
        "config_hash": manifest["config_hash"],
        "counts": manifest["counts"],
        "num_shards": manifest["selection"]["num_shards"],
        "threshold": manifest["selection"]["threshold"],
        "files": sorted(manifest["files"]),
        "noop": noop,
    }
