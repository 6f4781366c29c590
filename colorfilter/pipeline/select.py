"""The select stage: rank the scored pool with each configured method and write one dataset
folder per (method, tau) under OUTPUT/selected/.

Selection itself is colorfilter.selection (pure functions over score arrays, streamed from the
score shards); writing is colorfilter.dataset. This module only connects the run's paths.
"""

from __future__ import annotations

import math
from pathlib import Path

import numpy as np

from colorfilter.config import Config
from colorfilter.configtools import to_dict
from colorfilter.errors import ConfigError
from colorfilter.io.atomic import TMP_PREFIX, read_json
from colorfilter.io.token_shards import list_shards, prepared_shards

WORK_DIR = TMP_PREFIX + "select"  # OUTPUT/selected/.tmp-select: the shared map/reduce work


def run_select(config: Config, overwrite: bool = False) -> dict:
    """Write every configured selection in one pass over the pool; return a summary per folder."""
    from colorfilter.dataset.writer import PoolInputs, SelectionJob, write_selections

    out = config.output_path
    score_dir, token_dir = out / "scores" / "pool", out / "tokens" / "pool"
    token_paths, score_paths = prepared_shards(token_dir), list_shards(score_dir)
    if not score_paths or len(score_paths) != len(token_paths):
        raise ConfigError(
            f"{score_dir} has {len(score_paths)} score shards for {len(token_paths)} token "
            "shards: run (or finish) `colorfilter score` first"
        )
    check_pool_size(count_rows(token_paths), config.selection.tau, config.selection.min_chunks)
    jobs = [
        SelectionJob(
            seq_ids,
            out / "selected" / name,
            method,
            tau,
            _params(config, method),
            config.seed,
            config.selection.output.rows_per_shard,
            threshold=_threshold(config, method),
            command=f"colorfilter select <config> (method={method}, tau={tau:g})",
            manifest_extra={"documents": _document_accounting(out)},
        )  # fmt: skip
        for (method, tau, name), seq_ids in plan_selections(config, token_paths).items()
    ]
    inputs = PoolInputs(
        token_dir, score_dir, out / "tokenizer", config=to_dict(config),
        model_dirs=_model_dirs(out), repo_id=config.release.repo_id,
        checksum_inputs=config.selection.output.checksum_inputs,
        histogram_bins=config.selection.output.histogram_bins,
    )  # fmt: skip
    summaries = write_selections(jobs, inputs, out / "selected" / WORK_DIR, execution(config))
    return {job.out_dir.name: summary for job, summary in zip(jobs, summaries, strict=True)}


def plan_selections(
    config: Config, token_paths: list[Path] | None = None
) -> dict[tuple[str, float, str], np.ndarray]:
    """Every configured selection's seq_ids, keyed by (method, tau, folder name).

    The one place selections are computed from the config (select and evaluate both use it), so
    temperature, block_n and the DSIR weights are the same wherever a selection is used.
    """
    from colorfilter.dataset.writer import selection_dir_name
    from colorfilter.selection.documents import expand_to_documents

    out = config.output_path
    token_paths = token_paths if token_paths is not None else list_shards(out / "tokens" / "pool")
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
    score_paths = list_shards(config.output_path / "scores" / "pool")
    selections = {}
    for method in methods:
        if method == "dsir":
            data = ParquetSource(dsir_weight_shards(config))
        else:
            data = scores if scores is not None else ParquetSource(score_paths)
        chosen = select_many(
            method, data, taus, seed=config.seed,
            temperature=config.selection.temperature, block_n=config.selection.block_n,
            spill_dir=str(config.output_path),
        )  # fmt: skip
        selections.update({(method, float(tau)): ids for tau, ids in chosen.items()})
    return selections


def execution(config: Config):
    """Where select's map and reduce tasks run (the run's executor, select's worker sizes)."""
    from colorfilter.dataset.work import Execution

    return Execution(
        config.executor, config.selection.num_workers, config.selection.worker_cpus, config.ray
    )


def _threshold(config: Config, method: str) -> str | None:
    top_k = method in ("color", "dsir")
    return "min_selected" if top_k and not config.selection.documents else None


def count_rows(paths: list[Path]) -> int:
    """Rows (chunks) of parquet shards, from their footers."""
    import pyarrow.parquet as pq

    return sum(pq.ParquetFile(path).metadata.num_rows for path in paths)


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


def _model_dirs(out: Path) -> dict[str, Path]:
    dirs = {"prior": out / "models" / "prior", "conditional": out / "models" / "conditional"}
    return {name: path for name, path in dirs.items() if path.is_dir()}


def _document_accounting(out: Path) -> dict:
    """Input records -> documents + skipped (by reason), from the prepare stage's stats."""
    stats_path = out / "tokens" / "pool" / "stats.json"
    if not stats_path.exists():
        return {}
    stats = read_json(stats_path)
    keys = ("files", "records", "documents", "tokens", "chunks", "tail_tokens_dropped", "skipped")
    return {key: stats.get(key) for key in keys}


def dsir_weight_shards(config: Config) -> list[Path]:
    """DSIR log importance weights of every pool chunk (target = downstream train), cached.

    Written to OUTPUT/scores/dsir/ with the token shards' names; reused when present. Counting
    and weighting run as executor tasks, one per shard (pipeline/dsir_tasks.py).
    """
    out = config.output_path
    token_paths = list_shards(out / "tokens" / "pool")
    target_paths = list_shards(out / "tokens" / "downstream_train")
    if not target_paths:
        raise ConfigError(
            "method 'dsir' needs the downstream train split: set data.downstream_train"
        )
    weight_dir = out / "scores" / "dsir"
    wanted = [weight_dir / p.name for p in token_paths]
    if all(p.exists() for p in wanted):
        return wanted
    from colorfilter.pipeline.dsir_tasks import write_dsir_weights

    write_dsir_weights(execution(config), out / "tokenizer", target_paths, token_paths, wanted)
    return wanted
