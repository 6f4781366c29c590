"""Model directories on disk: config hashes, atomic `save_pretrained`, tokenizer checks."""

from __future__ import annotations

import dataclasses
import hashlib
import json
import os
import shutil
import tempfile
from pathlib import Path
from typing import Any

import numpy as np

from colorfilter.errors import ConfigError
from colorfilter.io.atomic import TMP_PREFIX, remove_stale_temps, write_parquet_atomic
from colorfilter.models.config import hashed_settings

SMALL_FILE_BYTES = 1 << 20  # files up to this size are fingerprinted by content, others by size
WEIGHT_PATTERNS = ("*.safetensors", "*.safetensors.index.json", "pytorch_model*.bin*")


def fingerprint(target: str | Path | list[Path] | None) -> Any:
    """A cheap identity for input files: content hash of small files, name and size of big ones."""
    if target is None:
        return None
    paths = [Path(target)] if isinstance(target, (str, Path)) else [Path(p) for p in target]
    if len(paths) == 1 and not paths[0].exists():
        return str(target)
    entries = []
    for path in paths:
        files = sorted(p for p in path.rglob("*") if p.is_file()) if path.is_dir() else [path]
        for file in files:
            size = file.stat().st_size
            digest = (
                hashlib.sha256(file.read_bytes()).hexdigest()[:16]
                if size <= SMALL_FILE_BYTES
                else None
            )
            entries.append([file.name, size, digest])
    return entries


def stage_hash(stage: str, cfg: Any, seq_len: int, seed: int, inputs: dict[str, Any]) -> str:
    """A hash of everything that decides a stage's weights (runtime-only fields left out)."""
    settings = hashed_settings(dataclasses.asdict(cfg))
    payload = {
        "stage": stage,
        "settings": settings,
        "seq_len": seq_len,
        "seed": seed,
        "inputs": {name: fingerprint(value) for name, value in inputs.items()},
    }
    text = json.dumps(payload, sort_keys=True, default=str)
    return hashlib.sha256(text.encode()).hexdigest()[:16]


def load_tokenizer(tokenizer_dir: str | Path) -> tuple[Any, int]:
    """The prepared run's tokenizer and its pad id (the eos token when no pad token is set)."""
    from transformers import AutoTokenizer

    if not Path(tokenizer_dir).is_dir():
        raise ConfigError(f"no tokenizer directory at {tokenizer_dir}: run `prepare` first")
    tokenizer = AutoTokenizer.from_pretrained(str(tokenizer_dir))
    pad_id = tokenizer.pad_token_id
    if pad_id is None:
        pad_id = tokenizer.eos_token_id
    if pad_id is None:
        raise ConfigError(f"tokenizer in {tokenizer_dir} has neither a pad nor an eos token")
    return tokenizer, int(pad_id)


def check_tokenizer_matches(model_dir: str | Path, tokenizer: Any) -> None:
    """Refuse a checkpoint whose own tokenizer differs from the one the data was tokenized with."""
    from transformers import AutoTokenizer

    model_dir = Path(model_dir)
    if not (model_dir / "config.json").exists():
        raise ConfigError(
            f"prior.init_from {model_dir} is not a HF checkpoint directory "
            "(no config.json); see scripts/convert_smollm2.py for GGUF files"
        )
    if not any((model_dir / name).exists() for name in ("tokenizer.json", "tokenizer_config.json")):
        return
    own = AutoTokenizer.from_pretrained(str(model_dir))
    if own.get_vocab() != tokenizer.get_vocab():
        raise ConfigError(
            f"prior.init_from {model_dir} has its own tokenizer, which differs from "
            "the run's: prepare the data with that checkpoint's tokenizer"
        )


def prepare_out_dir(out_dir: Path, stats_file: str) -> None:
    """Make `out_dir`, drop a killed run's temp files, and retract an outdated stats record."""
    out_dir.mkdir(parents=True, exist_ok=True)
    remove_stale_temps(out_dir)
    for stale in out_dir.glob(TMP_PREFIX + "*"):
        if stale.is_dir():
            shutil.rmtree(stale, ignore_errors=True)
    (out_dir / stats_file).unlink(missing_ok=True)


def save_model_dir(model: Any, tokenizer: Any, out_dir: Path) -> None:
    """`save_pretrained` model and tokenizer into a temp dir, then move each file into place."""
    out_dir.mkdir(parents=True, exist_ok=True)
    tmp = Path(tempfile.mkdtemp(prefix=TMP_PREFIX + "model-", dir=out_dir))
    try:
        model.save_pretrained(tmp)
        tokenizer.save_pretrained(tmp)
        for pattern in WEIGHT_PATTERNS:  # an older run's weights could shadow the new ones
            for old in out_dir.glob(pattern):
                old.unlink()
        for file in tmp.iterdir():
            os.replace(file, out_dir / file.name)
    finally:
        shutil.rmtree(tmp, ignore_errors=True)


def write_seq_ids(seq_ids: np.ndarray, path: Path) -> None:
    """Record which pool chunks the prior trained on (they stay in the pool and are scored)."""
    import pyarrow as pa

    write_parquet_atomic(path, pa.table({"seq_id": pa.array(seq_ids, type=pa.uint64())}))
