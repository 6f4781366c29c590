"""The train-prior and train-conditional stages: the run's locations around colorfilter.models.

Training runs in the driver process (on a cluster, submit with `--entrypoint-num-gpus 1`, or
launch with torchrun for data parallelism); the outputs are standard HF checkpoints. Inputs and
outputs live under `output_dir` (a local folder or a bucket prefix, colorfilter.layout); each
stage's are gathered once into a `TrainJob`, and its config section travels whole beside it.
"""

from __future__ import annotations

from colorfilter.config import Config
from colorfilter.errors import ConfigError
from colorfilter.io.location import Location
from colorfilter.io.token_shards import prepared_shard_locations, shard_locations
from colorfilter.layout import RunLayout
from colorfilter.models.stages import TrainJob, train_conditional, train_prior


def _eval_dir(run: RunLayout) -> Location | None:
    """The downstream eval split, when prepare made shards for it."""
    split = run.tokens("downstream_eval")
    return split if shard_locations(split) else None


def train_job(config: Config, model: str, overwrite: bool = False) -> TrainJob:
    """The job of the stage that trains `model` (prior: on the pool; conditional: on the
    downstream train split), from the run layout and the config."""
    run = RunLayout.of(config)
    split = "pool" if model == "prior" else "downstream_train"
    return TrainJob(
        data=run.tokens(split),
        out=run.model(model),
        tokenizer=run.tokenizer,
        seq_len=config.seq_len,
        seed=config.seed,
        device=config.device,
        eval_data=_eval_dir(run),
        force=overwrite,
    )


def run_train_prior(config: Config, overwrite: bool = False) -> dict:
    RunLayout.of(config).check_tokenizer()
    return train_prior(train_job(config, "prior", overwrite), config.prior)


def run_train_conditional(config: Config, overwrite: bool = False) -> dict:
    run = RunLayout.of(config)
    if not config.data.downstream_train:
        raise ConfigError("data.downstream_train is empty: the conditional model needs target data")
    prepared_shard_locations(run.tokens("downstream_train"))  # before the prior: "run prepare"
    run.check_tokenizer()
    run.require("train-prior")
    job = train_job(config, "conditional", overwrite)
    return train_conditional(job, config.conditional, run.model("prior"))
