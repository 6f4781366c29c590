"""Model folders on any backend: config hashes, atomic `save_pretrained`, tokenizer checks.

A model folder is a unit (colorfilter.io.commit): its files first, then the record
`colorfilter.layout.MODEL_RECORD` listing each with its size and sha256, so a rerun (and
`colorfilter score`) trusts a model on a bucket only once every file of it is there. A stage
that loads a model checks it with `verified_model` first: a file cut short, missing or altered
since is one DamagedDataError naming it and the stage that trains it again, never a model
loaded with garbage weights or "unexpected failure".
"""

from __future__ import annotations

import dataclasses
import fnmatch
import hashlib
import os
import shutil
import tempfile
from pathlib import Path
from typing import Any

import numpy as np

from colorfilter.configtools import URL_SCHEME
from colorfilter.errors import ConfigError
from colorfilter.fingerprint import LEGACY_SEPARATORS, fingerprint, sha256_stream
from colorfilter.io.atomic import TMP_PREFIX, remove_stale_temps, write_json_atomic
from colorfilter.io.cache import source_url
from colorfilter.io.commit import Unit, commit_unit, is_committed, problems
from colorfilter.io.faults import reading
from colorfilter.io.location import Location, as_location
from colorfilter.io.storage import find, list_dir, read_json, read_many, remove, stat_many
from colorfilter.io.transfer import staged_folder, write_parquet
from colorfilter.layout import MODEL_RECORD, require_record
from colorfilter.models.config import hashed_settings
from colorfilter.models.curves import write_loss_curve_csv, write_loss_curve_png

SMALL_FILE_BYTES = 1 << 20  # files up to this size are fingerprinted by content, others by size
STATS_FILE = "train_stats.json"
CURVE_CSV, CURVE_PNG = "loss_curve.csv", "loss_curve.png"
WEIGHT_PATTERNS = ("*.safetensors", "*.safetensors.index.json", "pytorch_model*.bin*")
MODEL_STAGES = {"train-prior": "prior model", "train-conditional": "conditional model"}


def input_identity(target: str | Path | Location | list | None) -> Any:
    """A cheap identity for input files: content hash of small files, name and size of big ones.

    Files on a bucket (URLs or remote Locations) are identified the same way, from a listing.
    """
    if target is None:
        return None
    targets = [target] if isinstance(target, (str, Path, Location)) else list(target)
    if any(_is_remote(t) for t in targets):
        return _remote_identity([as_location(t) for t in targets], target)
    paths = [Path(t) for t in targets]
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


def _is_remote(value: Any) -> bool:
    if isinstance(value, Location):
        return not value.is_local
    return isinstance(value, str) and URL_SCHEME.match(value) is not None and not value.startswith(
        "file://"
    )


def _remote_identity(locs: list[Location], target: Any) -> Any:
    """`fingerprint` from listings: a folder's files (one listing), or the given files (one
    listing per folder); the small ones are read, concurrently."""
    if isinstance(target, (str, Path, Location)):
        files = [(info.location, info.size) for info in find(locs[0])]
    else:
        sizes = stat_many(locs)
        files = [(loc, sizes[loc.url]) for loc in locs if sizes[loc.url] is not None]
    if not files:
        return target.url if isinstance(target, Location) else str(target)
    small = read_many(loc for loc, size in files if size <= SMALL_FILE_BYTES)
    return [
        [loc.name, size, hashlib.sha256(small[loc.url]).hexdigest()[:16]
         if small.get(loc.url) is not None else None]
        for loc, size in files
    ]


def stage_hash(stage: str, cfg: Any, seq_len: int, seed: int, inputs: dict[str, Any]) -> str:
    """A hash of everything that decides a stage's weights (runtime-only fields left out), in
    the JSON layout model records have always used (another would retrain every model)."""
    payload = {
        "stage": stage,
        "settings": hashed_settings(dataclasses.asdict(cfg), stage),
        "seq_len": seq_len,
        "seed": seed,
        "inputs": {name: input_identity(value) for name, value in inputs.items()},
    }
    return fingerprint(payload, 16, LEGACY_SEPARATORS)


def load_tokenizer(tokenizer_dir: str | Path) -> tuple[Any, int]:
    """The prepared run's tokenizer and its pad id (the eos token when no pad token is set)."""
    from transformers import AutoTokenizer

    if not Path(tokenizer_dir).is_dir():  # callers check the run (RunLayout.check_tokenizer)
        raise ConfigError(f"no tokenizer folder at {source_url(tokenizer_dir) or tokenizer_dir}")
    with reading(tokenizer_dir, name=source_url(tokenizer_dir)):  # a torn tokenizer.json
        tokenizer = AutoTokenizer.from_pretrained(str(tokenizer_dir))
    pad_id = tokenizer.pad_token_id
    if pad_id is None:
        pad_id = tokenizer.eos_token_id
    if pad_id is None:
        raise ConfigError(f"tokenizer in {tokenizer_dir} has neither a pad nor an eos token")
    return tokenizer, int(pad_id)


def check_tokenizer_matches(model_dir: str | Path, tokenizer: Any, label: str = "") -> None:
    """Refuse a checkpoint whose own tokenizer differs from the one the data was tokenized with.

    `label` names the checkpoint in messages (its URL when `model_dir` is a local copy)."""
    from transformers import AutoTokenizer

    model_dir = Path(model_dir)
    label = label or str(model_dir)
    if not (model_dir / "config.json").exists():
        raise ConfigError(
            f"prior.init_from {label} is not a HF checkpoint directory "
            "(no config.json); see scripts/convert_smollm2.py for GGUF files"
        )
    if not any((model_dir / name).exists() for name in ("tokenizer.json", "tokenizer_config.json")):
        return
    own = AutoTokenizer.from_pretrained(str(model_dir))
    if own.get_vocab() != tokenizer.get_vocab():
        raise ConfigError(
            f"prior.init_from {label} has its own tokenizer, which differs from "
            "the run's: prepare the data with that checkpoint's tokenizer"
        )


def prepare_out_dir(out_dir: Path | Location, stats_file: str) -> None:
    """Retract the folder's completion record (a rerun must not trust it while this run
    rewrites the folder) and its stats; locally also make it and drop a killed run's temp
    files (an aborted upload leaves no object behind: nothing to clean on a bucket)."""
    out = as_location(out_dir)
    remove(out.join(MODEL_RECORD))
    remove(out.join(stats_file))
    if not out.is_local:
        return
    path = Path(out.path)
    path.mkdir(parents=True, exist_ok=True)
    remove_stale_temps(path)
    for stale in path.glob(TMP_PREFIX + "*"):
        if stale.is_dir():
            shutil.rmtree(stale, ignore_errors=True)


def save_model_dir(model: Any, tokenizer: Any, out_dir: Path) -> list[str]:
    """`save_pretrained` model and tokenizer into a temp dir, then move each file into place
    in the local folder `out_dir`; return the names written."""
    out_dir.mkdir(parents=True, exist_ok=True)
    tmp = Path(tempfile.mkdtemp(prefix=TMP_PREFIX + "model-", dir=out_dir))
    try:
        model.save_pretrained(tmp)
        tokenizer.save_pretrained(tmp)
        for pattern in WEIGHT_PATTERNS:  # an older run's weights could shadow the new ones
            for old in out_dir.glob(pattern):
                old.unlink()
        names = sorted(file.name for file in tmp.iterdir())
        for file in tmp.iterdir():
            os.replace(file, out_dir / file.name)
        return names
    finally:
        shutil.rmtree(tmp, ignore_errors=True)


def drop_old_weights(dest: Location, keep: list[str]) -> None:
    """Remove weight objects of an older run in a remote folder that the new save lacks (a
    sharded checkpoint's pieces would shadow a single new file)."""
    for loc in list_dir(dest):
        if loc.name not in keep and any(fnmatch.fnmatch(loc.name, p) for p in WEIGHT_PATTERNS):
            remove(loc)


def publish_model_dir(
    out: Location,
    model: Any,
    tokenizer: Any,
    stats: dict[str, Any],
    history: list[dict[str, float]] | None = None,
    title: str = "",
    extra_names: tuple[str, ...] = (),
) -> dict[str, Any]:
    """Write a finished model folder as one unit: weights and tokenizer (`save_pretrained`), the
    loss curve (when `history` is given) and the stats, then the record listing them and the
    already written `extra_names`, with sizes and sha256 (hashed from the local files before
    an upload; the extra ones read back). Returns the stats as a rerun reads them back."""
    with staged_folder(out) as folder:
        names = save_model_dir(model, tokenizer, folder)
        if history is not None:
            write_loss_curve_csv(history, folder / CURVE_CSV)
            write_loss_curve_png(history, folder / CURVE_PNG, title=title)
            names += [CURVE_CSV, CURVE_PNG]
        write_json_atomic(folder / STATS_FILE, stats)
        names.append(STATS_FILE)
        hashes = {name: _local_sha256(folder / name) for name in names}
        if not out.is_local:
            drop_old_weights(out, names)
    objects = [out.join(n) for n in [*names, *extra_names]]
    commit_unit(out.join(MODEL_RECORD), objects, {"config_hash": stats["config_hash"]},
                sha256=hashes)  # fmt: skip
    return read_json(out.join(STATS_FILE))


def _local_sha256(path: Path) -> str:
    with open(path, "rb") as handle:
        return sha256_stream(handle)


def commit_model_files(out_dir: Path | Location, config_hash: str = "") -> dict:
    """Commit a model folder written by other means (a test's `save_pretrained`, a copied
    checkpoint): every file in it but the record and checkpoint/, with sizes and sha256, so
    stages that load the model accept it. (A train stage still retrains it: no stats carry its
    config hash.)"""
    out = as_location(out_dir)
    files = [info.location for info in find(out)
             if info.location.name != MODEL_RECORD
             and not info.location.relative_to(out).startswith("checkpoint/")]
    return commit_unit(out.join(MODEL_RECORD), files, {"config_hash": config_hash}, sha256=True)


def committed_model(out: Location) -> Unit | None:
    """The model folder's record when every file it lists is there (sizes only), else None."""
    return is_committed(out.join(MODEL_RECORD))


def model_damage(unit: Unit) -> tuple[Location, str] | None:
    """(the first file, what is wrong with it) when a model folder's files do not match its
    record by size and sha256 (hashed in full: cheap next to training or scoring), else None."""
    found = problems(unit, stat_many(unit.locations()), verify_sha256=True)
    return found[0] if found else None


def verified_model(folder: str | Path | Location, stage: str) -> Unit:
    """The model folder's unit, for a stage about to load it (`stage`: the one that trains it,
    train-prior or train-conditional), every file checked by size and sha256 (cheap next to
    loading it). No record, or every file gone: a ConfigError, "run `colorfilter STAGE`
    first"; a record cut short, or a file missing, cut short or altered since: a
    DamagedDataError (exit 3) naming the file and the stage to rerun."""
    what = MODEL_STAGES.get(stage, "model")
    record = as_location(folder).join(MODEL_RECORD)
    return require_record(record, stage, what, verify_sha256=True, damaged_as=f"{what} file")


def write_seq_ids(seq_ids: np.ndarray, path: Path | Location) -> None:
    """Record which pool chunks the prior trained on (they stay in the pool and are scored)."""
    import pyarrow as pa

    write_parquet(path, pa.table({"seq_id": pa.array(seq_ids, type=pa.uint64())}))
