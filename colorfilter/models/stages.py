"""The two auxiliary-model stages: pre-train the prior, fine-tune the conditional.

Each stage writes a standard HF checkpoint (`save_pretrained`, tokenizer beside it) into its
`out_dir` (a local folder or a bucket prefix), with `loss_curve.csv`/`.png` and
`train_stats.json`, then, last, the folder's completion record (colorfilter.layout.MODEL_RECORD,
colorfilter.io.commit). A rerun whose committed record carries the same config hash is skipped;
a killed run resumes from the committed `out_dir/checkpoint/state.pt`. Inputs (token shards,
tokenizer, a prior to start from) may live on a bucket too: shards are read through
colorfilter.io.transfer, model folders through a node-local copy (colorfilter.io.cache).
Launched under torchrun (or inside Ray Train) it trains data-parallel; rank 0 evaluates and
writes.
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
from colorfilter.io.faults import reading
from colorfilter.io.location import Location, as_location
from colorfilter.io.token_shards import prepared_shard_locations, shard_locations
from colorfilter.layout import MODEL_CHECKPOINT
from colorfilter.models.blocks import BlockData
from colorfilter.models.checkpoints import (
    STATS_FILE,
    committed_model,
    load_tokenizer,
    prepare_out_dir,
    publish_model_dir,
    stage_hash,
    write_seq_ids,
)
from colorfilter.models.config import ConditionalConfig, PriorConfig, TrainConfig
from colorfilter.models.data import IndexedData, epoch_order, read_chunk_index, select_token_budget
from colorfilter.models.losses import evaluate_sums
from colorfilter.models.plan import format_plan, runtime_plan, warn_if_slow_on_cpu
from colorfilter.models.runtime import autocast_dtype, dist_context, resolve_device, set_threads
from colorfilter.models.training import CHECKPOINT_FILE, LoopSpec, train_loop

log = logging.getLogger(__name__)

CHECKPOINT_DIR = MODEL_CHECKPOINT
SEQ_IDS_FILE = "train_seq_ids.parquet"
StepHook = Callable[[int], None]
Place = str | Path | Location  # a local path, a URL or a Location


def train_prior(
    pool_token_dir: Place,
    out_dir: Place,
    tokenizer_dir: Place,
    cfg: PriorConfig,
    seq_len: int,
    seed: int,
    device: str = "auto",
    eval_token_dir: Place | None = None,
    force: bool = False,
    on_step: StepHook | None = None,
) -> dict[str, Any]:
    """Pre-train the prior on a seeded random `cfg.token_budget`-token slice of the pool (or
    adopt `cfg.init_from`, a local folder or a URL); return its training stats. Nothing is
    removed from the pool."""
    pool_paths = prepared_shard_locations(pool_token_dir)
    out = as_location(out_dir)
    init = as_location(cfg.init_from, out.storage, key="prior.init_from") if cfg.init_from else None
    inputs = {"pool": pool_paths, "tokenizer": tokenizer_dir, "init_from": init}
    config_hash = stage_hash("prior", cfg, seq_len, seed, inputs)
    if not force and (stats := finished_stats(out, config_hash)) is not None:
        log.info("prior: already trained in %s (config %s); skipping", out, config_hash)
        return stats
    tokenizer, pad_id = load_tokenizer(_fetch(tokenizer_dir, "the run's tokenizer"))
    eval_paths = _eval_shards(eval_token_dir)
    if init is not None:
        return _adopt_prior(cfg, init, out, tokenizer, pad_id, seq_len, seed, device, eval_paths,
                            config_hash)  # fmt: skip
    from colorfilter.models.presets import build_model

    data = _prior_data(pool_paths, cfg, seed)
    model = build_model(
        cfg.preset,
        len(tokenizer),
        seq_len,
        seed=seed,
        pad_token_id=pad_id,
        eos_token_id=tokenizer.eos_token_id,
        bos_token_id=tokenizer.bos_token_id,
        **cfg.model_overrides,
    )
    extra = {"preset": cfg.preset, "token_budget": cfg.token_budget}
    return _train_stage(
        "prior", model, data, cfg, out, tokenizer, pad_id, seq_len, seed,
        device, eval_paths, config_hash, extra, on_step,
    )  # fmt: skip


def train_conditional(
    prior_dir: Place,
    train_token_dir: Place,
    out_dir: Place,
    tokenizer_dir: Place,
    cfg: ConditionalConfig,
    seq_len: int,
    seed: int,
    device: str = "auto",
    eval_token_dir: Place | None = None,
    force: bool = False,
    on_step: StepHook | None = None,
) -> dict[str, Any]:
    """Fine-tune the prior for `cfg.epochs` epochs on the downstream train split with a fresh
    optimizer; return its training stats (with the prior's held-out loss beside its own)."""
    from transformers import AutoModelForCausalLM

    train_paths = prepared_shard_locations(train_token_dir)
    prior = as_location(prior_dir)
    prior_record = committed_model(prior)  # the hash it was trained with, once complete
    prior_identity = (prior_record.meta.get("config_hash") if prior_record else None) or prior
    inputs = {"train": train_paths, "tokenizer": tokenizer_dir, "prior": prior_identity}
    config_hash = stage_hash("conditional", cfg, seq_len, seed, inputs)
    out = as_location(out_dir)
    if not force and (stats := finished_stats(out, config_hash)) is not None:
        log.info("conditional: already trained in %s (config %s); skipping", out, config_hash)
        return stats
    tokenizer, pad_id = load_tokenizer(_fetch(tokenizer_dir, "the run's tokenizer"))
    index = read_chunk_index(train_paths)
    with reading(prior):  # a truncated or missing weights file: one line naming the folder
        model = AutoModelForCausalLM.from_pretrained(_fetch(prior, "the prior model"),
                                                     dtype="float32")
    extra: dict[str, Any] = {"epochs": cfg.epochs, "prior_dir": prior.url}
    eval_paths = _eval_shards(eval_token_dir)
    if eval_paths is not None:
        extra["prior_eval_loss"], _ = _held_out(
            model, eval_paths, seq_len, pad_id, cfg, resolve_device(device)
        )
    order = epoch_order(index, cfg.epochs, seed)
    return _train_stage(
        "conditional", model, IndexedData(index, order), cfg, out, tokenizer, pad_id, seq_len,
        seed, device, eval_paths, config_hash, extra, on_step,
    )  # fmt: skip


def finished_stats(out_dir: Place, config_hash: str) -> dict[str, Any] | None:
    """The stats of a finished stage in `out_dir` if its folder is committed (every file of it
    written) and was trained with `config_hash`."""
    out = as_location(out_dir)
    record = committed_model(out)
    if record is None or record.meta.get("config_hash") != config_hash:
        return None
    return storage.read_json_object(out.join(STATS_FILE))


def _fetch(value: Place, what: str) -> Path:
    """A local folder holding `value` (a node-local copy of a remote one)."""
    try:
        return local_copy(as_location(value), skip=(MODEL_CHECKPOINT,))  # the weights, not state
    except FileNotFoundError:
        url = as_location(value).url
        raise ConfigError(f"{what} not found at {url}") from None


def _eval_shards(eval_token_dir: Place | None) -> list[Location] | None:
    return None if eval_token_dir is None else shard_locations(eval_token_dir)


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


def _held_out(
    model: Any, eval_paths: list[Location], seq_len: int, pad_id: int, cfg: TrainConfig,
    device: Any,
) -> tuple[float, int]:
    """(mean held-out loss, predicted positions) on the eval split."""
    model.to(device)
    nll, count = evaluate_sums(
        model, eval_paths, seq_len, pad_id, cfg.eval_batch_size, device, cfg.dtype,
        cfg.eval_max_chunks,
    )  # fmt: skip
    return (nll / count if count else float("nan")), count


def _train_stage(
    stage: str,
    model: Any,
    data: IndexedData | BlockData,
    cfg: TrainConfig,
    out: Location,
    tokenizer: Any,
    pad_id: int,
    seq_len: int,
    seed: int,
    device_name: str,
    eval_paths: list[Location] | None,
    config_hash: str,
    extra: dict[str, Any],
    on_step: StepHook | None,
) -> dict[str, Any]:
    """Train, then write the checkpoint, curves and stats (rank 0); return the stats."""
    started = time.perf_counter()
    set_threads(cfg.torch_threads)
    device = resolve_device(device_name)
    if device.type == "cuda":
        import torch

        torch.cuda.set_device(device)
    dist = dist_context(device)
    _check_batch(cfg, dist.world_size, stage)
    usable = data.usable_chunks(cfg.batch_size, dist.world_size)
    steps = _plan_steps(usable, cfg, dist.world_size, stage)
    plan = runtime_plan(stage, model, cfg, seq_len, steps, device, dist.world_size)
    if dist.is_main:
        warn_if_slow_on_cpu(plan, device_name)
        log.info("%s plan:\n%s", stage, format_plan(plan))
        prepare_out_dir(out, STATS_FILE)
        if stage == "prior":
            trained = data.trained_seq_ids(steps, cfg.batch_size, dist.world_size)
            write_seq_ids(trained, out.join(SEQ_IDS_FILE))
    dist.barrier()
    batches = data.rank_batches(steps, cfg.batch_size, dist.rank, dist.world_size)
    resume_hash = config_hash + data.resume_key(dist.world_size)
    spec = LoopSpec(
        steps, seq_len, pad_id, out.join(CHECKPOINT_DIR, CHECKPOINT_FILE), resume_hash,
        desc=stage, micro_batch_size=plan.micro.micro_batch,
    )  # fmt: skip

    def eval_fn(trained: Any) -> float:
        return _held_out(trained, eval_paths, seq_len, pad_id, cfg, device)[0]

    state = train_loop(
        model, batches, cfg, spec, device, dist, eval_fn if eval_paths is not None else None,
        on_step,
    )  # fmt: skip
    if dist.is_main:
        stats = _finish(
            stage, model, tokenizer, state, cfg, out, seq_len, seed, device, dist.world_size,
            eval_fn if eval_paths is not None else None, config_hash,
            {**extra, "n_chunks": data.n_chunks(dist.world_size), **_memory_stats(plan, device)},
            started,
        )  # fmt: skip
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
    stage: str,
    model: Any,
    tokenizer: Any,
    state: Any,
    cfg: TrainConfig,
    out: Location,
    seq_len: int,
    seed: int,
    device: Any,
    world_size: int,
    eval_fn: Callable[[Any], float] | None,
    config_hash: str,
    extra: dict[str, Any],
    started: float,
) -> dict[str, Any]:
    from colorfilter.models.presets import count_parameters

    eval_loss = eval_fn(model) if eval_fn is not None else None
    if eval_loss is not None and state.history:
        state.history[-1]["eval_loss"] = eval_loss
    last = state.history[-10:]
    stats = {
        "stage": stage,
        "config_hash": config_hash,
        "config": dataclasses.asdict(cfg),
        "architecture": type(model).__name__,
        "parameters": count_parameters(model),
        "seq_len": seq_len,
        "seed": seed,
        "steps": state.step,
        "batch_size": cfg.batch_size,
        "tokens_seen": state.tokens_seen,
        "final_train_loss": float(np.mean([r["train_loss"] for r in last])) if last else None,
        "eval_loss": eval_loss,
        "train_time_s": state.elapsed_s,
        "train_tokens_per_s": state.tokens_seen / state.elapsed_s if state.elapsed_s else None,
        "wall_time_s": time.perf_counter() - started,
        "resumed_from_steps": state.resumed_from,
        "device": str(device),
        "dtype": str(autocast_dtype(cfg.dtype, device) or "float32").replace("torch.", ""),
        "world_size": world_size,
        "finished_at": datetime.datetime.now(datetime.timezone.utc).isoformat(),
        **extra,
    }
    seq_ids = (SEQ_IDS_FILE,) if stage == "prior" else ()
    stats = publish_model_dir(out, model, tokenizer, stats, state.history,
                              f"{stage} ({cfg.dtype})", seq_ids)  # fmt: skip
    if not cfg.keep_checkpoint:
        storage.remove(out.join(CHECKPOINT_DIR), recursive=True)
    return stats  # as a rerun that skips training would return it


def _adopt_prior(
    cfg: PriorConfig,
    init: Location,
    out: Location,
    tokenizer: Any,
    pad_id: int,
    seq_len: int,
    seed: int,
    device_name: str,
    eval_paths: list[Location] | None,
    config_hash: str,
) -> dict[str, Any]:
    """Use an existing HF checkpoint (a local folder or a URL) as the prior: check its vocab,
    copy it, evaluate it."""
    from transformers import AutoModelForCausalLM

    from colorfilter.models.checkpoints import check_tokenizer_matches
    from colorfilter.models.presets import count_parameters

    started = time.perf_counter()
    source = _fetch(init, "prior.init_from")
    check_tokenizer_matches(source, tokenizer, label=cfg.init_from)
    with reading(init, name=cfg.init_from):
        model = AutoModelForCausalLM.from_pretrained(source, dtype="float32")
    if model.config.vocab_size < len(tokenizer):
        raise ConfigError(
            f"prior.init_from {cfg.init_from} has vocab {model.config.vocab_size}, "
            f"smaller than the tokenizer's {len(tokenizer)}"
        )
    prepare_out_dir(out, STATS_FILE)
    eval_loss = None
    if eval_paths is not None:
        eval_loss, _ = _held_out(
            model, eval_paths, seq_len, pad_id, cfg, resolve_device(device_name)
        )
    stats = {
        "stage": "prior",
        "config_hash": config_hash,
        "config": dataclasses.asdict(cfg),
        "init_from": cfg.init_from,
        "architecture": type(model).__name__,
        "parameters": count_parameters(model),
        "seq_len": seq_len,
        "seed": seed,
        "steps": 0,
        "tokens_seen": 0,
        "final_train_loss": None,
        "eval_loss": eval_loss,
        "train_time_s": 0.0,
        "wall_time_s": time.perf_counter() - started,
        "finished_at": datetime.datetime.now(datetime.timezone.utc).isoformat(),
    }
    return publish_model_dir(out, model.to("cpu"), tokenizer, stats)
