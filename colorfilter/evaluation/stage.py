"""The evaluate stage: train a target model per (method, tau, seed) and on a random-data curve.

Every method at a tau trains on the same number of tokens (the budget: `train_tokens`, or the
smallest selection's full-chunk tokens at that tau), from the same initialisation, with a cosine
schedule annealed to the end of the run; a smaller selection is repeated in seeded shuffled
passes. Each run writes OUTPUT/eval/runs/<name>.json whole; a rerun skips the runs whose
record carries the same run hash (`runs.py`, which trains the rest as executor tasks,
`evaluate.workers` at a time).
The report is rebuilt from those records every time.

OUTPUT may be a bucket: every path comes from colorfilter.layout.RunLayout, the shards are read
through colorfilter.io.transfer, the tokenizer from a node-local copy (colorfilter.io.cache), and
the records and report files are written through the storage layer.
"""

from __future__ import annotations

import logging
import time
from typing import Any

import numpy as np

from colorfilter.config import Config, cascade_method_problems
from colorfilter.configtools import raise_problems
from colorfilter.errors import BadDataError, ConfigError
from colorfilter.evaluation.config import EvaluateConfig
from colorfilter.evaluation.oracle import LABEL_ORACLE, label_oracle
from colorfilter.evaluation.plan import Pool, full_chunks, round_to_batches
from colorfilter.evaluation.runs import RunSpec, plan_run, run_all
from colorfilter.io import storage
from colorfilter.io.atomic import remove_stale_temps
from colorfilter.io.location import Location
from colorfilter.io.token_shards import prepared_shard_locations, shard_locations
from colorfilter.io.transfer import read_parquet
from colorfilter.layout import RunLayout
from colorfilter.pipeline.select import (
    ScoreSource,
    check_pool_size,
    compute_selections,
    score_source,
)

log = logging.getLogger(__name__)

NEAR = 0.03  # random-curve points closer than this (relative token count) are run once
# Random-curve runs draw from the whole pool, so a point larger than a tau's random selection
# still sees distinct chunks (a selection would be repeated, or capped to its own size).
CURVE_TAU = 1.0


def run_evaluate(config: Config, overwrite: bool = False) -> dict[str, Any]:
    """Run (or reuse) every evaluation run, then write OUTPUT/eval/report.{json,md} and plots."""
    from colorfilter.evaluation.report import write_reports

    started = time.perf_counter()
    cfg: EvaluateConfig = config.evaluate
    layout = RunLayout.of(config)
    token_paths, source = _checked_inputs(config, cfg, layout)
    pool = Pool.read(token_paths)
    scores = _read_scores(source, pool)
    pool_scores = _pool_scores(pool, scores)
    selections = _selections(config, cfg, source)
    if LABEL_ORACLE in cfg.methods:
        selections.update(_oracle_selections(cfg, pool, pool_scores["score"]))
    budgets = _budgets(cfg, pool, selections, config.seq_len)
    method_specs, curve_specs = _plan_runs(cfg, pool, selections, budgets, config.seq_len)
    setup = target_setup(config)
    runs_dir = layout.eval_runs
    storage.makedirs(runs_dir)
    if runs_dir.is_local:  # an aborted upload leaves nothing on a bucket
        remove_stale_temps(runs_dir.path)
    runs = [
        plan_run(spec, selections[(spec.method, spec.tau)], pool, cfg, setup)
        for spec in dict.fromkeys(method_specs + curve_specs)
    ]
    layout.withdraw_stage("evaluate")  # first: the old report no longer stands for the runs
    records = run_all(runs, cfg, setup, runs_dir, overwrite, config.executor, config.ray)
    report = write_reports(
        layout.eval,
        cfg,
        pool,
        selections,
        budgets,
        method_specs,
        curve_specs,
        records,
        config.seq_len,
        time.perf_counter() - started,
        pool_scores,
    )
    written = [info.location for info in storage.find(layout.eval)]
    layout.finish_stage("evaluate", written, {"runs": len(records)})
    return report


def _read_scores(source: ScoreSource, pool: Pool) -> Any:
    """The pool's LM score columns (for the by-source report and the label oracle). Refused
    before any training unless there is one row per pool chunk (the cascade's scores: one per
    LM-scored chunk)."""
    import pyarrow as pa

    columns = ["seq_id", "prior_loss", "cond_loss", "score"]
    if source.kind != "lm":
        return None
    scores = pa.concat_tables([read_parquet(path, columns=columns) for path in source.shards])
    expected = source.cascade["lm_scored_chunks"] if source.cascade else len(pool.index)
    if scores.num_rows != expected:
        what = "chunks the cascade scored" if source.cascade else "chunks"
        raise BadDataError(
            f"the pool's score shards hold {scores.num_rows:,} rows for {expected:,} {what}: "
            "rerun `colorfilter score`"
        )
    return scores


def _pool_scores(pool: Pool, scores: Any) -> dict[str, np.ndarray] | None:
    """Each pool row's losses and score, in the pool's row order (for the by-source report);
    NaN for chunks the LM pair did not score (the cascade's prefiltered ones)."""
    if scores is None:
        return None
    rows = pool.positions(scores.column("seq_id").to_numpy())
    out = {}
    for name in ("prior_loss", "cond_loss", "score"):
        out[name] = np.full(len(pool.index), np.nan, dtype=np.float32)
        out[name][rows] = scores.column(name).to_numpy()
    return out


def _checked_inputs(
    config: Config, cfg: EvaluateConfig, layout: RunLayout
) -> tuple[list[Location], ScoreSource]:
    token_paths = prepared_shard_locations(layout.tokens("pool"))
    source = score_source(config, layout, token_paths, cfg.methods)
    if source.cascade is not None:
        raise_problems(cascade_method_problems(cfg.methods, "evaluate.methods"))
    if not shard_locations(layout.tokens("downstream_eval")):
        if config.data.downstream_eval:  # set, but not prepared or prepared to nothing: say which
            prepared_shard_locations(layout.tokens("downstream_eval"))
        raise ConfigError("evaluate needs held-out target data: set data.downstream_eval")
    raise_problems(cfg.validate("evaluate"))  # again: the section may be edited after load
    missing = [path for path in cfg.multiple_choice if not _is_file(path, config)]
    if missing:
        raise ConfigError(f"evaluate.multiple_choice: no such file {missing}")
    check_pool_size(source.pool_rows, cfg.taus, config.selection.min_chunks, "evaluate.taus")
    return token_paths, source


def _is_file(path: str, config: Config) -> bool:
    """A file on disk, or an object on a bucket / the hub (not a folder)."""
    loc = Location.parse(path, config.storage, "evaluate.multiple_choice")
    return storage.exists(loc) and not storage.is_dir(loc)


def _curve_taus(cfg: EvaluateConfig) -> list[float]:
    return [CURVE_TAU] if cfg.random_multiples else []


def _selections(
    config: Config, cfg: EvaluateConfig, source: ScoreSource
) -> dict[tuple[str, float], np.ndarray]:
    """Chosen seq_ids per (method, tau); random also at the random curve's ratios (each method
    streams what it ranks, as select does)."""
    wanted = {method: list(cfg.taus) for method in cfg.methods if method != LABEL_ORACLE}
    wanted.setdefault("random", [])
    wanted["random"] = sorted(set(wanted["random"]) | set(_curve_taus(cfg)) | set(cfg.taus))
    selections = {}
    for method, taus in wanted.items():  # select's own code and settings (temperature, block_n)
        selections.update(compute_selections(config, [method], taus, source, "evaluate"))
    return selections


def _oracle_selections(
    cfg: EvaluateConfig, pool: Pool, score: np.ndarray
) -> dict[tuple[str, float], np.ndarray]:
    """The label oracle's selections: it reads the pool's `source` labels, as no method may."""
    if pool.source is None:
        raise ConfigError(
            f"evaluate.methods: {LABEL_ORACLE} needs the pool's `source` labels; the token "
            "shards have none (set data.source_field and rerun prepare)"
        )
    target_like = pool.source.mask(cfg.target_source)
    chosen = label_oracle(pool.index.seq_id, score, target_like, cfg.taus)
    return {(LABEL_ORACLE, tau): ids for tau, ids in chosen.items()}


def _budgets(cfg: EvaluateConfig, pool: Pool, selections: dict, seq_len: int) -> dict[float, int]:
    """Chunks per run at each tau: the configured tokens, or the smallest selection's."""
    budgets = {}
    for tau in cfg.taus:
        if cfg.train_tokens > 0:
            n_chunks = cfg.train_tokens // seq_len
        else:
            n_chunks = min(
                len(full_chunks(pool, selections[(m, float(tau))], seq_len)) for m in cfg.methods
            )
        budgets[float(tau)] = round_to_batches(n_chunks, cfg.batch_size)
        if budgets[float(tau)] < cfg.batch_size:
            raise ConfigError(
                f"evaluate: at tau={tau:g} the budget ({n_chunks} chunks of "
                f"{seq_len} tokens) is less than one batch of {cfg.batch_size}"
            )
    return budgets


def _plan_runs(
    cfg: EvaluateConfig, pool: Pool, selections: dict, budgets: dict[float, int], seq_len: int
) -> tuple[list[RunSpec], list[RunSpec]]:
    """Method runs at each tau's budget, and random-curve runs at multiples of it: one pass over
    that many distinct chunks of a seeded random order of the whole pool (capped by the pool).

    A curve point within `NEAR` of one already planned (the random method's run at the same
    budget, or the same multiple of an equal budget at another tau) is left out: it would cost a
    run and add nothing to the curve.
    """
    method_specs = [
        RunSpec(m, float(tau), budgets[float(tau)], seed)
        for seed in cfg.seeds
        for tau in cfg.taus
        for m in cfg.methods
    ]
    wanted = [
        RunSpec("random", float(tau), budgets[float(tau)], seed)
        for seed in cfg.seeds
        for tau in cfg.taus
    ]
    pool_random = selections.get(("random", CURVE_TAU), np.empty(0, np.uint64))
    available = len(full_chunks(pool, pool_random, seq_len))  # 0 without random_multiples
    for seed in cfg.seeds:
        for tau in cfg.taus:
            for multiple in sorted(cfg.random_multiples):
                n_chunks = round_to_batches(
                    min(int(multiple * budgets[float(tau)]), available), cfg.batch_size
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


def target_setup(config: Config) -> Any:
    from colorfilter.evaluation.train import TargetSetup
    from colorfilter.io.cache import local_copy
    from colorfilter.models.checkpoints import load_tokenizer

    layout = RunLayout.of(config)
    layout.check_tokenizer()
    tokenizer_dir = local_copy(layout.tokenizer)  # a remote one is fetched once per node
    tokenizer, pad_id = load_tokenizer(tokenizer_dir)
    mc_items, mc_digest = (), ""
    if config.evaluate.multiple_choice:
        from colorfilter.evaluation.multiple_choice import items_digest, load_items

        paths = config.evaluate.multiple_choice
        mc_items = tuple(load_items(paths, tokenizer, config.seq_len, config.storage))
        mc_digest = items_digest(mc_items)
    return TargetSetup(
        vocab_size=len(tokenizer),
        pad_id=pad_id,
        eos_id=tokenizer.eos_token_id,
        bos_id=tokenizer.bos_token_id,
        seq_len=config.seq_len,
        eval_paths=shard_locations(layout.tokens("downstream_eval")),
        device=config.device,
        mc_items=mc_items,
        mc_digest=mc_digest,
    )
