"""The root config: one typed dataclass per stage, loaded from YAML with `--set` overrides.

Keys `output_dir`, `data.pool`, `data.downstream_train`, `data.downstream_eval`,
`data.text_field` and `seq_len` are a fixed contract: other tools drive the CLI through them.
"""

from __future__ import annotations

from dataclasses import dataclass, field, is_dataclass
from pathlib import Path

from colorfilter.configtools import (
    apply_override,
    from_dict,
    load_yaml,
    parse_override,
    stable_hash,
    to_dict,
    to_yaml,
)
from colorfilter.dataset.config import OutputConfig, ReleaseConfig
from colorfilter.errors import ConfigError
from colorfilter.evaluation.config import EvaluateConfig
from colorfilter.models.config import ConditionalConfig, PriorConfig
from colorfilter.scoring.config import ScoreConfig


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


@dataclass
class RayConfig:
    address: str | None = None  # None: start a local Ray; "auto" or ray://HOST:10001: join one
    num_cpus: int | None = None  # CPUs for a local Ray (None: all)
    object_store_memory_mb: int = 500  # object store size for a local Ray
    capacity_wait_s: float = 300.0  # with no worker alive/placeable this long, the stage stops
    max_task_attempts: int = 4  # tries per task (transient errors, lost workers) before failing
    retry_backoff_s: float = 2.0  # first retry delay; doubles per attempt (at most 60 s)


@dataclass
class PrepareConfig:
    num_workers: int = 0  # tokenizer actors; 0 = one per CPU
    worker_cpus: float = 1.0  # CPUs reserved per actor
    rows_per_shard: int = 8192  # chunks per token shard
    tokenize_batch_docs: int = 256  # documents per tokenizer call
    max_segment_chars: int = 1_000_000  # longer documents are tokenized piecewise (memory bound)
    max_restarts: int = 3  # unused since the executor replaces lost workers itself (ray.*)
    max_task_retries: int = 3  # unused: see ray.max_task_attempts


@dataclass
class SelectionConfig:
    methods: list[str] = field(default_factory=lambda: ["color"])  # see colorfilter.selection
    tau: list[float] = field(default_factory=lambda: [16.0])  # keep the top 1/tau; several ok
    temperature: float = 1.0  # color_softmax: sample from softmax(score / temperature)
    block_n: int = 64  # color_batchwise: keep block_n of every block of tau * block_n
    documents: bool = False  # widen each selection to whole source documents (`-docs` folders)
    output: OutputConfig = field(default_factory=OutputConfig)


@dataclass
class Config:
    output_dir: str = "outputs/run"
    seq_len: int = 512  # tokens per chunk (the paper: 512)
    seed: int = 0
    device: str = "auto"  # auto | cpu | cuda | cuda:N
    executor: str = "ray"  # ray (actor pools) | local (in-process, for debugging and laptops)
    tokenizer: str = "EleutherAI/gpt-neox-20b"  # HF tokenizer: local dir or hub name
    data: DataConfig = field(default_factory=DataConfig)
    ray: RayConfig = field(default_factory=RayConfig)
    prepare: PrepareConfig = field(default_factory=PrepareConfig)
    prior: PriorConfig = field(default_factory=PriorConfig)
    conditional: ConditionalConfig = field(default_factory=ConditionalConfig)
    score: ScoreConfig = field(default_factory=ScoreConfig)
    selection: SelectionConfig = field(default_factory=SelectionConfig)
    release: ReleaseConfig = field(default_factory=ReleaseConfig)
    evaluate: EvaluateConfig = field(default_factory=EvaluateConfig)

    @property
    def output_path(self) -> Path:
        return Path(self.output_dir)


def load_config(path: str | Path | None, overrides: list[str] | None = None) -> Config:
    """Load a YAML config, apply `key.sub=value` overrides, and type-check everything."""
    raw = load_yaml(path) if path is not None else {}
    for text in overrides or []:
        parts, value = parse_override(text)
        apply_override(Config, raw, parts, value)
    config = from_dict(Config, raw)
    validate(config)
    return config


def validate(config: Config) -> None:
    """Checks that span fields; single-field types are already checked."""
    if config.seq_len < 2:
        raise ConfigError(f"seq_len must be at least 2, got {config.seq_len}")
    if not 0.0 <= config.data.max_bad_fraction <= 1.0:
        raise ConfigError("data.max_bad_fraction must be within [0, 1]")
    problems = config.score.validate()
    if problems:
        raise ConfigError("; ".join(problems))
    if any(t < 1 for t in config.selection.tau):
        raise ConfigError(f"selection.tau must be >= 1, got {config.selection.tau}")
    ray = config.ray
    if ray.capacity_wait_s <= 0 or ray.max_task_attempts < 1 or ray.retry_backoff_s < 0:
        raise ConfigError(
            "ray.capacity_wait_s must be > 0, ray.max_task_attempts >= 1 and "
            f"ray.retry_backoff_s >= 0 (got {ray.capacity_wait_s}, {ray.max_task_attempts}, "
            f"{ray.retry_backoff_s})"
        )
    if config.executor not in ("ray", "local"):
        raise ConfigError(f"executor must be 'ray' or 'local', not {config.executor!r}")


def save_resolved(config: Config) -> Path:
    """Write the resolved config beside the outputs, so every run says what it ran with."""
    from colorfilter.io.atomic import write_text_atomic

    path = config.output_path / "config.yaml"
    write_text_atomic(path, to_yaml(config))
    return path


def section_hash(*sections: object) -> str:
    """Fingerprint of the config sections (dataclasses or plain data) a stage depends on."""
    return stable_hash([to_dict(s) if is_dataclass(s) else s for s in sections])
