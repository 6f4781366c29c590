"""The train-prior and train-conditional stages: the run's locations around colorfilter.models.

Training runs in the driver process (on a cluster, submit with `--entrypoint-num-gpus 1`, or
launch with torchrun for data parallelism); the outputs are standard HF checkpoints. Inputs and
outputs live under `output_dir` (a local folder or a bucket prefix, colorfilter.layout).
"""

from __future__ import annotations

from colorfilter.config import Config
from colorfilter.errors import ConfigError
from colorfilter.io.location import Location
from colorfilter.io.token_shards import prepared_shard_locations, shard_locations
from colorfilter.layout import RunLayout


def _eval_dir(run: RunLayout) -> Location | None:
    """The downstream eval split, when prepare made shards for it."""
    split = run.tokens("downstream_eval")
    return split if shard_locations(split) else None


def run_train_prior(config: Config, overwrite: bool = False) -> dict:
    from colorfilter.models.stages import train_prior

    run = RunLayout.of(config)
    run.check_tokenizer()
    return train_prior(
        run.tokens("pool"),
        run.model("prior"),
        run.tokenizer,
        config.prior,
        config.seq_len,
        config.seed,
        device=config.device,
        eval_token_dir=_eval_dir(run),
        force=overwrite,
    )


def run_train_conditional(config: Config, overwrite: bool = False) -> dict:
    from colorfilter.models.stages import train_conditional

    run = RunLayout.of(config)
    if not config.data.downstream_train:
        raise ConfigError("data.downstream_train is empty: the conditional model needs target data")
    target = run.tokens("downstream_train")
    prepared_shard_locations(target)  # before the prior: "run prepare" or which files gave none
    run.check_tokenizer()
    run.require("train-prior")
    return train_conditional(
        run.model("prior"),
        target,
        run.model("conditional"),
        run.tokenizer,
        config.conditional,
        config.seq_len,
        config.seed,
        device=config.device,
        eval_token_dir=_eval_dir(run),
        force=overwrite,
    )
