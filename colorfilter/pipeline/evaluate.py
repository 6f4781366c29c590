"""The evaluate stage: train a target model per (method, tau, seed) and on a random-data curve.

Every method at a tau trains on the same number of tokens (the budget: `train_tokens`, or the
smallest selection's full chunks at that tau), from the same initialisation, with a cosine
schedule annealed to the end of the run; a smaller selection is repeated in seeded shuffled
passes. Each run's record is a colorfilter.io.commit unit under OUTPUT/eval/runs/; a rerun
skips the runs whose record carries the same run hash (`evaluate_runs.py`, which trains the rest as
executor tasks, `evaluate.workers` at a time). The report is rebuilt from the records every time.

Planning (`plan_evaluation`, everything before the first target model trains) holds no
pool-sized array: two passes over the pool's token shards (pool.take_census, survey.survey),
the selections as select computes them (evaluate_selections.py), and the runs' own chunks.

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
from colorfilter.errors import ConfigError
from colorfilter.evaluation.bysource import composition as composition_of
from colorfilter.evaluation.bysource import histograms, scores_by_source, source_groups
from colorfilter.evaluation.config import EvaluateConfig
from colorfilter.evaluation.multiple_choice import items_digest, load_items
from colorfilter.evaluation.oracle import LABEL_ORACLE
from colorfilter.evaluation.plan import (
    CURVE_TAU,
    EvaluationPlan,
    PlannedRun,
    RunData,
    RunSpec,
    ScoreHistograms,
    budgets,
    lay_out_selection,
    planned,
    run_data,
    run_specs,
    sorted_unique,
)
from colorfilter.evaluation.pool import Census, is_target, take_census
from colorfilter.evaluation.report import write_reports
from colorfilter.evaluation.survey import Survey, SurveyRequest, survey
from colorfilter.evaluation.train import TargetSetup
from colorfilter.io import storage
from colorfilter.io.atomic import remove_stale_temps
from colorfilter.io.cache import local_copy
from colorfilter.io.location import Location
from colorfilter.io.token_shards import prepared_shard_locations, shard_locations
from colorfilter.layout import RunLayout
from colorfilter.models.checkpoints import load_tokenizer
from colorfilter.models.data import ChunkIndex
from colorfilter.pipeline.evaluate_runs import run_all
from colorfilter.pipeline.evaluate_selections import (
    Selections,
    method_selections,
    oracle,
    overlap_with_color,
)
from colorfilter.pipeline.select import ScoreSource, score_source

log = logging.getLogger(__name__)

HISTOGRAM_BINS = 60  # score histogram bins of the by-source plot


def run_evaluate(config: Config, overwrite: bool = False) -> dict[str, Any]:
    """Run (or reuse) every evaluation run, then write OUTPUT/eval/report.{json,md} and plots."""
    started = time.perf_counter()
    layout = RunLayout.of(config)
    plan = plan_evaluation(config)
    runs_dir = layout.eval_runs
    storage.makedirs(runs_dir)
    if runs_dir.is_local:  # an aborted upload leaves nothing on a bucket
        remove_stale_temps(runs_dir.path)
    layout.withdraw_stage("evaluate")  # first: the old report no longer stands for the runs
    records = run_all(plan.runs, plan.cfg, plan.setup, runs_dir, overwrite, config.executor,
                      config.ray)  # fmt: skip
    report = write_reports(layout.eval, plan, records, time.perf_counter() - started)
    written = [info.location for info in storage.find(layout.eval)]
    layout.finish_stage("evaluate", written, {"runs": len(records)})
    return report


def plan_evaluation(config: Config) -> EvaluationPlan:
    """Everything before the first target model trains: the selections, the budgets, every
    run's chunks and order (and its hash), and the report's numbers about the pool."""
    cfg: EvaluateConfig = config.evaluate
    token_paths, source = _checked_inputs(config, cfg, RunLayout.of(config))
    scores = source.shards if source.kind == "lm" else None
    census = take_census(token_paths, config.seq_len, scores)
    selections = method_selections(config, cfg, source, token_paths)
    if LABEL_ORACLE in cfg.methods:
        selections.update(oracle(config, cfg, census, source))
    counts = {key: census.full_count(ids) for key, ids in selections.items()}
    budget = budgets(cfg, counts, config.seq_len)
    available = census.full_chunks if cfg.random_multiples else 0
    method_specs, curve_specs = run_specs(cfg, budget, available)
    setup = target_setup(config)
    specs = list(dict.fromkeys(method_specs + curve_specs))
    drawn = {spec for spec in specs if _draws_from_pool(spec, census)}
    laid_out = _lay_out([s for s in specs if s not in drawn], selections, census, cfg, setup)
    request = _request(cfg, drawn, selections, census, laid_out)
    overlap = overlap_with_color(cfg, selections)
    del selections  # the survey's request holds the ones the report's compositions need
    found = survey(census, request, config.seq_len, scores)
    runs = _located(specs, laid_out, found, census, (cfg, setup), request.locate)
    plan = EvaluationPlan(
        cfg, config.seq_len, config.selection.documents, budget, method_specs, curve_specs,
        runs, setup, overlap=overlap,
    )  # fmt: skip
    _pool_numbers(plan, census, found, request)
    return plan


def _draws_from_pool(spec: RunSpec, census: Census) -> bool:
    """A random run at tau 1 (the random curve's) trains on the first chunks of a seeded pass
    over the whole pool: drawn as the pool streams by (survey), unless it must repeat it."""
    return spec.method == "random" and spec.tau == CURVE_TAU and spec.n_chunks <= census.full_chunks


def _lay_out(specs: list[RunSpec], selections: Selections, census: Census,
             cfg: EvaluateConfig, setup: Any) -> dict[RunSpec, RunData]:  # fmt: skip
    """Each method run's chunks and order from its selection (one selection at a time)."""
    return {
        spec: lay_out_selection(spec, selections[(spec.method, spec.tau)], census, cfg, setup)
        for spec in specs
    }


def _request(cfg: EvaluateConfig, drawn: set[RunSpec], selections: Selections, census: Census,
             laid_out: dict[RunSpec, RunData]) -> SurveyRequest:  # fmt: skip
    """What pass 2 must find: compositions, the method runs' chunks, the curve's draws, and
    score histograms where the pool has labels and LM scores."""
    request = SurveyRequest()
    if census.labels is not None:
        request.selections = {
            (m, float(t)): selections[(m, float(t))] for t in cfg.taus for m in cfg.methods
        }
        if census.moments is not None and census.score_range is not None:
            request.bins = np.linspace(*census.score_range, HISTOGRAM_BINS)
    if laid_out:
        request.locate = sorted_unique(np.concatenate([d.seq_ids for d in laid_out.values()]))
    for spec in drawn:
        request.draws[spec.seed] = max(request.draws.get(spec.seed, 0), spec.n_chunks)
    return request


def _located(specs: list[RunSpec], laid_out: dict[RunSpec, RunData], found: Survey,
             census: Census, settings: tuple, locate: np.ndarray) -> list[PlannedRun]:  # fmt: skip
    """Every run with its chunks' shard and row (from pass 2)."""
    located = _index(census, locate, *found.located)
    drawn = {seed: _drawn_index(census, draw) for seed, draw in found.drawn.items()}
    runs = []
    for spec in specs:
        if spec not in laid_out:  # the first n_chunks of the pool's seeded pass
            trained = found.drawn[spec.seed][0][: spec.n_chunks]
            data = run_data(spec, trained, census.full_chunks, census.digest, *settings)
            index = drawn[spec.seed]
        else:
            data, index = laid_out[spec], located
        runs.append(planned(data, index.take(np.searchsorted(index.seq_id, data.seq_ids))))
    return runs


def _index(census: Census, seq_ids: np.ndarray, number: np.ndarray, row: np.ndarray
           ) -> ChunkIndex:  # fmt: skip
    """Full-length chunks (ascending seq_ids) as a ChunkIndex into the pool's shards."""
    n_tokens = np.full(len(seq_ids), census.seq_len, np.int32)
    return ChunkIndex(census.paths, number.astype(np.int32), row.astype(np.int64), seq_ids,
                      n_tokens)  # fmt: skip


def _drawn_index(census: Census, draw: tuple[np.ndarray, np.ndarray, np.ndarray]) -> ChunkIndex:
    seq_ids, number, row = draw
    ascending = np.argsort(seq_ids, kind="stable")
    return _index(census, seq_ids[ascending], number[ascending], row[ascending])


def _pool_numbers(plan: EvaluationPlan, census: Census, found: Survey,
                  request: SurveyRequest) -> None:  # fmt: skip
    """The report's numbers about the pool: compositions, scores and histograms by source."""
    cfg = plan.cfg
    plan.composition = {f"{m}-tau{t:g}": None for t in cfg.taus for m in cfg.methods}
    if census.labels is None:
        return
    names = census.labels.labels()
    target = census.labels.mask(cfg.target_source) if cfg.target_source else None
    for (method, tau), selected in found.selected.items():
        plan.composition[f"{method}-tau{tau:g}"] = composition_of(
            names, selected, census.tokens_by_code, target
        )
    if census.moments is None:
        return
    shown = census.labels.labels(none="(none)")
    shown_target = is_target(shown, cfg.target_source) if cfg.target_source else None
    groups = source_groups(shown, census.chunks_by_code, shown_target)
    plan.scores_by_source = scores_by_source(groups, census.moments)
    if found.histograms is not None:
        counts = np.pad(found.histograms, ((0, max(len(shown) - len(found.histograms), 0)), (0, 0)))
        plan.histograms = ScoreHistograms(request.bins, histograms(groups, counts))


def _checked_inputs(
    config: Config, cfg: EvaluateConfig, layout: RunLayout
) -> tuple[list[Location], ScoreSource]:
    token_paths = prepared_shard_locations(layout.tokens("pool"))
    source = score_source(config, layout, token_paths, cfg.methods, (cfg.taus, "evaluate.taus"))
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
    return token_paths, source


def _is_file(path: str, config: Config) -> bool:
    """A file on disk, or an object on a bucket / the hub (not a folder)."""
    loc = Location.parse(path, config.storage, "evaluate.multiple_choice")
    return storage.exists(loc) and not storage.is_dir(loc)


def target_setup(config: Config) -> TargetSetup:
    """What every run shares: the model's vocabulary and special ids, the held-out split, the
    multiple-choice items (the tokenizer checked against the one prepare used)."""
    layout = RunLayout.of(config)
    layout.check_tokenizer()
    tokenizer_dir = local_copy(layout.tokenizer)  # a remote one is fetched once per node
    tokenizer, pad_id = load_tokenizer(tokenizer_dir)
    mc_items, mc_digest = (), ""
    if config.evaluate.multiple_choice:
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
