"""The distill stage: teach a cheap scorer the LM pair's score, then cheap-score the pool.

1. The LM pair scores the sample (`cascade.sample_fraction` of the pool, by a hash of seq_id)
   with the score stage's own workers: `scores/sample/<shard>.parquet`, one unit per token
   shard, keeping each row's tokens and per-position loss differences.
2. The cheap scorer is trained on the non-held-out sample and measured on the held-out part:
   `models/cheap/` (colorfilter.distill.train), with `fidelity.json` and `fidelity.png` to read
   before paying for the LM pass over the candidates.
3. Every pool chunk gets a cheap score: executor tasks, one per token shard, on any node and
   backend, resumable per shard (`scores/cheap/<shard>.parquet`).
4. With `cascade.enabled`: the candidates (top keep_ratio x N / tau_min by cheap score) and the
   estimated recall of each tau's top chunks (`scores/cheap/candidates.npy`).
`scores/cheap/stats.json` holds the summary; the stage's marker (`distill.done.json`, through
RunLayout.finish_stage) is written last and lists every unit's record.

It runs when the cascade is enabled or a method is `color_distilled`.
"""

from __future__ import annotations

import time
from typing import Any

from colorfilter.config import Config
from colorfilter.dataset.provenance import recorded_entries
from colorfilter.distill.candidates import plan_candidates, planned_recall
from colorfilter.distill.cheap import CheapTask, CheapWorker
from colorfilter.distill.config import DISTILLED, distill_wanted, requested_taus
from colorfilter.distill.model import CheapModel
from colorfilter.distill.rows import SampleRows
from colorfilter.distill.sample import SampleSpec
from colorfilter.distill.train import TrainInputs, train_cheap_model
from colorfilter.errors import ConfigError
from colorfilter.fingerprint import fingerprint
from colorfilter.io import storage
from colorfilter.io.location import Location
from colorfilter.io.token_shards import prepared_shard_locations
from colorfilter.layout import MODEL_RECORD, RunLayout
from colorfilter.pipeline import executor
from colorfilter.pipeline.executor import WorkerSpec
from colorfilter.pipeline.score import ScoreTask, prepare_scoring, score_tasks
from colorfilter.progress import Progress
from colorfilter.scoring.shard import done_record_path, pending_shards


def run_distill(config: Config, overwrite: bool = False) -> dict[str, Any]:
    """Run the four steps (each resumable); return the stage's summary."""
    if not distill_wanted(config):
        raise ConfigError(
            "distill has nothing to do: cascade.enabled is false and no method is "
            f"{DISTILLED}; set --set cascade.enabled=true (see README: Cascade)"
        )
    started = time.perf_counter()
    run = RunLayout.of(config)
    token_shards = prepared_shard_locations(run.tokens("pool"))
    target_shards = prepared_shard_locations(run.tokens("downstream_train"))
    sample = SampleSpec.of(config)
    setup = prepare_scoring(config, run, run.sample_scores, overwrite)
    setup = setup.with_fingerprint("cascade-sample", fingerprint(sample.as_dict()))
    todo = token_shards if overwrite else pending_shards(
        token_shards, run.sample_scores, setup.shard.fingerprint
    )
    run.withdraw_stage("distill")  # first: until the end, this stage has not finished
    entries = recorded_entries(token_shards)  # token shards are checked against their records
    tasks = [ScoreTask(t, run.sample_scores.join(t.name), SampleRows(sample), entries[t.url])
             for t in todo]  # fmt: skip
    sample_stats = score_tasks(config, setup, tasks, "distill: sample",
                               len(token_shards) - len(tasks))  # fmt: skip
    tick = time.perf_counter()
    inputs = TrainInputs(
        [run.sample_scores.join(t.name) for t in token_shards], target_shards, sample,
        config.cascade, setup.shard.fingerprint, requested_taus(config),
    )  # fmt: skip
    model, report = train_cheap_model(inputs, run.cheap_model)
    train_s = time.perf_counter() - tick
    cheap = cheap_score_pool(config, run, model, token_shards, overwrite, entries)
    stats: dict[str, Any] = {
        "sample": {"shards_scored_now": len(sample_stats),
                   "tokens_scored_now": sum(s["tokens"] for s in sample_stats)},
        "cheap_model": {"fidelity": report, "seconds": round(train_s, 2),
                        "digest": model.digest[:16]},
        "cheap_scores": cheap,
    }  # fmt: skip
    if config.cascade.enabled:
        tau_min = config.cascade.planned_tau(config.selection.tau)
        cheap_shards = [run.cheap_scores.join(t.name) for t in token_shards]
        plan = plan_candidates(run, cheap_shards, sample, config.cascade.keep_ratio, tau_min)
        plan["recall_estimate"] = planned_recall(run, plan, requested_taus(config))
        stats["candidates"] = plan
    stats["seconds"] = round(time.perf_counter() - started, 2)
    storage.write_json(run.distill_stats, stats)
    listed = [run.distill_stats, run.cheap_model.join(MODEL_RECORD)]
    listed += [done_record_path(folder.join(t.name)) for t in token_shards
               for folder in (run.sample_scores, run.cheap_scores)]  # fmt: skip
    if "candidates" in stats:
        listed.append(run.candidates)
    run.finish_stage("distill", listed, {"candidates": stats.get("candidates")})
    return stats


def cheap_score_pool(config: Config, run: RunLayout, model: CheapModel,
                     token_shards: list[Location], overwrite: bool,
                     entries: dict) -> dict[str, Any]:  # fmt: skip
    """Cheap scores for every token shard (the unfinished ones as executor tasks)."""
    fingerprint = model.digest[:16]
    todo = token_shards if overwrite else pending_shards(
        token_shards, run.cheap_scores, fingerprint
    )
    tasks = [CheapTask(t, run.cheap_scores.join(t.name), entries.get(t.url)) for t in todo]
    cfg = config.cascade
    spec = WorkerSpec(CheapWorker, (run.cheap_model, model.digest), num_cpus=cfg.worker_cpus)
    progress = Progress("distill: cheap scores", len(tasks), unit="tokens")
    shard_stats = []
    stream = executor.map_tasks(spec, tasks, executor=config.executor, num_workers=cfg.num_workers,
                       ray_cfg=config.ray)  # fmt: skip
    for _task, result in stream:
        shard_stats.append(result)
        progress.update(1, result["tokens"], note=result["shard"])
    progress.close(f"({len(token_shards) - len(tasks)} shards already done, skipped)")
    tokens = sum(s["tokens"] for s in shard_stats)
    cpu = sum(s["predict_cpu_s"] for s in shard_stats)
    return {
        "shards": len(token_shards),
        "shards_scored_now": len(shard_stats),
        "tokens_scored_now": tokens,
        "tokens_per_cpu_s": round(tokens / cpu, 1) if cpu > 0 else None,  # per core
    }
