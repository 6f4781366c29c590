"""The select stage: rank the scored pool with each configured method and write one dataset
folder per (method, tau) under OUTPUT/selected/.

Selection itself is colorfilter.selection (pure functions over score arrays, streamed from the
score shards); writing is colorfilter.dataset. This module only connects the run's paths, all
of them from the run layout, so output_dir may be a local folder or a bucket: the tasks read
and write the store themselves; only caches and removed temp folders touch local disk.
"""

from __future__ import annotations

import math
import os
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path

import numpy as np

from colorfilter.config import Config, cascade_method_problems
from colorfilter.configtools import to_dict
from colorfilter.dataset.join import CHEAP_SCORES, LM_SCORES
from colorfilter.dataset.writer import (
    PoolInputs,
    SelectionJob,
    selection_dir_name,
    write_selections,
)
from colorfilter.distill.candidates import CascadeReport
from colorfilter.distill.config import DISTILLED, lm_pass_wanted
from colorfilter.errors import BadDataError, ConfigError
from colorfilter.io import storage
from colorfilter.io.cache import cache_root
from colorfilter.io.location import Location, as_location
from colorfilter.io.token_shards import (
    paired_shards,
    prepared_shard_locations,
    shard_locations,
)
from colorfilter.io.transfer import open_parquet
from colorfilter.layout import RunLayout
from colorfilter.pipeline.dsir_tasks import write_dsir_weights
from colorfilter.pipeline.execution import Execution
from colorfilter.selection import METHODS, Memory, ParquetSource, select_many
from colorfilter.selection.documents import expand_to_documents


@dataclass(frozen=True)
class ScoreSource:
    """Where the pool's scores come from: the LM pair's score shards (every chunk, or the
    cascade's candidates and sample), or, in a run that never LM-scored the pool, the cheap
    scorer's shards (`color_distilled` and the baselines only)."""

    shards: list[Location]  # one per token shard, same names
    pool_rows: int
    kind: str = "lm"  # lm | cheap
    cascade: dict | None = None  # the score stage's cascade accounting (LM scores: candidates)

    @property
    def columns(self):
        return LM_SCORES if self.kind == "lm" else CHEAP_SCORES


def score_source(config: Config, run: RunLayout, token_paths: Sequence[Location],
                 methods: Sequence[str], taus: tuple[Sequence[float], str] | None = None,
                 ) -> ScoreSource:  # fmt: skip
    """The run's scores for these methods, checked to pair with the token shards (select and
    evaluate both start here): one score shard per token shard, one row per chunk scored.

    `taus` (the values and their config key) are checked against the pool's size first: a tau
    the pool cannot satisfy is the config's mistake, named before anything about the data."""
    pool_rows = count_rows(token_paths)
    if taus is not None:
        check_pool_size(pool_rows, taus[0], config.selection.min_chunks, taus[1])
    lm_free = not lm_pass_wanted(False, list(methods))
    if not run.has_run("score") and lm_free and run.has_run("distill"):
        cheap = paired_shards(token_paths, run.cheap_scores, "distill")
        source = ScoreSource(cheap, pool_rows, kind="cheap")
    else:
        marker = run.require("score")
        shards = paired_shards(token_paths, run.scores, "score")
        source = ScoreSource(shards, pool_rows, cascade=marker.meta.get("cascade"))
    _check_score_rows(source)
    return source


def _check_score_rows(source: ScoreSource) -> None:
    """Refused before any work unless the score shards hold one row per pool chunk (under the
    cascade: per chunk the LM pair scored), counted from their footers."""
    rows = count_rows(source.shards)
    expected = source.cascade["lm_scored_chunks"] if source.cascade else source.pool_rows
    if rows != expected:
        what = "chunks the cascade scored" if source.cascade else "chunks"
        stage = "score" if source.kind == "lm" else "distill"
        raise BadDataError(
            f"the pool's score shards in {source.shards[0].parent.url} hold {rows:,} rows for "
            f"{expected:,} {what}: rerun `colorfilter {stage}`"
        )


def run_select(config: Config, overwrite: bool = False) -> dict:
    """Write every configured selection in one pass over the pool; return a summary per folder."""
    run = RunLayout.of(config)
    token_paths = prepared_shard_locations(run.tokens("pool"))
    run.check_tokenizer()  # the released text is decoded with it
    taus = (config.selection.tau, "selection.tau")
    source = score_source(config, run, token_paths, config.selection.methods, taus)
    report = _cascade_report(run, source)
    jobs = [
        SelectionJob(
            seq_ids,
            run.selected(name),
            method,
            tau,
            _params(config, method),
            config.seed,
            config.selection.output.rows_per_shard,
            threshold=_threshold(config, method),
            command=f"colorfilter select <config> (method={method}, tau={tau:g})",
            manifest_extra={"documents": _document_accounting(run)},
            cascade=report,
        )  # fmt: skip
        for (method, tau, name), seq_ids in plan_selections(config, token_paths, source).items()
    ]
    inputs = PoolInputs(
        run.tokens("pool"), source.shards[0].parent, run.tokenizer, config=to_dict(config),
        model_dirs=_model_dirs(run), repo_id=config.release.repo_id,
        checksum_inputs=config.selection.output.checksum_inputs,
        histogram_bins=config.selection.output.histogram_bins,
        score_columns=source.columns,
        missing_reason="prefiltered" if source.cascade else "unscored",
        scored_by="score" if source.kind == "lm" else "distill",
    )  # fmt: skip
    summaries = write_selections(jobs, inputs, run.select_work, execution(config))
    return {job.out_dir.name: summary for job, summary in zip(jobs, summaries, strict=True)}


def _cascade_report(run: RunLayout, source: ScoreSource):
    """The cascade's part of each folder's manifest and card (None without a cascade)."""
    if source.cascade is None:
        return None

    plan = run.require("distill").meta.get("candidates") or {}
    return CascadeReport(run, source.cascade, plan)


def plan_selections(
    config: Config, token_paths: Sequence[Path | Location] | None = None,
    source: ScoreSource | None = None,
) -> dict[tuple[str, float, str], np.ndarray]:  # fmt: skip
    """Every configured selection's seq_ids, keyed by (method, tau, folder name).

    The one place selections are computed from the config (select and evaluate both use it), so
    temperature, block_n and the DSIR weights are the same wherever a selection is used.
    """
    run = RunLayout.of(config)
    if token_paths is None:
        token_paths = shard_locations(run.tokens("pool"))
    methods, taus = config.selection.methods, config.selection.tau
    source = source or score_source(config, run, token_paths, methods)
    chosen = compute_selections(config, methods, taus, source)
    plan = {}
    for (method, tau), seq_ids in chosen.items():
        name = selection_dir_name(method, tau)
        if config.selection.documents:
            seq_ids, name = expand_to_documents(seq_ids, token_paths), f"{name}-docs"
        plan[(method, tau, name)] = seq_ids
    return plan


def compute_selections(
    config: Config, methods: list[str], taus: list[float], source: ScoreSource,
    key: str = "selection",
) -> dict[tuple[str, float], np.ndarray]:  # fmt: skip
    """Chosen seq_ids per (method, tau) with the config's seed, temperature and block_n.

    Each method reads what it ranks, streamed: DSIR its weight shards, `color_distilled` the
    cheap scores, `random` any shards that list every pool chunk, the rest the score shards
    (under the cascade, the LM-scored chunks only, while k stays N / tau of the whole pool).
    """
    unknown = [m for m in methods if m not in METHODS]
    if unknown:
        raise ConfigError(f"selection.methods: unknown {unknown}; choose from {list(METHODS)}")
    if source.cascade is not None:
        _check_cascade(source.cascade, methods, taus, key)
    run = RunLayout.of(config)
    selections = {}
    for method in methods:
        data = ParquetSource(_method_shards(config, run, method, source))
        chosen = select_many(
            method, data, taus, seed=config.seed,
            temperature=config.selection.temperature, block_n=config.selection.block_n,
            memory=Memory(spill_dir=_spill_dir(run)), pool_rows=source.pool_rows,
        )  # fmt: skip
        selections.update({(method, float(tau)): ids for tau, ids in chosen.items()})
    return selections


def _method_shards(config: Config, run: RunLayout, method: str, source: ScoreSource
                   ) -> list[Location]:  # fmt: skip
    if method == "dsir":
        return dsir_weight_shards(config)
    if method == DISTILLED:
        run.require("distill")
        return [run.cheap_scores.join(s.name) for s in source.shards]
    if method == "random" and source.cascade is not None:  # every chunk, not the candidates
        return [run.cheap_scores.join(s.name) for s in source.shards]
    return source.shards


def _check_cascade(cascade: dict, methods: Sequence[str], taus: Sequence[float], key: str
                   ) -> None:  # fmt: skip
    """Refuse what the cascade's score shards cannot serve: a method that ranks every chunk's
    LM scores, and a color selection at a tau below the one the candidates were sized for
    (`key`: the config section whose methods and taus these are)."""
    problems = cascade_method_problems(list(methods), f"{key}.methods")
    planned = float(cascade["planned_tau"])
    low = [t for t in taus if t < planned]
    if low and "color" in methods:
        problems.append(
            f"{key} tau {', '.join(f'{t:g}' for t in low)} is below the cascade's planned tau "
            f"{planned:g}: its candidates hold the top {cascade['keep_ratio']:g} x N/{planned:g} "
            f"chunks by cheap score, too few for a top N/{min(low):g}; rerun `colorfilter "
            f"distill` and `colorfilter score` with cascade.min_tau={min(low):g}"
        )
    if problems:
        raise ConfigError("; ".join(problems))


def execution(config: Config):
    """Where select's map and reduce tasks run (the run's executor, select's worker sizes)."""
    return Execution(
        config.executor, config.selection.num_workers, config.selection.worker_cpus, config.ray
    )


def _spill_dir(run: RunLayout) -> str:
    """Where color_batchwise spills (a temporary folder made there, removed at the end): the
    local output dir, or for a bucket this node's cache folder (driver-local scratch, not an
    output, so it never goes to the bucket)."""
    if run.is_local:
        return run.root.path

    os.makedirs(cache_root(), exist_ok=True)
    return str(cache_root())


def _threshold(config: Config, method: str) -> str | None:
    top_k = method in ("color", "dsir")
    return "min_selected" if top_k and not config.selection.documents else None


def count_rows(paths: Sequence[Path | Location]) -> int:
    """Rows (chunks) of parquet shards on any backend, from their footers."""
    total = 0
    for path in paths:
        with open_parquet(as_location(path)) as parquet:
            total += parquet.metadata.num_rows
    return total


def check_pool_size(
    n_chunks: int, taus: list[float], min_chunks: int, key: str = "selection.tau"
) -> None:
    """Refuse every tau that keeps fewer than `selection.min_chunks` of the pool (floor(N/tau)),
    e.g. a tau larger than the pool, before any selection is written."""
    small = [tau for tau in taus if math.floor(n_chunks / tau) < min_chunks]
    if small:
        raise ConfigError(
            f"{key}=[{', '.join(f'{t:g}' for t in small)}] keeps fewer than selection.min_chunks="
            f"{min_chunks} of the pool's {n_chunks} chunks (floor(pool / tau)); use a tau <= "
            f"{n_chunks / min_chunks:g}, a larger pool, or a smaller selection.min_chunks"
        )


def _params(config: Config, method: str) -> dict:
    params: dict = {"seed": config.seed, "seq_len": config.seq_len}
    if method == "color_softmax":
        params["temperature"] = config.selection.temperature
    if method == "color_batchwise":
        params["block_n"] = config.selection.block_n
    if config.selection.documents:
        params["documents"] = "selected chunks widened to their whole source documents"
    return params


def _model_dirs(run: RunLayout) -> dict[str, Location]:
    """The models behind the scores, for the manifest: the pair, and the cheap scorer when the
    cascade or color_distilled used one."""
    dirs = {name: run.model(name) for name in ("prior", "conditional")}
    if run.has_run("distill"):
        dirs["cheap"] = run.cheap_model
    return {name: loc for name, loc in dirs.items() if storage.is_dir(loc)}


def _document_accounting(run: RunLayout) -> dict:
    """Input records -> documents + skipped (by reason), from the prepare stage's stats."""
    stats = storage.read_json_object(run.token_stats("pool"))
    if stats is None:
        return {}
    keys = ("files", "records", "documents", "tokens", "chunks", "tail_tokens_dropped", "skipped")
    return {key: stats.get(key) for key in keys}


def dsir_weight_shards(config: Config) -> list[Location]:
    """DSIR log importance weights of every pool chunk (target = downstream train), cached.

    Written to OUTPUT/scores/dsir/ with the token shards' names (each object whole or absent);
    reused when present. Counting and weighting run as executor tasks, one per shard
    (pipeline/dsir_tasks.py).
    """
    run = RunLayout.of(config)
    token_paths = shard_locations(run.tokens("pool"))
    target_paths = shard_locations(run.tokens("downstream_train"))
    if not target_paths:
        raise ConfigError(
            "method 'dsir' needs the downstream train split: set data.downstream_train"
        )
    wanted = [run.dsir.join(p.name) for p in token_paths]
    present = {loc.name for loc in shard_locations(run.dsir)}
    if all(p.name in present for p in wanted):
        return wanted

    write_dsir_weights(execution(config), run.tokenizer, target_paths, token_paths, wanted, present)
    return wanted
