"""The two auxiliary-model stages: pre-train the prior, fine-tune the conditional.

Each stage writes a standard HF checkpoint (`save_pretrained`, tokenizer beside it) into its
model folder (a local folder or a bucket prefix), with `loss_curve.csv`/`.png` and
`train_stats.json`, then, last, the folder's completion record (colorfilter.layout.MODEL_RECORD,
colorfilter.io.commit) with every file's size and sha256. A rerun whose record carries the same
config hash and whose files still match it is skipped (a damaged one is retrained, with one
line saying so); a killed run resumes from the newest intact checkpoint under
`<model folder>/checkpoint/` (colorfilter.models.resume). Inputs (token shards, tokenizer, a
prior to start from) may live on a bucket too: shards are read through colorfilter.io.transfer,
model folders through a node-local copy (colorfilter.io.cache), the prior checked against its
record first. Launched under torchrun (or inside Ray Train) it trains data-parallel; rank 0
evaluates and writes.

The stage's driver (colorfilter.pipeline.train) describes one run as a `TrainJob` (where the
data is, where the model goes, the tokenizer, seq_len, seed, device); the config section
(PriorConfig, ConditionalConfig) travels beside it, whole.
"""

from __future__ import annotations

import dataclasses
import datetime
import logging
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any

import numpy as np

from colorfilter.errors import ConfigError
from colorfilter.io import storage
from colorfilter.io.cache import local_copy
from colorfilter.io.commit import read_unit
from colorfilter.io.faults import reading
from colorfilter.io.location import Location, as_location
from colorfilter.io.token_shards import prepared_shard_locations, shard_locations
from colorfilter.layout import MODEL_CHECKPOINT, MODEL_RECORD
from colorfilter.models.blocks import BlockData
from colorfilter.models.checkpoints import (
    STATS_FILE,
    check_tokenizer_matches,
    committed_model,
    load_tokenizer,
    model_damage,
    prepare_out_dir,
    publish_model_dir,
    stage_hash,
    verified_model,
    write_seq_ids,
)
from colorfilter.models.config import ConditionalConfig, PriorConfig, TrainConfig
from colorfilter.models.data import IndexedData, epoch_order, read_chunk_index, select_token_budget
from colorfilter.models.losses import evaluate_sums
from colorfilter.models.plan import format_plan, runtime_plan, warn_if_slow_on_cpu
from colorfilter.models.presets import build_model, count_parameters
from colorfilter.models.runtime import autocast_dtype, dist_context, resolve_device, set_threads
from colorfilter.models.training import LoopSpec, train_loop

log = logging.getLogger(__name__)

CHECKPOINT_DIR = MODEL_CHECKPOINT
SEQ_IDS_FILE = "train_seq_ids.parquet"
StepHook = Callable[[int], None]
Place = str | Path | Location  # a local path, a URL or a Location


@dataclasses.dataclass(frozen=True)
class TrainJob:
    """Where one train stage reads and writes, and what it runs on (built once by the stage's
    driver from the run layout and the config; tests build their own)."""

    data: Place  # the token split it trains on (the pool; the downstream train split)
    out: Place  # the model folder it writes
    tokenizer: Place  # the run's tokenizer folder
    seq_len: int
    seed: int
    device: str = "auto"
    eval_data: Place | None = None  # a held-out token split to evaluate on (None: none)
    force: bool = False  # retrain a finished model (--overwrite)
    on_step: StepHook | None = None  # runs after each step (tests simulate a kill with it)


@dataclasses.dataclass
class _Run:
    """One stage as it runs: its job and settings, its identity, what it has loaded."""

    stage: str  # prior | conditional
    job: TrainJob
    cfg: TrainConfig
    out: Location
    config_hash: str
    tokenizer: Any = None
    pad_id: int = 0
    eval_paths: list[Location] | None = None

    @property
    def seq_len(self) -> int:
        return self.job.seq_len


def prior_inputs(job: TrainJob, cfg: PriorConfig) -> dict[str, Any]:
    """What the prior's config hash covers besides its settings: the pool's shards, the
    tokenizer and `init_from` (in the layout model records have always hashed)."""
    out = as_location(job.out)
    init = as_location(cfg.init_from, out.storage, key="prior.init_from") if cfg.init_from else None
    return {"pool": prepared_shard_locations(job.data), "tokenizer": job.tokenizer,
            "init_from": init}  # fmt: skip


def conditional_inputs(job: TrainJob, prior_dir: Place) -> dict[str, Any]:
    """The conditional's inputs: its split, the tokenizer and the prior (by the config hash in
    the prior's record, so a prior copied elsewhere keeps the conditional's identity)."""
    prior = as_location(prior_dir)
    prior_record = committed_model(prior)
    prior_identity = (prior_record.meta.get("config_hash") if prior_record else None) or prior
    return {"train": prepared_shard_locations(job.data), "tokenizer": job.tokenizer,
            "prior": prior_identity}  # fmt: skip


def _start(stage: str, job: TrainJob, cfg: Any, inputs: dict[str, Any]
           ) -> tuple[_Run, dict[str, Any] | None]:  # fmt: skip
    """The stage's run, and its stats when a finished model of the same config hash is already
    there (verified: a damaged one is trained again)."""
    config_hash = stage_hash(stage, cfg, job.seq_len, job.seed, inputs)
    run = _Run(stage, job, cfg, as_location(job.out), config_hash)
    stats = None if job.force else finished_stats(run.out, config_hash, stage)
    if stats is not None:
        log.info("%s: already trained in %s (config %s); skipping", stage, run.out, config_hash)
    return run, stats


def train_prior(job: TrainJob, cfg: PriorConfig) -> dict[str, Any]:
    """Pre-train the prior on a seeded random `cfg.token_budget`-token slice of the pool (or
    adopt `cfg.init_from`, a local folder or a URL); return its training stats. Nothing is
    removed from the pool."""
    inputs = prior_inputs(job, cfg)
    run, stats = _start("prior", job, cfg, inputs)
    if stats is not None:
        return stats
    _load_common(run)
    if inputs["init_from"] is not None:
        return _adopt_prior(run, inputs["init_from"])
    data = _prior_data(inputs["pool"], cfg, job.seed)
    model = build_model(
        cfg.preset,
        len(run.tokenizer),
        job.seq_len,
        seed=job.seed,
        pad_token_id=run.pad_id,
        eos_token_id=run.tokenizer.eos_token_id,
        bos_token_id=run.tokenizer.bos_token_id,
        **cfg.model_overrides,
    )
    extra = {"preset": cfg.preset, "token_budget": cfg.token_budget}
    return _train_stage(run, model, data, extra)


def train_conditional(job: TrainJob, cfg: ConditionalConfig, prior_dir: Place) -> dict[str, Any]:
    """Fine-tune the prior in `prior_dir` for `cfg.epochs` epochs on the downstream train split
    with a fresh optimizer; return its training stats (with the prior's held-out loss beside
    its own). The prior is checked against its record (sha256) before it is loaded."""
    from transformers import AutoModelForCausalLM

    inputs = conditional_inputs(job, prior_dir)
    run, stats = _start("conditional", job, cfg, inputs)
    if stats is not None:
        return stats
    prior = as_location(prior_dir)
    verified_model(prior, "train-prior")
    _load_common(run)
    index = read_chunk_index(inputs["train"])
    with reading(prior):  # damaged since the check: one line naming the folder
        model = AutoModelForCausalLM.from_pretrained(_fetch(prior, "the prior model"),
                                                     dtype="float32")
    extra: dict[str, Any] = {"epochs": cfg.epochs, "prior_dir": prior.url}
    if run.eval_paths is not None:
        extra["prior_eval_loss"], _ = _held_out(run, model, resolve_device(job.device))
    order = epoch_order(index, cfg.epochs, job.seed)
    return _train_stage(run, model, IndexedData(index, order), extra)


def finished_stats(out_dir: Place, config_hash: str, stage: str = "model") -> dict | None:
    """The stats of a finished stage in `out_dir` if its record was written for `config_hash`
    and every file it lists still matches it (size and sha256); a damaged one is one warning
    and None: it is trained again."""
    out = as_location(out_dir)
    unit = read_unit(out.join(MODEL_RECORD))
    if unit is None or unit.meta.get("config_hash") != config_hash:
        return None
    damage = model_damage(unit)
    if damage is not None:
        loc, reason = damage
        log.warning("%s model in %s is damaged (%s: %s): training it again", stage, out.url,
                    loc.name, reason)  # fmt: skip
        return None
    return storage.read_json_object(out.join(STATS_FILE))


def _load_common(run: _Run) -> None:
    """The tokenizer (and pad id) and the held-out split, which every training run needs."""
    run.tokenizer, run.pad_id = load_tokenizer(_fetch(run.job.tokenizer, "the run's tokenizer"))
    eval_data = run.job.eval_data
    run.eval_paths = None if eval_data is None else shard_locations(eval_data)


def _fetch(value: Place, what: str) -> Path:
    """A local folder holding `value` (a node-local copy of a remote one)."""
    try:
        return local_copy(as_location(value), skip=(MODEL_CHECKPOINT,))  # the weights, not state
    except FileNotFoundError:
        url = as_location(value).url
        raise ConfigError(f"{what} not found at {url}") from None


def _prior_data(pool_paths: list[Location], cfg: PriorConfig, seed: int) -> IndexedData | BlockData:
    """The prior's slice of the pool: seeded single chunks, or seeded whole blocks streamed per
    rank (`prior.data_sampling`; see models.blocks for the trade-off)."""
    if cfg.data_sampling == "blocks":
        return BlockData(pool_paths, cfg.token_budget, seed, cfg.block_buffer_rows)
    index = select_token_budget(pool_paths, cfg.token_budget, seed)
    return IndexedData(index, np.arange(len(index)))


def _check_batch(cfg: TrainConfig, world_size: int, stage: str) -> None:
    if cfg.batch_size % world_size:
        raise ConfigError(
            f"{stage}.batch_size={cfg.batch_size} is not a multiple of the "
            f"{world_size} data-parallel ranks"
        )


def _plan_steps(n_chunks: int, cfg: TrainConfig, world_size: int, stage: str) -> int:
    _check_batch(cfg, world_size, stage)
    steps = n_chunks // cfg.batch_size
    if cfg.max_steps > 0:
        steps = min(steps, cfg.max_steps)
    if steps < 1:
        raise ConfigError(
            f"{stage}: {n_chunks} chunks make no full batch of "
            f"{cfg.batch_size}; lower {stage}.batch_size or add data"
        )
    return steps


def _held_out(run: _Run, model: Any, device: Any) -> tuple[float, int]:
    """(mean held-out loss, predicted positions) on the eval split."""
    cfg = run.cfg
    model.to(device)
    nll, count = evaluate_sums(
        model, run.eval_paths, run.seq_len, run.pad_id, cfg.eval_batch_size, device, cfg.dtype,
        cfg.eval_max_chunks,
    )  # fmt: skip
    return (nll / count if count else float("nan")), count


def _train_stage(
    run: _Run, model: Any, data: IndexedData | BlockData, extra: dict[str, Any]
) -> dict[str, Any]:
    """Train, then write the model folder, curves and stats (rank 0); return the stats."""
    started = time.perf_counter()
    cfg, stage, out = run.cfg, run.stage, run.out
    set_threads(cfg.torch_threads)
    device = resolve_device(run.job.device)
    if device.type == "cuda":
        import torch

        torch.cuda.set_device(device)
    dist = dist_context(device)
    _check_batch(cfg, dist.world_size, stage)
    steps = _plan_steps(data.usable_chunks(cfg.batch_size, dist.world_size), cfg,
                        dist.world_size, stage)  # fmt: skip
    plan = runtime_plan(stage, model, cfg, run.seq_len, steps, device, dist.world_size)
    if dist.is_main:
        warn_if_slow_on_cpu(plan, run.job.device)
        log.info("%s plan:\n%s", stage, format_plan(plan))
        prepare_out_dir(out, STATS_FILE)
        if stage == "prior":
            trained = data.trained_seq_ids(steps, cfg.batch_size, dist.world_size)
            write_seq_ids(trained, out.join(SEQ_IDS_FILE))
    dist.barrier()
    batches = data.rank_batches(steps, cfg.batch_size, dist.rank, dist.world_size)
    spec = LoopSpec(
        steps, run.seq_len, run.pad_id, out.join(CHECKPOINT_DIR),
        run.config_hash + data.resume_key(dist.world_size), desc=stage,
        micro_batch_size=plan.micro.micro_batch,
    )  # fmt: skip

    def eval_fn(trained: Any) -> float:
        return _held_out(run, trained, device)[0]

    evaluate = eval_fn if run.eval_paths is not None else None
    state = train_loop(model, batches, cfg, spec, device, dist, evaluate, run.job.on_step)
    if dist.is_main:
        extra = {
            **extra, "n_chunks": data.n_chunks(dist.world_size), **_memory_stats(plan, device),
            "device": str(device), "world_size": dist.world_size,
            "dtype": str(autocast_dtype(cfg.dtype, device) or "float32").replace("torch.", ""),
        }  # fmt: skip
        eval_loss = evaluate(model) if evaluate is not None else None
        stats = _finish(run, model, state, eval_loss, extra, started)
    dist.barrier()
    return stats if dist.is_main else storage.read_json(out.join(STATS_FILE))


def _memory_stats(plan: Any, device: Any) -> dict[str, Any]:
    """The micro-batch used, the plan's peak and (on CUDA) the real one, for the stats."""
    stats = {
        "micro_batch_size": plan.micro.micro_batch,
        "accumulation_steps": plan.micro.accumulation,
        "planned_peak_gb": round(plan.micro.peak_gb, 2),
    }
    if device.type == "cuda":
        import torch

        stats["cuda_peak_allocated_gb"] = round(torch.cuda.max_memory_allocated(device) / 2**30, 2)
    return stats


def _finish(
    run: _Run, model: Any, state: Any, eval_loss: float | None, extra: dict[str, Any],
    started: float,
) -> dict[str, Any]:  # fmt: skip
    """Write the model folder (its record last) and drop the checkpoints unless kept."""
    cfg = run.cfg
    if eval_loss is not None and state.history:
        state.history[-1]["eval_loss"] = eval_loss
    last = state.history[-10:]
    stats = {
        **_identity(run, model),
        "steps": state.step,
        "batch_size": cfg.batch_size,
        "tokens_seen": state.tokens_seen,
        "final_train_loss": float(np.mean([r["train_loss"] for r in last])) if last else None,
        "eval_loss": eval_loss,
        "train_time_s": state.elapsed_s,
        "train_tokens_per_s": state.tokens_seen / state.elapsed_s if state.elapsed_s else None,
        "wall_time_s": time.perf_counter() - started,
        "resumed_from_steps": state.resumed_from,
        "finished_at": datetime.datetime.now(datetime.timezone.utc).isoformat(),
        **extra,
    }
    seq_ids = (SEQ_IDS_FILE,) if run.stage == "prior" else ()
    stats = publish_model_dir(run.out, model, run.tokenizer, stats, state.history,
                              f"{run.stage} ({cfg.dtype})", seq_ids)  # fmt: skip
    if not cfg.keep_checkpoint:
        storage.remove(run.out.join(CHECKPOINT_DIR), recursive=True)
    return stats  # as a rerun that skips training would return it


def _identity(run: _Run, model: Any) -> dict[str, Any]:
    """The stats' first fields: what was trained, with which settings."""
    return {
        "stage": run.stage,
        "config_hash": run.config_hash,
        "config": dataclasses.asdict(run.cfg),
        "architecture": type(model).__name__,
        "parameters": count_parameters(model),
        "seq_len": run.seq_len,
        "seed": run.job.seed,
    }


def _adopt_prior(run: _Run, init: Location) -> dict[str, Any]:
    """Use an existing HF checkpoint (a local folder or a URL) as the prior: check its vocab,
    copy it, evaluate it."""
    from transformers import AutoModelForCausalLM

    started = time.perf_counter()
    cfg = run.cfg
    source = _fetch(init, "prior.init_from")
    check_tokenizer_matches(source, run.tokenizer, label=cfg.init_from)
    with reading(init, name=cfg.init_from):
        model = AutoModelForCausalLM.from_pretrained(source, dtype="float32")
    if model.config.vocab_size < len(run.tokenizer):
        raise ConfigError(
            f"prior.init_from {cfg.init_from} has vocab {model.config.vocab_size}, "
            f"smaller than the tokenizer's {len(run.tokenizer)}"
        )
    prepare_out_dir(run.out, STATS_FILE)
    eval_loss = None
    if run.eval_paths is not None:
        eval_loss, _ = _held_out(run, model, resolve_device(run.job.device))
    stats = {
        **_identity(run, model),
        "init_from": cfg.init_from,
        "steps": 0,
        "tokens_seen": 0,
        "final_train_loss": None,
        "eval_loss": eval_loss,
        "train_time_s": 0.0,
        "wall_time_s": time.perf_counter() - started,
        "finished_at": datetime.datetime.now(datetime.timezone.utc).isoformat(),
    }
    return publish_model_dir(run.out, model.to("cpu"), run.tokenizer, stats)
