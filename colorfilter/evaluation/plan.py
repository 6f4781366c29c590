"""Which chunks each evaluation run trains on: a selection, its budget, its repeated order.

Only full-length chunks (n_tokens == seq_len) are trained on, so a run of `steps` steps of
`batch_size` sequences sees exactly steps * batch_size * seq_len tokens whatever the method:
the short chunks (the tail of each input file) are a negligible share of any pool.

A run is laid out in two steps, so that planning never holds more of the pool than the runs
train on: `lay_out_selection` (or, for random-curve runs drawn from the whole pool as it streams
by, survey.Smallest) decides its chunks by seq_id, its order and its run hash (`run_data`);
`planned` adds where those chunks live (found for every run in one pass over the pool,
colorfilter.evaluation.survey).
"""

from __future__ import annotations

import hashlib
import math
from dataclasses import asdict, dataclass, field
from typing import Any

import numpy as np

from colorfilter.errors import BadDataError, ConfigError
from colorfilter.evaluation.config import EvaluateConfig
from colorfilter.evaluation.packed import PackedIds
from colorfilter.evaluation.pool import Census
from colorfilter.evaluation.survey import Smallest, epoch_keys
from colorfilter.fingerprint import fingerprint
from colorfilter.models.data import ChunkIndex

NEAR = 0.03  # random-curve points closer than this (relative token count) are run once
# Random-curve runs draw from the whole pool, so a point larger than a tau's random selection
# still sees distinct chunks (a selection would be repeated, or capped to its own size).
CURVE_TAU = 1.0

# The settings that decide a run's result; runtime-only knobs (threads, workers, progress) are not.
RESULT_KNOBS = (
    "preset",
    "batch_size",
    "lr",
    "min_lr_ratio",
    "warmup_steps",
    "dtype",
    "eval_max_chunks",
)


@dataclass(frozen=True)
class RunSpec:
    """One training run: which selection, how many chunks, which seed."""

    method: str
    tau: float  # the selection's ratio (the whole pool, 1.0, for random-curve runs)
    n_chunks: int
    seed: int

    @property
    def name(self) -> str:
        return f"{self.method}-tau{self.tau:g}-n{self.n_chunks}-seed{self.seed}"


@dataclass(frozen=True)
class RunData:
    """A run's data by seq_id: its distinct chunks, its order, what decides its result."""

    spec: RunSpec
    seq_ids: np.ndarray  # the chunks it trains on, each once, ascending
    order: np.ndarray  # positions into seq_ids, spec.n_chunks of them
    selected_full_chunks: int  # the selection's full-length chunks, which passes repeat
    selection_digest: str
    run_hash: str


@dataclass(frozen=True)
class PlannedRun:
    """A run with its data laid out: the chunks it trains on and their order."""

    spec: RunSpec
    index: ChunkIndex  # the chunks the run trains on, each once (not the whole selection)
    order: np.ndarray  # positions into index, spec.n_chunks of them
    selected_full_chunks: int
    selection_digest: str
    run_hash: str


def run_data(spec: RunSpec, trained: np.ndarray, selected_full_chunks: int, digest: str,
             cfg: EvaluateConfig, setup: Any) -> RunData:  # fmt: skip
    """A run's data from the seq_ids it trains on, in training order (spec.n_chunks of them),
    the selection's full-length chunks and the selection's digest."""
    if len(trained) < spec.n_chunks:
        raise BadDataError(f"{spec.name}: only {len(trained)} full-length chunks to train on")
    run_hash = run_hash_of(spec, digest + order_digest(trained), cfg, setup)
    used = sorted_unique(trained)
    return RunData(spec, used, np.searchsorted(used, trained), selected_full_chunks, digest,
                   run_hash)  # fmt: skip


def lay_out(spec: RunSpec, full_ids: np.ndarray, digest: str, cfg: EvaluateConfig,
            setup: Any) -> RunData:  # fmt: skip
    """`spec`'s data from its selection's full-length chunks (`full_ids`, ascending) and the
    selection's digest: seeded passes over them, repeated as needed, cut at spec.n_chunks."""
    trained = full_ids[repeated_positions(full_ids, spec.n_chunks, spec.seed)]
    return run_data(spec, trained, len(full_ids), digest, cfg, setup)


def lay_out_selection(spec: RunSpec, selection: PackedIds, census: Census, cfg: EvaluateConfig,
                      setup: Any) -> RunData:  # fmt: skip
    """`lay_out` for a packed selection, a segment at a time: its digest, its full-length
    chunks, and the first spec.n_chunks of the seeded pass (`Smallest`), so a large selection
    is never decoded whole. A selection smaller than the run (repeated) is laid out in memory."""
    hasher, full, first = hashlib.sha256(), 0, Smallest(spec.n_chunks, spec.seed)
    for ids in selection.segments():
        hasher.update(ids.tobytes())
        kept = census.without_short(ids)
        full += len(kept)
        first.add(kept)
    digest = hasher.hexdigest()[:16]
    if spec.n_chunks > full:
        return lay_out(spec, census.without_short(selection.ids()), digest, cfg, setup)
    return run_data(spec, first.result()[0], full, digest, cfg, setup)


def planned(data: RunData, index: ChunkIndex) -> PlannedRun:
    """The run with its chunks located (`index`: data.seq_ids' chunks, in that order)."""
    return PlannedRun(data.spec, index, data.order, data.selected_full_chunks,
                      data.selection_digest, data.run_hash)  # fmt: skip


def plan_indexed_run(spec: RunSpec, index: ChunkIndex, cfg: EvaluateConfig, setup: Any
                     ) -> PlannedRun:  # fmt: skip
    """A run on chunks already indexed in memory (every one full-length, sorted by seq_id):
    for scripts that train on a hand-picked set (scripts/eval_by_source.py, bench_evaluate.py)."""
    data = lay_out(spec, index.seq_id, selection_digest(index.seq_id), cfg, setup)
    return planned(data, index.take(np.searchsorted(index.seq_id, data.seq_ids)))


def run_hash_of(spec: RunSpec, digest: str, cfg: EvaluateConfig, setup: Any) -> str:
    """What decides a run's result: its spec, data, result knobs, sequence shape and eval split."""
    knobs = {k: v for k, v in asdict(cfg).items() if k in RESULT_KNOBS}
    decided_by = {
        "spec": asdict(spec),
        "selection": digest,
        "knobs": knobs,
        "seq_len": setup.seq_len,
        "vocab": setup.vocab_size,
        "eval": [p.name for p in setup.eval_paths],
    }
    if setup.mc_digest:  # absent without items, so runs made before the option still match
        decided_by["multiple_choice"] = setup.mc_digest
    return fingerprint(decided_by)


def sorted_unique(ids: np.ndarray) -> np.ndarray:
    """`ids` sorted, each once (np.unique hashes first, several times slower on uint64)."""
    ids = np.sort(ids)
    return ids[np.concatenate([[True], ids[1:] != ids[:-1]])] if len(ids) else ids


def round_to_batches(n_chunks: int, batch_size: int) -> int:
    """`n_chunks` rounded down to whole optimizer steps."""
    return (n_chunks // batch_size) * batch_size


def repeated_positions(seq_ids: np.ndarray, n_chunks: int, seed: int) -> np.ndarray:
    """`n_chunks` positions into `seq_ids`: seeded shuffled passes, repeated as needed, cut short
    (models.data.epoch_order's passes). Within one pass only the first n_chunks are sorted."""
    if len(seq_ids) == 0:
        raise BadDataError("a selection has no full-length chunks to train on")
    if n_chunks <= 0:
        return np.zeros(0, np.int64)
    if n_chunks <= len(seq_ids):
        keys = epoch_keys(seq_ids, seed, 0)
        if n_chunks < len(seq_ids):  # the candidates: keys up to the n-th smallest
            kth = np.partition(keys, n_chunks - 1)[n_chunks - 1]
            candidates = np.flatnonzero(keys <= kth)
        else:
            candidates = np.arange(len(seq_ids))
        order = np.lexsort((seq_ids[candidates], keys[candidates]))
        return candidates[order][:n_chunks]
    passes = [
        np.lexsort((seq_ids, epoch_keys(seq_ids, seed, epoch)))
        for epoch in range(math.ceil(n_chunks / len(seq_ids)))
    ]
    return np.concatenate(passes)[:n_chunks]


def repeated_order(index: ChunkIndex, n_chunks: int, seed: int) -> np.ndarray:
    """`n_chunks` positions into `index`: seeded shuffled passes, repeated as needed, cut short."""
    return repeated_positions(index.seq_id, n_chunks, seed)


def selection_digest(seq_ids: np.ndarray) -> str:
    """A short fingerprint of a selection, so a finished run is reused only for the same data."""
    seq_ids = np.asarray(seq_ids, dtype=np.uint64)
    ascending = len(seq_ids) < 2 or bool(np.all(seq_ids[1:] > seq_ids[:-1]))
    return order_digest(seq_ids if ascending else np.sort(seq_ids))


def order_digest(seq_ids: np.ndarray) -> str:
    """A short fingerprint of chunks in training order (a new shuffle is a new run)."""
    return hashlib.sha256(np.asarray(seq_ids, dtype=np.uint64).tobytes()).hexdigest()[:16]


def budgets(cfg: EvaluateConfig, full_counts: dict, seq_len: int) -> dict[float, int]:
    """Chunks per run at each tau: the configured tokens, or the smallest selection's
    (`full_counts`: full-length chunks per (method, tau))."""
    out = {}
    for tau in (float(t) for t in cfg.taus):
        if cfg.train_tokens > 0:
            n_chunks = cfg.train_tokens // seq_len
        else:
            n_chunks = min(full_counts[(m, tau)] for m in cfg.methods)
        out[tau] = round_to_batches(n_chunks, cfg.batch_size)
        if out[tau] < cfg.batch_size:
            raise ConfigError(
                f"evaluate: at tau={tau:g} the budget ({n_chunks} chunks of "
                f"{seq_len} tokens) is less than one batch of {cfg.batch_size}"
            )
    return out


def run_specs(cfg: EvaluateConfig, budget: dict[float, int], available: int
              ) -> tuple[list[RunSpec], list[RunSpec]]:  # fmt: skip
    """Method runs at each tau's budget, and random-curve runs at multiples of it: one pass over
    that many distinct chunks of a seeded random order of the whole pool (capped by its
    `available` full-length chunks; 0 without random_multiples).

    A curve point within `NEAR` of one already planned (the random method's run at the same
    budget, or the same multiple of an equal budget at another tau) is left out: it would cost a
    run and add nothing to the curve.
    """
    taus = [float(t) for t in cfg.taus]
    method_specs = [
        RunSpec(m, tau, budget[tau], seed)
        for seed in cfg.seeds
        for tau in taus
        for m in cfg.methods
    ]
    wanted = [RunSpec("random", tau, budget[tau], seed) for seed in cfg.seeds for tau in taus]
    for seed in cfg.seeds:
        for tau in taus:
            for multiple in sorted(cfg.random_multiples):
                n_chunks = round_to_batches(
                    min(int(multiple * budget[tau]), available), cfg.batch_size
                )
                if n_chunks >= cfg.batch_size:
                    wanted.append(RunSpec("random", CURVE_TAU, n_chunks, seed))
    curve_specs: list[RunSpec] = []
    for spec in wanted:
        if not any(
            other.seed == spec.seed and abs(other.n_chunks - spec.n_chunks) <= NEAR * spec.n_chunks
            for other in curve_specs
        ):
            curve_specs.append(spec)
    return method_specs, curve_specs


@dataclass(frozen=True)
class ScoreHistograms:
    """The pool's score histograms per source group (for the report's plot)."""

    bins: np.ndarray
    counts: dict[str, np.ndarray]


@dataclass
class EvaluationPlan:
    """Everything evaluate decides before any target model trains, and what the report needs
    of the pool and the selections (which are not kept: 8 bytes per selected chunk)."""

    cfg: EvaluateConfig
    seq_len: int
    documents: bool  # selections widened to whole documents (selection.documents)
    budgets: dict[float, int]
    method_specs: list[RunSpec]
    curve_specs: list[RunSpec]
    runs: list[PlannedRun]
    setup: Any  # evaluation.train.TargetSetup: what every run shares
    composition: dict[str, dict | None] = field(default_factory=dict)
    overlap: dict[str, dict[str, float]] = field(default_factory=dict)
    scores_by_source: dict[str, dict] | None = None
    histograms: ScoreHistograms | None = None
