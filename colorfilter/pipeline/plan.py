"""`colorfilter plan CONFIG`: both training stages' plans for a config, without training.

The vocabulary comes from the run's tokenizer (OUTPUT/tokenizer after prepare, or a
`tokenizer:` folder, local or a URL), or --vocab-size; sizes come from the prepared token shards
where they exist (the prior's slice is then token_budget / seq_len chunks, the conditional's the
target rows x epochs), or from --target-tokens, otherwise the conditional's steps are reported
unknown. The output dir may be a bucket: everything is read through colorfilter.layout.
"""

from __future__ import annotations

import json
import tempfile
from pathlib import Path
from typing import Any

from colorfilter.config import Config
from colorfilter.configtools import URL_SCHEME
from colorfilter.errors import ConfigError
from colorfilter.io import storage
from colorfilter.io.cache import local_copy
from colorfilter.io.location import Location
from colorfilter.io.token_shards import shard_locations
from colorfilter.io.transfer import open_parquet
from colorfilter.layout import RunLayout
from colorfilter.models.plan import Hardware, plan_stage
from colorfilter.models.presets import build_model_config

TOKENIZER_FILES = ("tokenizer.json", "tokenizer_config.json")


def vocab_size(config: Config, given: int | None) -> int:
    """The tokenizer's size, from --vocab-size, the run's tokenizer or the configured folder
    (local or a URL; a hub name is not fetched for a plan)."""
    if given:
        return given
    run = RunLayout.of(config)
    folders = [run.tokenizer]
    if URL_SCHEME.match(config.tokenizer) or Path(config.tokenizer).is_dir():
        folders.append(Location.parse(config.tokenizer, config.storage, key="tokenizer"))
    for folder in folders:
        if any(storage.exists(folder.join(name)) for name in TOKENIZER_FILES):
            from transformers import AutoTokenizer


            return len(AutoTokenizer.from_pretrained(str(local_copy(folder))))
    raise ConfigError(
        f"cannot read the vocabulary of tokenizer {config.tokenizer!r} here (no "
        f"{run.tokenizer} yet, and it is not a folder): "
        "pass --vocab-size (50280 for GPT-NeoX-20B)"
    )


def prior_model_config(config: Config, vocab: int) -> Any:
    """The transformers config the prior is (or will be) trained with."""
    from transformers import AutoConfig


    trained = RunLayout.of(config).model("prior").join("config.json")
    if config.prior.init_from:  # a local folder, or a URL: then only its config.json is fetched
        source = Location.parse(config.prior.init_from, config.storage, key="prior.init_from")
        if source.is_local:
            return AutoConfig.from_pretrained(config.prior.init_from)
        return AutoConfig.from_pretrained(local_copy(source.join("config.json")))
    if storage.exists(trained):
        with tempfile.TemporaryDirectory(prefix="colorfilter-plan-") as folder:
            Path(folder, "config.json").write_bytes(storage.read_bytes(trained))  # not weights
            return AutoConfig.from_pretrained(folder)
    prior = config.prior
    return build_model_config(prior.preset, vocab, config.seq_len, **prior.model_overrides)


def _rows(token_dir: Location) -> int | None:
    total = None
    for shard in shard_locations(token_dir):
        with open_parquet(shard) as parquet:
            total = (total or 0) + parquet.metadata.num_rows
    return total


def training_sequences(config: Config, target_tokens: int | None = None) -> dict[str, int | None]:
    """Sequences each stage trains on (before rounding to whole batches), where knowable:
    the conditional's from the prepared target shards, else from `target_tokens` if given."""
    run = RunLayout.of(config)
    pool_rows = _rows(run.tokens("pool"))
    budget = config.prior.token_budget
    prior = budget // config.seq_len if budget > 0 else pool_rows
    if prior is not None and pool_rows is not None:
        prior = min(prior, pool_rows)
    target_rows = _rows(run.tokens("downstream_train"))
    if target_rows is None and target_tokens:
        target_rows = target_tokens // config.seq_len
    conditional = None if target_rows is None else target_rows * config.conditional.epochs
    if config.prior.init_from:
        prior = 0
    return {"prior": prior, "conditional": conditional}


def build_plans(
    config: Config,
    gpus: int = 1,
    gpu_memory_gb: float | None = None,
    vocab: int | None = None,
    device: str = "cuda",
    target_tokens: int | None = None,
) -> list[Any]:
    """Plans for train-prior and train-conditional on `gpus` devices of `gpu_memory_gb`."""
    if device not in ("cuda", "cpu"):
        raise ConfigError(f"plan --device must be cuda or cpu, not {device!r}")
    model_config = prior_model_config(config, vocab_size(config, vocab))
    sequences = training_sequences(config, target_tokens)
    plans = []
    for stage, cfg in (("prior", config.prior), ("conditional", config.conditional)):
        if cfg.batch_size % gpus:
            raise ConfigError(f"{stage}.batch_size={cfg.batch_size} is not a multiple of {gpus}")
        plans.append(
            plan_stage(
                stage, model_config, cfg, config.seq_len, sequences[stage],
                Hardware(device, gpus, gpu_memory_gb, threads=max(1, cfg.torch_threads)),
            )
        )  # fmt: skip
    return plans


def plans_json(plans: list[Any]) -> str:
    return json.dumps([p.as_dict() for p in plans], indent=2)
