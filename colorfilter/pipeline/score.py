"""The score stage: an actor pool where each actor holds both models and scores whole shards.

One score shard per token shard (same name) in OUTPUT/scores/pool/, each a unit committed with
its completion record (colorfilter.scoring.shard); a rerun skips verified shards and redoes the
rest. Per-shard stats and the totals go to OUTPUT/scores/pool/stats.json. OUTPUT may be a bucket:
the driver lists, plans and records through the storage layer, and each actor (on any node, no
shared disk) fetches both models by URL into its node's cache and reads and writes its shards
in the store.

Under the cascade (`cascade.enabled`) each task scores only its shard's candidates and merges in
the sample's rows that `distill` already scored (colorfilter.distill.rows); the stats count the
chunks the prefilter skipped. The same workers score the cascade's sample for `distill`
(`prepare_scoring` + `score_tasks`).
"""

from __future__ import annotations

import hashlib
import sys
import time
from collections.abc import Sequence
from dataclasses import dataclass

from colorfilter.config import Config
from colorfilter.dataset.provenance import recorded_entries
from colorfilter.distill.rows import candidate_plan
from colorfilter.errors import ColorFilterError, ConfigError
from colorfilter.io import storage
from colorfilter.io.atomic import remove_stale_temps
from colorfilter.io.cache import local_copy
from colorfilter.io.commit import committed
from colorfilter.io.faults import reading
from colorfilter.io.location import Location, as_location
from colorfilter.io.token_shards import prepared_shard_locations
from colorfilter.layout import MODEL_CHECKPOINT, RunLayout
from colorfilter.models.checkpoints import verified_model
from colorfilter.pipeline import executor
from colorfilter.pipeline.executor import WorkerSpec, init_ray
from colorfilter.pipeline.retry import is_cuda_oom
from colorfilter.progress import Progress
from colorfilter.scoring.base import build_scorer
from colorfilter.scoring.config import ScoreConfig
from colorfilter.scoring.precision import check_resume_precision, resolve_precision
from colorfilter.scoring.shard import (
    ScoreTask,
    ShardScoring,
    done_record_path,
    pending_shards,
    score_token_shard,
    scoring_fingerprint,
)

__all__ = ["ScoreSetup", "ScoreTask", "ScoreWorker", "prepare_scoring", "run_score", "score_tasks"]


@dataclass(frozen=True)
class ScoreSetup:
    """What every scoring worker needs, decided once by the driver (picklable)."""

    prior_dir: Location
    cond_dir: Location
    cfg: ScoreConfig
    device: str
    shard: ShardScoring  # batch shape, padding and the LM fingerprint
    num_gpus: float = 0.0  # per actor

    def with_fingerprint(self, *parts: str) -> ScoreSetup:
        """The same workers for outputs of another kind (the cascade's sample or candidates):
        their shards' fingerprint adds `parts` to the LM pair's."""
        digest = hashlib.sha256("\0".join([self.shard.fingerprint or "", *parts]).encode())
        shard = ShardScoring(**{**self.shard.__dict__, "fingerprint": digest.hexdigest()[:16]})
        return ScoreSetup(self.prior_dir, self.cond_dir, self.cfg, self.device, shard,
                          self.num_gpus)  # fmt: skip


class ScoreWorker:
    """Loads the prior and the conditional once (a node-local copy of each); scores one token
    shard per call."""

    def __init__(self, setup: ScoreSetup):
        import torch


        cfg = setup.cfg
        torch.set_num_threads(cfg.torch_threads or max(1, int(cfg.worker_cpus)))
        self.setup = setup
        prior, cond = (local_copy(d, skip=(MODEL_CHECKPOINT,))
                       for d in (setup.prior_dir, setup.cond_dir))  # fmt: skip
        self.scorer = build_scorer(
            cfg.backend, prior, cond, cfg, device=setup.device, seq_len=setup.shard.seq_len
        )

    def __call__(self, task: ScoreTask) -> dict:
        """Score one shard; on CUDA out-of-memory retry it with half the batch (down to 1)."""
        how = self.setup.shard
        while True:
            try:
                stats = score_token_shard(task, self.scorer, how)
            except Exception as exc:  # noqa: BLE001 - only CUDA OOM is handled here
                if not is_cuda_oom(exc) or how.batch_size <= 1:
                    raise
                _free_cuda_cache()
                print(
                    f"score: CUDA out of memory on {as_location(task.token_path).name} at batch "
                    f"{how.batch_size}; retrying it with batch {how.batch_size // 2}",
                    file=sys.stderr, flush=True,
                )  # fmt: skip
                how = how.with_batch(how.batch_size // 2)
                continue
            return {**stats, "batch_size": how.batch_size}


def _free_cuda_cache() -> None:
    import gc

    import torch

    gc.collect()
    if torch.cuda.is_available():
        torch.cuda.empty_cache()


def prepare_scoring(
    config: Config, run: RunLayout, score_dir: Location, overwrite: bool = False
) -> ScoreSetup:
    """Check the models and the tokenizer, pick device and precision, fingerprint the pair.

    A resume that would score at another precision than the shards in `score_dir` is refused
    (unless `overwrite`: every shard is rescored).
    """
    run.require("train-prior")
    run.require("train-conditional")
    run.check_tokenizer()
    prior_dir, cond_dir = run.model("prior"), run.model("conditional")
    verified_model(prior_dir, "train-prior")  # sha256 of every file, before any worker loads
    verified_model(cond_dir, "train-conditional")
    pad_id = check_vocabularies(run.tokenizer, prior_dir, cond_dir)
    ray = init_ray(config.ray) if config.executor == "ray" and config.device != "cpu" else None
    num_gpus = _gpus_per_actor(config, ray)
    device = _worker_device(config, num_gpus, ray)
    precision = resolve_precision(config.score.precision, device, config.score.backend)
    if not overwrite:
        check_resume_precision(score_dir, precision)
    fingerprint = scoring_fingerprint(prior_dir, cond_dir, config.score, config.seq_len, precision)
    shard = ShardScoring(config.score.batch_size, config.seq_len, pad_id,
                         config.score.prefetch_batches, fingerprint)  # fmt: skip
    return ScoreSetup(prior_dir, cond_dir, config.score, device, shard, num_gpus)


def score_tasks(config: Config, setup: ScoreSetup, tasks: Sequence[ScoreTask], label: str,
                skipped: int = 0) -> list[dict]:  # fmt: skip
    """Run the tasks on the executor (one actor per GPU, or per `score.worker_cpus`), with
    progress; return each task's stats as they finished."""
    cfg = setup.cfg
    threads = str(cfg.torch_threads or max(1, int(cfg.worker_cpus)))
    spec = WorkerSpec(ScoreWorker, (setup,), num_cpus=cfg.worker_cpus, num_gpus=setup.num_gpus,
                      env_vars={"OMP_NUM_THREADS": threads})  # fmt: skip
    progress = Progress(label, len(tasks), unit="tokens")
    shard_stats = []
    stream = executor.map_tasks(spec, list(tasks), executor=config.executor,
                       num_workers=cfg.num_workers, ray_cfg=config.ray)  # fmt: skip
    for _task, stats in stream:
        shard_stats.append(stats)
        progress.update(1, stats["tokens"], note=f"{stats['rows_scored_now']} seqs in "
                                                 f"{stats['shard']}")  # fmt: skip
    progress.close(f"({skipped} shards already done, skipped)")
    return shard_stats


def run_score(config: Config, overwrite: bool = False) -> dict:
    """Score every pool chunk with both models (the candidates only, under the cascade);
    return totals."""
    run = RunLayout.of(config)
    token_shards = prepared_shard_locations(run.tokens("pool"))
    score_dir = run.scores
    if score_dir.is_local:
        remove_stale_temps(score_dir.path)  # object stores: an aborted write leaves nothing
    setup = prepare_scoring(config, run, score_dir, overwrite)
    plan = candidate_plan(config, run) if config.cascade.enabled else None
    if plan is not None:
        setup = setup.with_fingerprint("cascade-candidates", plan.digest)
    todo = token_shards if overwrite else pending_shards(
        token_shards, score_dir, setup.shard.fingerprint
    )
    entries = recorded_entries(todo)  # each token shard is checked against prepare's record
    tasks = [ScoreTask(t, score_dir.join(t.name), plan.rows(t) if plan else None, entries[t.url])
             for t in todo]  # fmt: skip
    if tasks or not run.has_run("score"):  # first: no old marker beside half-new shards
        run.withdraw_stage("score")
    start = time.perf_counter()
    shard_stats = score_tasks(config, setup, tasks, "score", len(token_shards) - len(tasks))
    summary = _summary(run, token_shards, shard_stats, time.perf_counter() - start)
    if plan is not None:
        summary["cascade"] = plan.accounting(summary)
    storage.write_json(run.score_stats, summary)
    records = [done_record_path(score_dir.join(t.name)) for t in token_shards]
    run.finish_stage("score", [run.score_stats, *records], {
        "fingerprint": setup.shard.fingerprint, "rows": summary["rows"],
        "pool_rows": summary["pool_rows"], "cascade": summary.get("cascade"),
    })  # fmt: skip
    return {k: v for k, v in summary.items() if k != "per_shard"}


def _gpus_per_actor(config: Config, ray) -> float:
    """One actor per GPU where the cluster has GPUs and the config allows them."""
    if ray is None or config.device == "cpu":
        return 0.0
    return config.score.worker_gpus if ray.cluster_resources().get("GPU", 0) > 0 else 0.0


def _worker_device(config: Config, num_gpus: float, ray=None) -> str:
    """The device the workers will score on, decided here so the fingerprint names it."""
    if config.device != "auto":
        return config.device
    if config.executor == "ray":
        if num_gpus <= 0:
            return "cpu"  # Ray hides GPUs from actors that ask for none
        cpus, wait_s = config.score.worker_cpus, config.ray.capacity_wait_s
        return "cuda" if _worker_sees_cuda(ray, cpus, num_gpus, wait_s) else "cpu"
    import torch

    return "cuda" if torch.cuda.is_available() else "cpu"


def _worker_sees_cuda(ray, num_cpus: float, num_gpus: float, timeout_s: float) -> bool:
    """Whether a worker holding these resources sees CUDA: the driver's node may have no GPU,
    and a cluster's "GPU" resource is a scheduling slot (declared, e.g., on a CPU test node)."""

    def probe() -> bool:
        import torch

        return bool(torch.cuda.is_available())

    ref = ray.remote(num_cpus=num_cpus, num_gpus=num_gpus)(probe).remote()
    ready, _ = ray.wait([ref], timeout=timeout_s)
    if not ready:
        ray.cancel(ref, force=True)
        raise ColorFilterError(
            f"no node could host a scoring worker ({num_cpus:g} CPU, {num_gpus:g} GPU) within "
            f"{timeout_s:g} s (ray.capacity_wait_s); rerun when the cluster has capacity"
        )
    return ray.get(ref)


def check_vocabularies(tokenizer_dir: Location, prior_dir: Location, cond_dir: Location) -> int:
    """The tokenizer must fit both models' vocabularies; return the pad id."""
    from transformers import AutoTokenizer

    with reading(tokenizer_dir):  # a torn tokenizer.json: one line naming the run's tokenizer
        tokenizer = AutoTokenizer.from_pretrained(local_copy(tokenizer_dir))
    sizes = {}
    for name, model_dir in (("prior", prior_dir), ("conditional", cond_dir)):
        model_config = storage.read_json(model_dir.join("config.json"))
        sizes[name] = model_config.get("vocab_size") or model_config.get("text_config", {}).get(
            "vocab_size"
        )
    if sizes["prior"] != sizes["conditional"]:
        raise ConfigError(f"the prior and the conditional have different vocabularies: {sizes}")
    if sizes["prior"] is not None and len(tokenizer) > sizes["prior"]:
        raise ConfigError(
            f"the tokenizer in {tokenizer_dir.url} has {len(tokenizer)} tokens but the models "
            f"({prior_dir.url}) have {sizes['prior']}: they were not trained with this tokenizer"
        )
    pad = tokenizer.pad_token_id if tokenizer.pad_token_id is not None else tokenizer.eos_token_id
    return int(pad)


def _summary(
    run: RunLayout, token_shards: list[Location], shard_stats: list[dict], seconds: float
) -> dict:
    """The totals for OUTPUT/scores/pool/stats.json; the row total comes from the shards'
    records (committed: every shard is whole), one concurrent read instead of a parquet footer
    per shard."""
    records = [done_record_path(run.scores.join(t.name)) for t in token_shards]
    complete = committed(records)
    missing = [r.url for r in records if r.url not in complete]
    if missing:
        raise ColorFilterError(f"score shard record {missing[0]} is missing after scoring")
    metas = [complete[r.url].meta for r in records]
    rows = sum(int(meta["rows"]) for meta in metas)
    tokens = sum(s["tokens"] for s in shard_stats)
    return {
        "shards": len(token_shards),
        "shards_scored_now": len(shard_stats),
        "shards_skipped": len(token_shards) - len(shard_stats),
        "rows": rows,
        "pool_rows": sum(int(meta.get("token_rows", meta["rows"])) for meta in metas),
        "tokens_scored_now": tokens,
        "seconds": round(seconds, 2),
        "tokens_per_s": round(tokens / seconds, 1) if shard_stats and seconds > 0 else None,
        "peak_host_rss_mb": max((s.get("peak_host_rss_mb", 0) for s in shard_stats), default=None),
        "per_shard": sorted(shard_stats, key=lambda s: s["shard"]),
    }
