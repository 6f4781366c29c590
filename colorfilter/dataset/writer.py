"""Write a selection as a released dataset folder, streaming over the pool in bounded memory.

Layout of `out_dir` (normally `OUTPUT/selected/<method>-tau<tau>/`):
  data/train-00000-of-0000N.parquet  zstd shards, rows in a seeded pseudo-random order
  indices.npy                        uint64 seq_ids in exactly that row order
  scores_histogram.png               pool and selected scores, with the threshold
  README.md                          dataset card (YAML front matter for `load_dataset`)
  manifest.json                      provenance, counts and file hashes; written last = complete

How: pass 1 reads only the score column for the histogram range; pass 2 streams each token
shard with its score shard (joined by seq_id), keeps the selected rows, decodes their text, and
spills them, sorted by output position, into a temp file with one row group per output shard;
pass 3 assembles each output shard from those row groups. Only one input shard's selected rows
and one output shard are in memory at a time, plus the selected id set (16 bytes per id).
"""

from __future__ import annotations

import logging
import math
import shutil
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Literal

import numpy as np
import pyarrow as pa
import pyarrow.compute as pc
import pyarrow.parquet as pq

from colorfilter.dataset import manifest as mf
from colorfilter.dataset.card import HISTOGRAM_NAME, INDICES_NAME, CardInfo, render_card
from colorfilter.dataset.histogram import (
    ScoreHistogram,
    finite_range,
    histogram_summary,
    plot_histogram,
)
from colorfilter.dataset.join import SCORE_COLUMNS, ScoreLookup, SelectedIndex
from colorfilter.dataset.schema import (  # noqa: F401 - re-exported
    DATA_DIR,
    OUTPUT_SCHEMA,
    selection_dir_name,
    shard_name,
)
from colorfilter.dataset.spill import POSITION, Spill
from colorfilter.errors import BadDataError, ConfigError
from colorfilter.io.atomic import (
    TMP_PREFIX,
    atomic_path,
    remove_stale_temps,
    write_parquet_atomic,
    write_text_atomic,
)
from colorfilter.io.token_shards import list_shards, prepared_shards

log = logging.getLogger(__name__)

README_NAME = "README.md"
SPILL_DIR = TMP_PREFIX + "spill"
READ_BATCH_ROWS = 8192
Threshold = float | Literal["min_selected"] | None
ROW_ORDER = (
    "ascending splitmix64(seq_id ^ salt), salt = splitmix64(splitmix64(seed) ^ "
    "u64le(blake2b('dataset.release-order/0', digest_size=8))) (colorfilter.hashing); "
    "indices.npy lists seq_ids in row order"
)


@dataclass
class PoolCounts:
    """What pass 2 saw, for the manifest's counts."""

    token_rows: int = 0
    not_selected: int = 0
    unscored: int = 0
    non_finite: int = 0
    selected_tokens: int = 0
    selected_min: float = math.inf
    selected_max: float = -math.inf

    def skipped(self, upstream: Mapping[str, int]) -> dict[str, int]:
        out = dict(upstream)
        for reason, n in (("unscored", self.unscored), ("non_finite_score", self.non_finite)):
            if n:
                out[reason] = out.get(reason, 0) + n
        return out


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


def write_selection(
    selected_seq_ids: np.ndarray,
    token_dir: str | Path,
    score_dir: str | Path,
    tokenizer_dir: str | Path,
    out_dir: str | Path,
    *,
    method: str,
    tau: float,
    params: Mapping[str, Any] | None = None,
    rows_per_shard: int = 100_000,
    seed: int = 0,
    manifest_extra: Mapping[str, Any] | None = None,
    config: Mapping[str, Any] | None = None,
    skipped: Mapping[str, int] | None = None,
    model_dirs: Mapping[str, str | Path] | None = None,
    extra_inputs: Sequence[str | Path] = (),
    threshold: Threshold = "min_selected",
    command: str | None = None,
    repo_id: str | None = None,
    checksum_inputs: bool = True,
    histogram_bins: int = 100,
) -> dict[str, Any]:
    """Write the released dataset folder for `selected_seq_ids`; return a summary.

    `config` is the run's resolved config (recorded and hashed); `skipped` counts candidate chunks
    dropped upstream before the pool token shards were written (reason -> count): the writer adds
    pool rows without a score (`unscored`) and unselected rows with a non-finite score.
    `threshold` is the line drawn on the histogram: the lowest selected score by default (right
    for top-k), a number, or None for none. A rerun over a complete folder with the same config
    hash and selection is a no-op; anything else is redone from scratch.
    """
    if rows_per_shard < 1:
        raise ConfigError(f"rows_per_shard must be >= 1, got {rows_per_shard}")
    spec = SelectionSpec(method, tau, dict(params or {}), seed, rows_per_shard, histogram_bins)
    out_dir = Path(out_dir)
    resolved = spec.resolved(config)
    chash = mf.config_hash(resolved)
    selected = np.asarray(selected_seq_ids)
    token_paths, score_paths = _input_shards(Path(token_dir), Path(score_dir))
    identity = {
        "config_hash": chash,
        "selected_ids_sha256": _ids_sha256(selected),
        "inputs_fingerprint": _inputs_fingerprint(token_paths, score_paths, tokenizer_dir, skipped),
    }
    done = _complete_manifest(out_dir, identity)
    if done is not None:
        log.info("%s is complete with config hash %s: nothing to do", out_dir, chash[:12])
        return _summary(out_dir, done, noop=True)

    _clear_outputs(out_dir)
    index = SelectedIndex.build(selected, seed)
    counts, hist, num_shards = _write_rows(
        index, token_paths, score_paths, tokenizer_dir, out_dir, spec
    )
    line = counts.selected_min if threshold == "min_selected" else threshold
    line = line if line is None or math.isfinite(line) else None
    upstream = dict(skipped or {})
    counts_out = mf.build_counts(
        candidates=counts.token_rows + sum(upstream.values()),
        selected=len(index),
        not_selected=counts.not_selected,
        skipped=counts.skipped(upstream),
        selected_tokens=counts.selected_tokens,
    )
    with atomic_path(out_dir / HISTOGRAM_NAME) as tmp:
        plot_histogram(tmp, hist, line, f"{method}, tau={tau:g}: {len(index)} selected")
    card = CardInfo(
        method=method,
        tau=tau,
        params=spec.params,
        counts=counts_out,
        config_hash=chash,
        seed=seed,
        num_shards=num_shards,
        threshold=line,
        command=command,
        repo_id=repo_id,
    )
    write_text_atomic(out_dir / README_NAME, render_card(card))
    fields = {
        **identity,
        "config": resolved,
        "selection": {
            **resolved["selection"],
            "seed": seed,
            "threshold": line,
            "rows_per_shard": rows_per_shard,
            "num_shards": num_shards,
            "row_order": ROW_ORDER,
        },
        "counts": counts_out,
        "scores": {
            "selected_min": _finite_or_none(counts.selected_min),
            "selected_max": _finite_or_none(counts.selected_max),
            "histogram": histogram_summary(hist),
        },
        **_provenance(
            tokenizer_dir, model_dirs, [*token_paths, *score_paths, *extra_inputs], checksum_inputs
        ),
        "command": command,
        "extra": dict(manifest_extra or {}),
    }
    return _summary(out_dir, mf.write_manifest(out_dir, fields), noop=False)


def _write_rows(
    index: SelectedIndex,
    token_paths: Sequence[Path],
    score_paths: Sequence[Path],
    tokenizer_dir: str | Path,
    out_dir: Path,
    spec: SelectionSpec,
) -> tuple[PoolCounts, ScoreHistogram, int]:
    """Passes 1-3, then indices.npy: everything that depends on the pool's rows."""
    hist = _histogram_bins(score_paths, spec.histogram_bins)
    spill = Spill(out_dir / SPILL_DIR, spec.rows_per_shard)
    decode = _load_decoder(tokenizer_dir)
    counts = _spill_selected(token_paths, score_paths, index, spill, hist, decode)
    num_shards = _write_data_shards(out_dir, spill, len(index), spec.rows_per_shard)
    shutil.rmtree(spill.directory, ignore_errors=True)
    with atomic_path(out_dir / INDICES_NAME) as tmp, open(tmp, "wb") as handle:
        np.save(handle, index.row_order())
    return counts, hist, num_shards


def _provenance(
    tokenizer_dir: str | Path,
    model_dirs: Mapping[str, str | Path] | None,
    inputs: Sequence[str | Path],
    checksum_inputs: bool,
) -> dict[str, Any]:
    """Hashes of the tokenizer, checkpoints and input files; package versions."""
    return {
        "tokenizer": {"path": str(tokenizer_dir), "sha256": mf.sha256_dir(tokenizer_dir)},
        "models": {
            name: {"path": str(path), "sha256": mf.sha256_dir(path)}
            for name, path in sorted((model_dirs or {}).items())
        },
        "inputs": mf.describe_files(inputs, checksum=checksum_inputs),
        "packages": mf.package_versions(),
    }


def _spill_selected(
    token_paths: Sequence[Path],
    score_paths: Sequence[Path],
    index: SelectedIndex,
    spill: Spill,
    hist: ScoreHistogram,
    decode: Callable[[list[list[int]]], list[str]],
) -> PoolCounts:
    """Pass 2: stream every token shard with its scores; spill the selected rows."""
    counts = PoolCounts()
    for shard_index, (token_path, score_path) in enumerate(
        zip(token_paths, score_paths, strict=True)
    ):
        scores = ScoreLookup.from_table(
            pq.read_table(score_path, columns=["seq_id", *SCORE_COLUMNS]), score_path.name
        )
        hist.add_pool(scores.columns["score"])
        matched_scores = 0
        pieces = []
        with pq.ParquetFile(token_path) as parquet:
            for batch in parquet.iter_batches(batch_size=READ_BATCH_ROWS):
                piece, n_matched = _select_batch(batch, scores, index, counts, token_path.name)
                matched_scores += n_matched
                if piece is not None:
                    pieces.append(_with_text(piece, decode))
        if matched_scores != len(scores):
            raise BadDataError(
                f"score shard {score_path} has {len(scores) - matched_scores} seq_ids that are not "
                f"in token shard {token_path}: rescore the pool"
            )
        if pieces:
            table = pa.concat_tables(pieces)
            hist.add_selected(table.column("score").to_numpy())
            spill.add(table, shard_index)
    missing = index.missing()
    if missing.size:
        raise BadDataError(
            f"{missing.size} selected seq_ids are not in the pool token shards "
            f"(e.g. {missing[:5].tolist()}): the selection does not match {token_paths[0].parent}"
        )
    return counts


def _select_batch(
    batch: pa.RecordBatch,
    scores: ScoreLookup,
    index: SelectedIndex,
    counts: PoolCounts,
    where: str,
) -> tuple[pa.Table | None, int]:
    """Count one batch of pool rows; return its selected rows (without text) and #scored rows."""
    ids = batch.column("seq_id").to_numpy().astype(np.uint64)
    has_score, score_row = scores.lookup(ids)
    is_selected, sel_row = index.lookup(ids)
    score = np.where(has_score, scores.columns["score"][score_row], np.nan)
    counts.token_rows += ids.size
    rest = ~is_selected
    counts.unscored += int((rest & ~has_score).sum())
    counts.non_finite += int((rest & has_score & ~np.isfinite(score)).sum())
    counts.not_selected += int((rest & has_score & np.isfinite(score)).sum())
    if not is_selected.any():
        return None, int(has_score.sum())
    if not has_score[is_selected].all():
        raise BadDataError(f"a selected seq_id in {where} has no score")
    rows = np.flatnonzero(is_selected)
    index.mark_found(sel_row[rows], where)
    chosen = batch.take(pa.array(rows))
    n_tokens = pc.list_value_length(chosen.column("input_ids")).to_numpy()
    counts.selected_tokens += int(n_tokens.sum())
    finite = score[rows][np.isfinite(score[rows])]
    if finite.size:
        counts.selected_min = min(counts.selected_min, float(finite.min()))
        counts.selected_max = max(counts.selected_max, float(finite.max()))
    columns: dict[str, Any] = {
        "seq_id": pa.array(ids[rows], pa.uint64()),
        "input_ids": chosen.column("input_ids").cast(OUTPUT_SCHEMA.field("input_ids").type),
        **{col: pa.array(scores.columns[col][score_row[rows]]) for col in SCORE_COLUMNS},
        "n_tokens": pa.array(n_tokens, pa.int32()),
    }
    for name in ("source_file", "doc_first", "doc_last", "doc_offset", "source"):
        kind = OUTPUT_SCHEMA.field(name).type
        present = name in chosen.schema.names
        columns[name] = chosen.column(name).cast(kind) if present else pa.nulls(rows.size, kind)
    columns[POSITION] = pa.array(index.positions[sel_row[rows]], pa.int64())
    return pa.table(columns), int(has_score.sum())


def _with_text(table: pa.Table, decode: Callable[[list[list[int]]], list[str]]) -> pa.Table:
    """Add the decoded `text` column after `input_ids`."""
    text = pa.array(decode(table.column("input_ids").to_pylist()), pa.string())
    return table.add_column(table.schema.get_field_index("input_ids") + 1, "text", text)


def _write_data_shards(out_dir: Path, spill: Spill, n_rows: int, rows_per_shard: int) -> int:
    """Pass 3: assemble each output shard from its spilled row groups, in position order."""
    num_shards = max(1, math.ceil(n_rows / rows_per_shard))
    for bucket in range(num_shards):
        table = spill.read(bucket)
        low = bucket * rows_per_shard
        expected = np.arange(low, min(low + rows_per_shard, n_rows))
        if not np.array_equal(table.column(POSITION).to_numpy(), expected):
            raise BadDataError(f"output shard {bucket} is missing rows (internal error)")
        table = table.select(OUTPUT_SCHEMA.names).cast(OUTPUT_SCHEMA)
        write_parquet_atomic(out_dir / DATA_DIR / shard_name(bucket, num_shards), table)
    return num_shards


def _histogram_bins(score_paths: Sequence[Path], bins: int) -> ScoreHistogram:
    """Pass 1: the finite score range over the pool, read column by column."""
    low, high = math.inf, -math.inf
    for path in score_paths:
        shard_low, shard_high = finite_range(
            pq.read_table(path, columns=["score"]).column("score").to_numpy()
        )
        low, high = min(low, shard_low), max(high, shard_high)
    return ScoreHistogram.from_range(low, high, bins)


def _input_shards(token_dir: Path, score_dir: Path) -> tuple[list[Path], list[Path]]:
    """Token shards and their score shards (same file name); every token shard needs one."""
    token_paths = prepared_shards(token_dir)
    score_paths = [score_dir / p.name for p in token_paths]
    missing = [p.name for p in score_paths if not p.is_file()]
    if missing:
        raise ConfigError(
            f"{len(missing)} token shards have no score shard in {score_dir} "
            f"(e.g. {missing[:3]}): run the score stage first"
        )
    extra = {p.name for p in list_shards(score_dir)} - {p.name for p in token_paths}
    if extra:
        log.warning("ignoring %d score shards without a token shard in %s", len(extra), score_dir)
    return token_paths, score_paths


def _load_decoder(tokenizer_dir: str | Path) -> Callable[[list[list[int]]], list[str]]:
    """A batch decoder that keeps special tokens and does no clean-up (text = the exact tokens).

    A fast tokenizer folder is decoded with its tokenizer.json through `tokenizers` (the same
    backend `AutoTokenizer` wraps, without importing transformers/torch); others via transformers.
    """
    tokenizer_json = Path(tokenizer_dir) / "tokenizer.json"
    if tokenizer_json.is_file():
        from tokenizers import Tokenizer

        backend = Tokenizer.from_file(str(tokenizer_json))
        return lambda seqs: backend.decode_batch(seqs, skip_special_tokens=False)
    from transformers import AutoTokenizer

    tokenizer = AutoTokenizer.from_pretrained(str(tokenizer_dir))
    return lambda seqs: tokenizer.batch_decode(
        seqs, skip_special_tokens=False, clean_up_tokenization_spaces=False
    )


def _clear_outputs(out_dir: Path) -> None:
    """Delete what an earlier (incomplete or different) run wrote; leave other files alone."""
    (out_dir / mf.MANIFEST_NAME).unlink(missing_ok=True)  # first: the folder is now incomplete
    remove_stale_temps(out_dir)
    shutil.rmtree(out_dir / SPILL_DIR, ignore_errors=True)
    for path in (out_dir / DATA_DIR).glob("train-*.parquet"):
        path.unlink()
    for name in (INDICES_NAME, HISTOGRAM_NAME, README_NAME):
        (out_dir / name).unlink(missing_ok=True)
    out_dir.mkdir(parents=True, exist_ok=True)


def _complete_manifest(out_dir: Path, identity: Mapping[str, str]) -> dict[str, Any] | None:
    """The manifest if the folder is complete for this config, selection and inputs."""
    manifest = mf.read_manifest(out_dir)
    if manifest is None:
        return None
    if any(manifest.get(key) != value for key, value in identity.items()):
        log.warning("%s holds another selection or config: rewriting it", out_dir)
        return None
    for rel, entry in manifest.get("files", {}).items():
        path = out_dir / rel
        if not path.is_file() or path.stat().st_size != entry["size"]:
            return None
    return manifest


def _inputs_fingerprint(
    token_paths: Sequence[Path],
    score_paths: Sequence[Path],
    tokenizer_dir: str | Path,
    skipped: Mapping[str, int] | None,
) -> str:
    """Cheap identity of the inputs (names, sizes, tokenizer hash, upstream skips) for reruns."""
    listing = [(p.parent.name, p.name, p.stat().st_size) for p in [*token_paths, *score_paths]]
    payload = {
        "shards": listing,
        "tokenizer": mf.sha256_dir(tokenizer_dir),
        "skipped": dict(sorted((skipped or {}).items())),
    }
    return mf.config_hash(payload)


def _ids_sha256(selected: np.ndarray) -> str:
    import hashlib

    return hashlib.sha256(np.sort(selected.astype(np.uint64)).tobytes()).hexdigest()


def _finite_or_none(value: float) -> float | None:
    return value if math.isfinite(value) else None


def _summary(out_dir: Path, manifest: Mapping[str, Any], *, noop: bool) -> dict[str, Any]:
    return {
        "out_dir": str(out_dir),
        "config_hash": manifest["config_hash"],
        "counts": manifest["counts"],
        "num_shards": manifest["selection"]["num_shards"],
        "threshold": manifest["selection"]["threshold"],
        "files": sorted(manifest["files"]),
        "noop": noop,
    }
