"""The score stage: an actor pool where each actor holds both models and scores whole shards.

One score shard per token shard (same name) in OUTPUT/scores/pool/, each a unit committed with
its completion record (colorfilter.scoring.shard); a rerun skips verified shards and redoes the
rest. Per-shard stats and the totals go to OUTPUT/scores/pool/stats.json. OUTPUT may be a bucket:
the driver lists, plans and records through the storage layer, and each actor (on any node, no
shared disk) fetches both models by URL into its node's cache and reads and writes its shards
in the store.
"""

from __future__ import annotations

import sys
import time
from dataclasses import dataclass

from colorfilter.config import Config
from colorfilter.errors import ColorFilterError, ConfigError
from colorfilter.io import storage
from colorfilter.io.atomic import remove_stale_temps
from colorfilter.io.faults import reading
from colorfilter.io.location import Location, as_location
from colorfilter.io.token_shards import prepared_shard_locations
from colorfilter.layout import MODEL_CHECKPOINT, RunLayout
from colorfilter.scoring.config import ScoreConfig


@dataclass(frozen=True)
class ScoreTask:
    token_path: str | Location  # a Location from the driver; local paths are accepted too
    score_path: str | Location


class ScoreWorker:
    """Loads the prior and the conditional once (a node-local copy of each); scores one token
    shard per call."""

    def __init__(
        self,
        prior_dir: str | Location,
        cond_dir: str | Location,
        cfg: ScoreConfig,
        device: str,
        seq_len: int,
        pad_id: int,
        fingerprint: str,
    ):
        import torch

        from colorfilter.io.cache import local_copy
        from colorfilter.scoring.base import build_scorer

        torch.set_num_threads(cfg.torch_threads or max(1, int(cfg.worker_cpus)))
        self.cfg, self.seq_len, self.pad_id, self.fingerprint = cfg, seq_len, pad_id, fingerprint
        prior, cond = (local_copy(d, skip=(MODEL_CHECKPOINT,)) for d in (prior_dir, cond_dir))
        self.scorer = build_scorer(cfg.backend, prior, cond, cfg, device=device, seq_len=seq_len)

    def __call__(self, task: ScoreTask) -> dict:
        """Score one shard; on CUDA out-of-memory retry it with half the batch (down to 1)."""
        from colorfilter.pipeline.retry import is_cuda_oom
        from colorfilter.scoring.shard import score_token_shard

        batch_size = self.cfg.batch_size
        while True:
            try:
                stats = score_token_shard(
                    task.token_path, task.score_path, self.scorer, batch_size, self.seq_len,
                    self.pad_id, self.cfg.prefetch_batches, self.fingerprint,
                )  # fmt: skip
            except Exception as exc:  # noqa: BLE001 - only CUDA OOM is handled here
                if not is_cuda_oom(exc) or batch_size <= 1:
                    raise
                _free_cuda_cache()
                print(
                    f"score: CUDA out of memory on {as_location(task.token_path).name} at batch "
                    f"{batch_size}; retrying it with batch {batch_size // 2}",
                    file=sys.stderr, flush=True,
                )  # fmt: skip
                batch_size //= 2
                continue
            return {**stats, "batch_size": batch_size}


def _free_cuda_cache() -> None:
    import gc

    import torch

    gc.collect()
    if torch.cuda.is_available():
        torch.cuda.empty_cache()


def run_score(config: Config, overwrite: bool = False) -> dict:
    """Score every pool chunk with both models; return totals."""
    from colorfilter.pipeline.executor import WorkerSpec, init_ray, map_tasks
    from colorfilter.progress import Progress
    from colorfilter.scoring.precision import check_resume_precision, resolve_precision
    from colorfilter.scoring.shard import pending_shards, scoring_fingerprint

    run = RunLayout.of(config)
    run.require("train-prior")
    run.require("train-conditional")
    run.require("prepare")
    prior_dir, cond_dir = run.model("prior"), run.model("conditional")
    pad_id = _check_vocabularies(run.tokenizer, prior_dir, cond_dir)
    token_shards = prepared_shard_locations(run.tokens("pool"))
    score_dir = run.scores
    if score_dir.is_local:
        remove_stale_temps(score_dir.path)  # object stores: an aborted write leaves nothing
    executor = config.executor
    ray = init_ray(config.ray) if executor == "ray" and config.device != "cpu" else None
    num_gpus = _gpus_per_actor(config, ray)
    device = _worker_device(config, num_gpus, ray)
    precision = resolve_precision(config.score.precision, device, config.score.backend)
    if not overwrite:
        check_resume_precision(score_dir, precision)
    fingerprint = scoring_fingerprint(prior_dir, cond_dir, config.score, config.seq_len, precision)
    todo = token_shards if overwrite else pending_shards(token_shards, score_dir, fingerprint)
    tasks = [ScoreTask(t, score_dir.join(t.name)) for t in todo]
    if tasks:  # select and evaluate `require("score")`: no old stats beside half-new shards
        storage.remove(run.score_stats)
    spec = WorkerSpec(
        ScoreWorker,
        (prior_dir, cond_dir, config.score, device, config.seq_len, pad_id, fingerprint),
        num_cpus=config.score.worker_cpus, num_gpus=num_gpus,
        env_vars={"OMP_NUM_THREADS": str(config.score.torch_threads or
                                         max(1, int(config.score.worker_cpus)))},
    )  # fmt: skip
    progress = Progress("score", len(tasks), unit="tokens")
    shard_stats, start = [], time.perf_counter()
    for _task, stats in map_tasks(
        spec, tasks, executor=executor, num_workers=config.score.num_workers,
        ray_cfg=config.ray, max_restarts=config.prepare.max_restarts,
        max_task_retries=config.prepare.max_task_retries,
    ):  # fmt: skip
        shard_stats.append(stats)
        progress.update(1, stats["tokens"], note=f"{stats['rows']} seqs in {stats['shard']}")
    progress.close(f"({len(token_shards) - len(tasks)} shards already done, skipped)")
    return _write_stats(run, token_shards, shard_stats, time.perf_counter() - start)


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


def _check_vocabularies(tokenizer_dir: Location, prior_dir: Location, cond_dir: Location) -> int:
    """The tokenizer must fit both models' vocabularies; return the pad id."""
    from transformers import AutoTokenizer

    from colorfilter.io.cache import local_copy

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


def _write_stats(
    run: RunLayout, token_shards: list[Location], shard_stats: list[dict], seconds: float
) -> dict:
    """OUTPUT/scores/pool/stats.json; the row total comes from the shards' records (committed:
    every shard is whole), one concurrent read instead of a parquet footer per shard."""
    from colorfilter.io.commit import committed
    from colorfilter.scoring.shard import done_record_path

    records = [done_record_path(run.scores.join(t.name)) for t in token_shards]
    complete = committed(records)
    missing = [r.url for r in records if r.url not in complete]
    if missing:
        raise ColorFilterError(f"score shard record {missing[0]} is missing after scoring")
    rows = sum(int(complete[r.url]["meta"]["rows"]) for r in records)
    tokens = sum(s["tokens"] for s in shard_stats)
    summary = {
        "shards": len(token_shards),
        "shards_scored_now": len(shard_stats),
        "shards_skipped": len(token_shards) - len(shard_stats),
        "rows": rows,
        "tokens_scored_now": tokens,
        "seconds": round(seconds, 2),
        "tokens_per_s": round(tokens / seconds, 1) if shard_stats and seconds > 0 else None,
        "peak_host_rss_mb": max((s.get("peak_host_rss_mb", 0) for s in shard_stats), default=None),
        "per_shard": sorted(shard_stats, key=lambda s: s["shard"]),
    }
    storage.write_json(run.score_stats, summary)
    return {k: v for k, v in summary.items() if k != "per_shard"}
