"""The train-prior and train-conditional stages: the run's paths around colorfilter.models.

Training runs in the driver process (on a cluster, submit with `--entrypoint-num-gpus 1`, or
launch with torchrun for data parallelism); the outputs are standard HF checkpoints.
"""

from __future__ import annotations

from pathlib import Path

from colorfilter.config import Config
from colorfilter.errors import ConfigError
from colorfilter.io.token_shards import prepared_shards


def _eval_dir(config: Config) -> Path | None:
    path = config.output_path / "tokens" / "downstream_eval"
    return path if path.is_dir() else None


def _require(path: Path, what: str, stage: str) -> Path:
    if not path.exists():
        raise ConfigError(f"{what} not found at {path}: run `colorfilter {stage}` first")
    return path


def run_train_prior(config: Config, overwrite: bool = False) -> dict:
    from colorfilter.models.stages import train_prior

    out = config.output_path
    return train_prior(
        _require(out / "tokens" / "pool", "pool token shards", "prepare"),
        out / "models" / "prior",
        _require(out / "tokenizer", "the run's tokenizer", "prepare"),
        config.prior,
        config.seq_len,
        config.seed,
        device=config.device,
        eval_token_dir=_eval_dir(config),
        force=overwrite,
    )


def run_train_conditional(config: Config, overwrite: bool = False) -> dict:
    from colorfilter.models.stages import train_conditional

    out = config.output_path
    if not config.data.downstream_train:
        raise ConfigError("data.downstream_train is empty: the conditional model needs target data")
    target = out / "tokens" / "downstream_train"
    prepared_shards(target)  # before the prior: says "run prepare" or which files gave no data
    return train_conditional(
        _require(out / "models" / "prior", "the prior model", "train-prior"),
        target,
        out / "models" / "conditional",
        out / "tokenizer",
        config.conditional,
        config.seq_len,
        config.seed,
        device=config.device,
        eval_token_dir=_eval_dir(config),
        force=overwrite,
    )
