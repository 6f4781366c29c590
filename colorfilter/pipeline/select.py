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
from pathlib import Path

import numpy as np

from colorfilter.config import Config
from colorfilter.configtools import to_dict
from colorfilter.errors import ConfigError
from colorfilter.io import storage
from colorfilter.io.location import Location, as_location
from colorfilter.io.token_shards import prepared_shard_locations, shard_locations
from colorfilter.layout import RunLayout


def run_select(config: Config, overwrite: bool = False) -> dict:
    """Write every configured selection in one pass over the pool; return a summary per folder."""
    from colorfilter.dataset.writer import PoolInputs, SelectionJob, write_selections

    run = RunLayout.of(config)
    token_paths = prepared_shard_locations(run.tokens("pool"))
    run.require("score")
    score_paths = shard_locations(run.scores)
    if len(score_paths) != len(token_paths):
        raise ConfigError(
            f"{run.scores.url} has {len(score_paths)} score shards for {len(token_paths)} token "
            "shards: the score stage did not finish; rerun `colorfilter score`"
        )
    check_pool_size(count_rows(token_paths), config.selection.tau, config.selection.min_chunks)
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
        )  # fmt: skip
        for (method, tau, name), seq_ids in plan_selections(config, token_paths).items()
    ]
    inputs = PoolInputs(
        run.tokens("pool"), run.scores, run.tokenizer, config=to_dict(config),
        model_dirs=_model_dirs(run), repo_id=config.release.repo_id,
        checksum_inputs=config.selection.output.checksum_inputs,
        histogram_bins=config.selection.output.histogram_bins,
    )  # fmt: skip
    summaries = write_selections(jobs, inputs, run.select_work, execution(config))
    return {job.out_dir.name: summary for job, summary in zip(jobs, summaries, strict=True)}


def plan_selections(
    config: Config, token_paths: Sequence[Path | Location] | None = None
) -> dict[tuple[str, float, str], np.ndarray]:
    """Every configured selection's seq_ids, keyed by (method, tau, folder name).

    The one place selections are computed from the config (select and evaluate both use it), so
    temperature, block_n and the DSIR weights are the same wherever a selection is used.
    """
    from colorfilter.dataset.writer import selection_dir_name
    from colorfilter.selection.documents import expand_to_documents

    if token_paths is None:
        token_paths = shard_locations(RunLayout.of(config).tokens("pool"))
    chosen = compute_selections(config, config.selection.methods, config.selection.tau)
    plan = {}
    for (method, tau), seq_ids in chosen.items():
        name = selection_dir_name(method, tau)
        if config.selection.documents:
            seq_ids, name = expand_to_documents(seq_ids, token_paths), f"{name}-docs"
        plan[(method, tau, name)] = seq_ids
    return plan


def compute_selections(
    config: Config, methods: list[str], taus: list[float], scores=None
) -> dict[tuple[str, float], np.ndarray]:
    """Chosen seq_ids per (method, tau) with the config's seed, temperature and block_n.

    `scores`: the pool's score columns when the caller already holds them (an Arrow table);
    otherwise they stream from the score shards. DSIR reads its own weight shards.
    """
    from colorfilter.selection import METHODS, ParquetSource, select_many

    unknown = [m for m in methods if m not in METHODS]
    if unknown:
        raise ConfigError(f"selection.methods: unknown {unknown}; choose from {list(METHODS)}")
    run = RunLayout.of(config)
    score_paths = shard_locations(run.scores)
    selections = {}
    for method in methods:
        if method == "dsir":
            data = ParquetSource(dsir_weight_shards(config))
        else:
            data = scores if scores is not None else ParquetSource(score_paths)
        chosen = select_many(
            method, data, taus, seed=config.seed,
            temperature=config.selection.temperature, block_n=config.selection.block_n,
            spill_dir=_spill_dir(run),
        )  # fmt: skip
        selections.update({(method, float(tau)): ids for tau, ids in chosen.items()})
    return selections


def execution(config: Config):
    """Where select's map and reduce tasks run (the run's executor, select's worker sizes)."""
    from colorfilter.dataset.work import Execution

    return Execution(
        config.executor, config.selection.num_workers, config.selection.worker_cpus, config.ray
    )


def _spill_dir(run: RunLayout) -> str:
    """Where color_batchwise spills (a temporary folder made there, removed at the end): the
    local output dir, or for a bucket this node's cache folder (driver-local scratch, not an
    output, so it never goes to the bucket)."""
    if run.is_local:
        return run.root.path
    from colorfilter.io.cache import cache_root

    os.makedirs(cache_root(), exist_ok=True)
    return str(cache_root())


def _threshold(config: Config, method: str) -> str | None:
    top_k = method in ("color", "dsir")
    return "min_selected" if top_k and not config.selection.documents else None


def count_rows(paths: Sequence[Path | Location]) -> int:
    """Rows (chunks) of parquet shards on any backend, from their footers."""
    from colorfilter.io.transfer import open_parquet

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
    dirs = {name: run.model(name) for name in ("prior", "conditional")}
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
    from colorfilter.pipeline.dsir_tasks import write_dsir_weights

    write_dsir_weights(execution(config), run.tokenizer, target_paths, token_paths, wanted, present)
    return wanted
