"""The root config: one typed dataclass per stage, loaded from YAML with `--set` overrides.

Keys `output_dir`, `data.pool`, `data.downstream_train`, `data.downstream_eval`,
`data.text_field` and `seq_len` are a fixed contract: other tools drive the CLI through them.
"""

from __future__ import annotations

import copy
import os
from collections.abc import Mapping
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, ClassVar

from colorfilter.configtools import (
    URL_SCHEME,
    Checks,
    apply_override,
    from_dict,
    load_yaml,
    parse_override,
    raise_problems,
    to_yaml,
)
from colorfilter.dataset.config import OutputConfig, ReleaseConfig
from colorfilter.distill.config import DISTILLED, NEEDS_EVERY_LM_SCORE, CascadeConfig
from colorfilter.errors import ConfigError, require
from colorfilter.evaluation.config import EvaluateConfig, check_taus
from colorfilter.io import storage
from colorfilter.io.config import StorageConfig
from colorfilter.io.location import SCHEMES, Location
from colorfilter.io.preflight import check_writable
from colorfilter.layout import RunLayout
from colorfilter.models.config import ConditionalConfig, PriorConfig
from colorfilter.names import (
    DATA_FORMATS,
    DEVICE_PATTERN,
    DEVICES,
    EXECUTORS,
    LABEL_ORACLE,
    SELECTION_METHODS,
)
from colorfilter.scoring.config import ScoreConfig

INPUT_SCHEMES = frozenset(s for s in SCHEMES if s)  # data.* inputs: s3, gs, hf, file URLs
# output_dir: a local folder or a bucket prefix (not hf://: every write there is a hub commit;
# publish a finished selection with `colorfilter release`)
OUTPUT_SCHEMES = INPUT_SCHEMES - {"hf"}
OBJECT_STORE_MIN_MB = 75  # Ray refuses a smaller object store


@dataclass
class DataConfig:
    pool: list[str] = field(default_factory=list)  # candidate pool: files, globs, or hf:// names
    downstream_train: list[str] = field(default_factory=list)  # target data for conditioning
    downstream_eval: list[str] = field(default_factory=list)  # held-out target data
    text_field: str = "text"  # record field holding the document text
    source_field: str | None = None  # optional record field kept as a per-chunk `source` label
    format: str = "auto"  # auto (by extension) | jsonl | parquet | hf
    hf_split: str = "train"  # split used for hf:// inputs
    max_bad_fraction: float = 0.01  # above this fraction of bad records, the stage fails

    def validate(self, where: str = "data") -> list[str]:
        check = Checks(where)
        for split in ("pool", "downstream_train", "downstream_eval"):
            check.paths(split, getattr(self, split), schemes=INPUT_SCHEMES)
        check.non_empty("text_field", self.text_field)
        check.non_empty("source_field", self.source_field)
        check.one_of("format", self.format, DATA_FORMATS)
        check.non_empty("hf_split", self.hf_split)
        check.within("max_bad_fraction", self.max_bad_fraction, 0, 1)
        return check.problems


@dataclass
class RayConfig:
    address: str | None = None  # None: start a local Ray; "auto" or ray://HOST:10001: join one
    num_cpus: int | None = None  # CPUs for a local Ray (None: all)
    object_store_memory_mb: int = 500  # object store size for a local Ray
    capacity_wait_s: float = 300.0  # with no worker alive/placeable this long, the stage stops
    max_task_attempts: int = 4  # tries per task (transient errors, lost workers) before failing
    retry_backoff_s: float = 2.0  # first retry delay; doubles per attempt (at most 60 s)
    connect_timeout_s: float = 30.0  # an `address` nothing answers at fails after this long

    def validate(self, where: str = "ray") -> list[str]:
        check = Checks(where)
        check.non_empty("address", self.address)
        if self.num_cpus is not None:
            check.at_least("num_cpus", self.num_cpus, 1)
        check.at_least("object_store_memory_mb", self.object_store_memory_mb, OBJECT_STORE_MIN_MB)
        check.positive("capacity_wait_s", self.capacity_wait_s)
        check.at_least("max_task_attempts", self.max_task_attempts, 1)
        check.at_least("retry_backoff_s", self.retry_backoff_s, 0)
        check.positive("connect_timeout_s", self.connect_timeout_s)
        return check.problems


@dataclass
class PrepareConfig:
    # keys of older versions: a saved config.yaml with them still loads (a warning), --set fails
    REMOVED_KEYS: ClassVar[dict[str, str]] = {
        "max_restarts": "the executor replaces lost workers itself; a task's tries are "
        "ray.max_task_attempts",
        "max_task_retries": "a task's tries are ray.max_task_attempts",
    }

    num_workers: int = 0  # tokenizer actors; 0 = one per CPU
    worker_cpus: float = 1.0  # CPUs reserved per actor
    rows_per_shard: int = 8192  # chunks per token shard
    # rows per parquet row group of a token shard (the blocks of prior.data_sampling=blocks);
    # 0 = one row group per shard
    row_group_rows: int = 0
    tokenize_batch_docs: int = 256  # documents per tokenizer call
    max_segment_chars: int = 1_000_000  # longer documents are tokenized piecewise (memory bound)
    split_bytes: int = 256 << 20  # a bigger local parquet / plain JSON lines file is split into
    # parts of about this size, tokenized in parallel (same shards as unsplit); 0 = never split

    def validate(self, where: str = "prepare") -> list[str]:
        check = Checks(where)
        check.at_least("num_workers", self.num_workers, 0)
        check.positive("worker_cpus", self.worker_cpus)
        for name in ("rows_per_shard", "tokenize_batch_docs", "max_segment_chars"):
            check.at_least(name, getattr(self, name), 1)
        check.at_least("split_bytes", self.split_bytes, 0)
        check.at_least("row_group_rows", self.row_group_rows, 0)
        if self.row_group_rows > self.rows_per_shard >= 1:
            check.add(
                "row_group_rows",
                f"must be <= prepare.rows_per_shard={self.rows_per_shard} (0: one row group "
                f"per shard), got {self.row_group_rows}",
            )
        return check.problems


@dataclass
class SelectionConfig:
    methods: list[str] = field(default_factory=lambda: ["color"])  # see colorfilter.selection
    tau: list[float] = field(default_factory=lambda: [16.0])  # keep the top 1/tau; several ok
    temperature: float = 1.0  # color_softmax: sample from softmax(score / temperature)
    block_n: int = 64  # color_batchwise: keep block_n of every block of tau * block_n
    documents: bool = False  # widen each selection to whole source documents (`-docs` folders)
    min_chunks: int = 1  # refuse a tau that keeps fewer pool chunks than this (1: tau <= pool)
    num_workers: int = 0  # select's map/reduce actors (executor ray); 0 = one per CPU
    worker_cpus: float = 1.0  # CPUs reserved per select actor (its decode threads)
    output: OutputConfig = field(default_factory=OutputConfig)

    def validate(self, where: str = "selection") -> list[str]:
        check = Checks(where)
        check.names("methods", self.methods, SELECTION_METHODS)
        check_taus(check, "tau", self.tau)
        check.positive("temperature", self.temperature)
        check.at_least("block_n", self.block_n, 1)
        check.at_least("min_chunks", self.min_chunks, 1)
        return check.problems + self.output.validate(f"{where}.output")


@dataclass
class Config:
    output_dir: str = "outputs/run"
    seq_len: int = 512  # tokens per chunk (the paper: 512)
    seed: int = 0
    device: str = "auto"  # auto | cpu | cuda | cuda:N
    executor: str = "ray"  # ray (actor pools) | local (in-process, for debugging and laptops)
    tokenizer: str = "EleutherAI/gpt-neox-20b"  # HF tokenizer: local dir, hub name, or folder URL
    lease_ttl_s: float = 60.0  # one writer per output_dir: the lease's expiry (0: no lease)
    data: DataConfig = field(default_factory=DataConfig)
    ray: RayConfig = field(default_factory=RayConfig)
    prepare: PrepareConfig = field(default_factory=PrepareConfig)
    prior: PriorConfig = field(default_factory=PriorConfig)
    conditional: ConditionalConfig = field(default_factory=ConditionalConfig)
    score: ScoreConfig = field(default_factory=ScoreConfig)
    selection: SelectionConfig = field(default_factory=SelectionConfig)
    cascade: CascadeConfig = field(default_factory=CascadeConfig)  # the distilled prefilter
    release: ReleaseConfig = field(default_factory=ReleaseConfig)
    evaluate: EvaluateConfig = field(default_factory=EvaluateConfig)
    storage: StorageConfig = field(default_factory=StorageConfig)  # object-store options

    @property
    def output_path(self) -> Path:
        """output_dir as a local Path, for scripts and tests; stages use colorfilter.layout,
        which also serves buckets (a URL here raises TypeError naming it)."""
        return Path(Location.parse(self.output_dir, self.storage, key="output_dir"))


def load_config(
    path: str | Path | Mapping[str, Any] | None, overrides: list[str] | None = None
) -> Config:
    """Load a YAML config (or a dict of the same shape), apply `key.sub=value` overrides, and
    type-check everything."""
    if isinstance(path, Mapping):
        raw = copy.deepcopy(dict(path))  # the overrides below must not change the caller's dict
    else:
        raw = load_yaml(path) if path is not None else {}
    for text in overrides or []:
        parts, value = parse_override(text)
        apply_override(Config, raw, parts, value)
    config = from_dict(Config, raw)
    validate(config)
    return config


def validate(config: Config) -> None:
    """Check every section at load, before any stage runs; raise one ConfigError listing every
    problem, one line each (`key must be ..., got value`). Single-field types are already checked
    by `from_dict`; the machine (device, output_dir) is checked by `check_environment`."""
    check = Checks()
    check.path("output_dir", config.output_dir, schemes=OUTPUT_SCHEMES)
    check.at_least("seq_len", config.seq_len, 2)
    check.at_least("lease_ttl_s", config.lease_ttl_s, 0)
    if not DEVICE_PATTERN.match(config.device):
        check.add("device", f"must be {DEVICES}, got {config.device!r}")
    check.one_of("executor", config.executor, EXECUTORS)
    check.non_empty("tokenizer", config.tokenizer)
    if URL_SCHEME.match(config.tokenizer):  # a folder URL; a hub name or local dir has none
        check.path("tokenizer", config.tokenizer, schemes=INPUT_SCHEMES)
    problems = check.problems
    for name in ("data", "ray", "prepare", "prior", "conditional", "score", "selection", "cascade"):
        problems += getattr(config, name).validate(name)
    problems += config.release.validate("release") + config.evaluate.validate("evaluate")
    problems += config.storage.validate() + _cascade_problems(config)
    raise_problems(problems)


def _cascade_problems(config: Config) -> list[str]:
    """What the cascade cannot serve in select: methods that rank every chunk's LM scores, and
    taus below the one its candidates are sized for (evaluate checks its own when it runs)."""
    if not config.cascade.enabled:
        return []
    check = Checks()
    check.problems += cascade_method_problems(config.selection.methods, "selection.methods")
    tau_min = config.cascade.planned_tau(config.selection.tau)
    low = [t for t in config.selection.tau if t < tau_min]
    if low:
        check.add(
            "cascade.min_tau",
            f"= {tau_min:g} is above selection.tau {low}: the candidates must serve every "
            "selected tau (set cascade.min_tau <= the smallest)",
        )
    return check.problems


def cascade_method_problems(methods: list[str], key: str) -> list[str]:
    """One line per method that needs every pool chunk's LM scores (refused under the cascade)."""
    refused = {*NEEDS_EVERY_LM_SCORE, LABEL_ORACLE}
    return [
        f"{key} names {method}, which needs every pool chunk's LM scores; the cascade "
        f"(cascade.enabled) scores only its candidates: use color, {DISTILLED}, random or dsir "
        "(README: Cascade)"
        for method in methods if method in refused
    ]


def check_environment(config: Config) -> None:
    """Check what the config asks of this machine, before any work: the device is present and
    output_dir is a directory we can create and write. Run by the CLI and the job entry points
    (not by `load_config`, so a config can be read anywhere, e.g. a GPU config on a laptop)."""
    check_output_dir_usable(config.output_dir, config.storage)
    if config.device.startswith("cuda") and not config.ray.address:
        check_cuda_device(config.device)


def check_output_dir_usable(output_dir: str, storage_cfg: StorageConfig | None = None) -> None:
    """output_dir exists or can be made, is a directory, and takes a file (probed, then removed);
    on a bucket: the bucket exists and the credentials may write there (io.preflight)."""
    location = Location.parse(output_dir, storage_cfg, key="output_dir")
    if not location.is_local:
        check_writable(location, "output_dir")
        return
    path = Path(location.path)
    for parent in (path, *path.parents):
        if parent.exists() or parent.is_symlink():
            if not parent.is_dir():
                where = "is a file" if parent == path else f"is below the file {parent}"
                raise ConfigError(f"output_dir={output_dir!r} {where}, not a directory")
            break
    probe = path / f".write-probe-{os.getpid()}"
    try:
        path.mkdir(parents=True, exist_ok=True)
        probe.write_bytes(b"")
        probe.unlink()
    except OSError as exc:
        raise ConfigError(
            f"output_dir={output_dir!r} is not usable: cannot create or write there "
            f"({exc.strerror or exc})"
        ) from None


def check_cuda_device(device: str) -> None:
    """`cuda` needs a visible GPU; `cuda:N` needs N + 1 of them (torch only imported here)."""
    torch = require("torch")
    count = torch.cuda.device_count() if torch.cuda.is_available() else 0
    index = int(device.partition(":")[2] or 0)
    if count == 0:
        raise ConfigError(
            f"device={device!r} but no CUDA GPU is visible on this machine "
            "(torch.cuda.is_available() is False); use device=cpu or device=auto"
        )
    if index >= count:
        raise ConfigError(
            f"device={device!r} but only {count} CUDA GPU(s) are visible (cuda:0 to "
            f"cuda:{count - 1})"
        )


def save_resolved(config: Config):
    """Write the resolved config beside the outputs, so every run says what it ran with."""
    path = RunLayout.of(config).config_file
    storage.makedirs(path.parent)
    storage.write_text(path, to_yaml(config))
    return path
