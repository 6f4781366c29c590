"""Train the cheap scorer from the sample's shards, measure it on the held-out part, commit it.

Reads stay bounded at any pool size: the training rows are chosen from the sample shards'
`seq_id` and `n_tokens` columns first (non-held-out rows, whole chunks in a seeded order up to
`cascade.max_train_positions` predicted positions), then only their tokens and deltas are read;
held-out rows are predicted shard by shard and only (seq_id, exact, cheap) are kept. The target
data's n-gram counts stream over its token shards.

The model folder `models/cheap/` is one commit unit (colorfilter.io.commit): `weights.npy`,
`model.json`, `fidelity.json` (the held-out report), `fidelity.png`, `holdout.parquet` (the
held-out rows' exact and cheap scores, which later recall estimates reuse), then the record,
whose meta carries the hash of everything that decided the model: a rerun with the same inputs
and settings reuses it.
"""

from __future__ import annotations

import io
import json
from collections.abc import Sequence
from dataclasses import dataclass
from typing import Any

import numpy as np
import pyarrow as pa
import pyarrow.compute as pc

from colorfilter.distill.cheap import load_cheap_model
from colorfilter.distill.config import CascadeConfig
from colorfilter.distill.features import Chunks, FeatureSpec, log_ratio, ngram_counts
from colorfilter.distill.fidelity import fidelity, plot_fidelity
from colorfilter.distill.model import CheapModel, TrainingSet, fit
from colorfilter.distill.sample import SampleSpec
from colorfilter.errors import BadDataError
from colorfilter.fingerprint import fingerprint
from colorfilter.hashing import seeded_keys
from colorfilter.io import storage
from colorfilter.io.commit import committed, is_committed, write_unit
from colorfilter.io.location import Location
from colorfilter.io.transfer import read_parquet
from colorfilter.layout import MODEL_RECORD
from colorfilter.scoring.shard import done_record_path

FIDELITY_FILE, PLOT_FILE, HOLDOUT_FILE = "fidelity.json", "fidelity.png", "holdout.parquet"
PLOT_TRAIN_POINTS = 20_000  # training chunks drawn at most (the held-out ones all)


@dataclass(frozen=True)
class TrainInputs:
    """What decides the cheap scorer: the sample's shards and the target data's token shards."""

    sample_shards: list[Location]
    target_shards: list[Location]
    sample: SampleSpec
    cascade: CascadeConfig
    sample_fingerprint: str  # the LM pair and sample behind the sample shards
    taus: list[float]  # reported in the fidelity report

    @property
    def spec(self) -> FeatureSpec:
        return FeatureSpec(tuple(self.cascade.ngram_orders), self.cascade.hash_bits)

    def identity(self) -> str:
        """Hash of what decides the model: the sample shards' bytes (sha256 from their records),
        the target shards, and the settings."""
        sizes = storage.stat_many(self.target_shards)
        records = committed(done_record_path(s) for s in self.sample_shards)
        sample_bytes = sorted(
            entry["sha256"] for record in records.values() for entry in record.objects.values()
        )
        return fingerprint({
            "sample": self.sample_fingerprint,
            "sample_shards": sample_bytes,
            "features": self.spec.as_dict(),
            "alphas": self.cascade.alphas,
            "max_train_positions": self.cascade.max_train_positions,
            "target": [(loc.name, sizes[loc.url]) for loc in self.target_shards],
            "taus": sorted(self.taus),
        })[:16]  # fmt: skip


def train_cheap_model(inputs: TrainInputs, folder: Location) -> tuple[CheapModel, dict]:
    """The committed cheap scorer for these inputs (trained now unless `folder` holds it) and
    its fidelity report."""
    identity = inputs.identity()
    record = is_committed(folder.join(MODEL_RECORD), verify_sha256=True)
    if record is not None and record.meta.get("identity") == identity:
        return load_cheap_model(folder), storage.read_json(folder.join(FIDELITY_FILE))
    storage.remove(folder.join(MODEL_RECORD))
    train = read_training_set(inputs.sample_shards, inputs.sample,
                              inputs.cascade.max_train_positions)  # fmt: skip
    if train.chunks.rows < 2:
        raise BadDataError(
            f"the cascade's sample holds {train.chunks.rows} training chunks: raise "
            "cascade.sample_fraction (or lower cascade.holdout_fraction)"
        )
    spec = inputs.spec
    priors = log_ratio(target_counts(inputs.target_shards, spec), ngram_counts(train.chunks, spec))
    model = fit(train, spec, priors, list(inputs.cascade.alphas), inputs.sample.seed)
    scored = _predict_sample(inputs.sample_shards, inputs.sample, model)
    held = scored["held_out"]
    report = {
        **fidelity(scored["cheap"][held], scored["exact"][held], inputs.taus),
        "model": model.info,
        "sample": inputs.sample.as_dict(),
    }
    files = {**model.files(), FIDELITY_FILE: _json(report), PLOT_FILE: _plot(scored, report),
             HOLDOUT_FILE: _holdout_table(scored)}  # fmt: skip
    storage.makedirs(folder)
    write_unit(folder.join(MODEL_RECORD), files, {"identity": identity}, sha256=True)
    return model, report


def read_training_set(shards: Sequence[Location], sample: SampleSpec, max_positions: int
                      ) -> TrainingSet:  # fmt: skip
    """The non-held-out sample rows (capped), with tokens, deltas and scores."""
    ids = [read_parquet(s, columns=["seq_id", "n_tokens"]) for s in shards]
    seq = np.concatenate([t.column("seq_id").to_numpy() for t in ids] or [np.zeros(0, np.uint64)])
    lengths = np.concatenate([t.column("n_tokens").to_numpy() for t in ids] or [np.zeros(0)])
    train = ~sample.in_holdout(seq.astype(np.uint64))
    chosen = _capped(seq[train], lengths[train].astype(np.int64), max_positions, sample.seed)
    parts = []
    for shard in shards:
        table = read_parquet(shard, columns=["seq_id", "input_ids", "token_delta", "score"])
        mask = np.isin(table.column("seq_id").to_numpy(), chosen, assume_unique=True)
        parts.append(table.filter(pa.array(mask)))
    table = pa.concat_tables(parts) if parts else None
    if table is None or table.num_rows == 0:
        empty = Chunks(np.zeros(0, np.int64), np.zeros(1, np.int64))
        return TrainingSet(np.zeros(0, np.uint64), empty, np.zeros(0), np.zeros(0))
    deltas = pc.list_flatten(table.column("token_delta")).to_numpy().astype(np.float64)
    return TrainingSet(
        table.column("seq_id").to_numpy().astype(np.uint64),
        Chunks.from_arrow(table.column("input_ids")),
        deltas,
        table.column("score").to_numpy().astype(np.float64),
    )


def _capped(seq: np.ndarray, lengths: np.ndarray, max_positions: int, seed: int) -> np.ndarray:
    """Sorted seq_ids of whole chunks in a seeded order, up to `max_positions` predictions."""
    order = np.argsort(seeded_keys(seq, seed, "cascade.train-cap"), kind="stable")
    predicted = np.maximum(lengths[order] - 1, 0)
    return np.sort(seq[order][np.cumsum(predicted) <= max_positions].astype(np.uint64))


def target_counts(shards: Sequence[Location], spec: FeatureSpec) -> np.ndarray:
    """n-gram counts of the target data (the conditional's fine-tuning split), streamed."""
    total = np.zeros((len(spec.orders), spec.n_features), np.int64)
    for shard in shards:
        column = read_parquet(shard, columns=["input_ids"]).column("input_ids")
        total += ngram_counts(Chunks.from_arrow(column), spec)
    return total


def _predict_sample(shards: Sequence[Location], sample: SampleSpec, model: CheapModel) -> dict:
    """Every sample row's exact and cheap score, and whether it is held out."""
    out: dict[str, list[np.ndarray]] = {"seq_id": [], "exact": [], "cheap": [], "held_out": []}
    for shard in shards:
        table = read_parquet(shard, columns=["seq_id", "input_ids", "score"])
        seq = table.column("seq_id").to_numpy().astype(np.uint64)
        out["seq_id"].append(seq)
        out["exact"].append(table.column("score").to_numpy().astype(np.float64))
        out["cheap"].append(model.predict(Chunks.from_arrow(table.column("input_ids"))))
        out["held_out"].append(sample.in_holdout(seq))
    empty = {"seq_id": np.uint64, "exact": np.float64, "cheap": np.float64, "held_out": bool}
    return {k: np.concatenate(v) if v else np.zeros(0, empty[k]) for k, v in out.items()}


def _holdout_table(scored: dict) -> bytes:
    held = scored["held_out"]
    table = pa.table({
        "seq_id": pa.array(scored["seq_id"][held], pa.uint64()),
        "score": pa.array(scored["exact"][held].astype(np.float32)),
        "cheap_score": pa.array(scored["cheap"][held].astype(np.float32)),
    })  # fmt: skip
    import pyarrow.parquet as pq

    buffer = io.BytesIO()
    pq.write_table(table, buffer, compression="zstd")
    return buffer.getvalue()


def _plot(scored: dict, report: dict[str, Any]) -> bytes:
    held = scored["held_out"]
    train_rows = np.flatnonzero(~held)
    if train_rows.size > PLOT_TRAIN_POINTS:  # a fixed stride: the same picture every rerun
        train_rows = train_rows[:: train_rows.size // PLOT_TRAIN_POINTS + 1]
    rows = np.sort(np.concatenate([np.flatnonzero(held), train_rows]))
    rho = report.get("spearman")
    title = f"cheap vs exact score (held-out Spearman {rho})"
    buffer = io.BytesIO()
    plot_fidelity(buffer, scored["cheap"][rows], scored["exact"][rows], held[rows], title)
    return buffer.getvalue()


def _json(payload: Any) -> bytes:
    return (json.dumps(payload, indent=2, sort_keys=True, default=str) + "\n").encode()
