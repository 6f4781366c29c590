"""The Python API: a thin, documented layer over the CLI's own pieces (exported by `colorfilter`).

    import colorfilter as cf
    cfg = cf.load_config("configs/demo.yaml", overrides=["seq_len=256"])   # or a dict
    cf.run(cfg, stages="prepare,score")           # the CLI's stages: same records, same resume
    scorer = cf.load_scorer("outputs/demo")       # a run folder (or URL): its trained pair
    scorer.score_ids(input_ids, n_tokens)         # per chunk: prior_loss, cond_loss, score
    scorer.score_texts(["...", "..."])            # per text and per chunk
    ds = cf.load_selection("outputs/demo/selected/color-tau16")   # a datasets.Dataset

Errors the caller can cause are `colorfilter.errors` exceptions with one-line messages (a bad
key, a missing stage output, an unfinished selection folder).
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from pathlib import Path
from typing import Any

from colorfilter import config as _config
from colorfilter.config import Config
from colorfilter.dataset.manifest import MANIFEST_NAME, read_manifest, verify_files
from colorfilter.errors import ConfigError
from colorfilter.io import storage
from colorfilter.io.config import StorageConfig
from colorfilter.io.location import Location
from colorfilter.pipeline.stages import run_stage, stage_names
from colorfilter.scorer import Scorer, ScorerSettings

ConfigLike = Config | Mapping[str, Any] | str | Path


def load_config(
    source: str | Path | Mapping[str, Any] | None = None, overrides: Sequence[str] = ()
) -> Config:
    """A checked config from a YAML file or a dict of the same shape (None: the defaults), with
    dotted `key.sub=value` overrides as `--set` takes them. Every problem is reported at once in
    one ConfigError, as the CLI reports it."""
    return _config.load_config(source, list(overrides))


def run(
    config: ConfigLike, stages: str | Sequence[str] | None = None, *, overwrite: bool = False
) -> dict[str, dict]:
    """Run pipeline stages as `colorfilter run` does; return each stage's stats.

    `stages`: "prepare,score" or a list (None: every stage but evaluate). Like the CLI it checks
    the machine first (output_dir writable, the CUDA device present), then per stage checks the
    config against the one saved in output_dir (a different one is refused unless `overwrite`),
    saves it, and runs the stage. The outputs and their completion records are the CLI's, so a
    second call resumes: finished units are kept, the rest redone.
    """
    if not isinstance(config, Config):
        config = load_config(config)
    if stages is not None and not isinstance(stages, str):
        stages = ",".join(stages)
    names = stage_names(stages)
    _config.check_environment(config)
    return {name: run_stage(name, config, overwrite) for name in names}


def load_scorer(
    run_folder: str | Path | Location,
    *,
    device: str | None = None,
    precision: str | None = None,
    batch_size: int | None = None,
    torch_threads: int | None = None,
    storage_cfg: StorageConfig | None = None,
) -> Scorer:
    """The trained prior and conditional of a run folder (a path or a URL), ready to score.

    seq_len, the tokenizer and the `score` section come from the folder's saved config.yaml;
    `device` (auto | cpu | cuda | cuda:N), `precision` (auto | fp32 | fp32-autocast-bf16 | bf16 |
    fp16), `batch_size` and `torch_threads` (0: torch's default) override them. Models on a
    bucket are fetched once into the node's cache (`$COLORFILTER_CACHE`); `storage_cfg` holds
    endpoint/region options for a URL (credentials come from the environment).
    """
    settings = ScorerSettings.from_run(
        Location.parse(run_folder, storage_cfg, key="run folder"), device=device,
        precision=precision, batch_size=batch_size, torch_threads=torch_threads,
        storage_cfg=storage_cfg,
    )  # fmt: skip
    return Scorer(settings)


def load_selection(
    folder: str | Path | Location,
    *,
    storage_cfg: StorageConfig | None = None,
    verify_sha256: bool = False,
    cache_dir: str | None = None,
) -> Any:
    """A finished selection folder (`OUTPUT/selected/<name>`, a path or a URL) as a
    `datasets.Dataset` of its rows (seq_id, input_ids, text, score, ...).

    Refused with a ConfigError unless the folder's manifest.json is there and complete and every
    file it lists is present with its listed size (one listing; `verify_sha256` also re-hashes
    each file, which reads it all). Exactly the manifest's data files are loaded, and their row
    count must equal the manifest's `counts.selected`.
    """
    import datasets

    loc = Location.parse(folder, storage_cfg, key="selection folder")
    manifest = read_manifest(loc)
    if manifest is None or not isinstance(manifest.get("files"), dict):
        raise ConfigError(
            f"{loc.url} has no complete {MANIFEST_NAME}: not a selection folder, or its select "
            "stage did not finish (rerun `colorfilter select`)"
        )
    _check_listed_files(loc, manifest["files"], verify_sha256)
    data = sorted(r for r in manifest["files"] if r.startswith("data/") and r.endswith(".parquet"))
    options = {} if loc.is_local else {"storage_options": storage.storage_options(loc)}
    ds = datasets.load_dataset(
        "parquet", data_files=[loc.join(r).url for r in data], split="train",
        cache_dir=cache_dir, **options,
    )  # fmt: skip
    expected = (manifest.get("counts") or {}).get("selected")
    if expected is not None and len(ds) != expected:
        raise ConfigError(
            f"{loc.url}: its data files hold {len(ds)} rows but the manifest says "
            f"{expected} were selected; rerun `colorfilter select`"
        )
    return ds


def _check_listed_files(loc: Location, files: Mapping[str, Any], verify_sha256: bool) -> None:
    """Every file the manifest lists is there with its size (and sha256, when asked)."""
    listing = {info.location.url: info.size for info in storage.find(loc)}
    problems = verify_files(loc, {"files": files}, verify_sha256, sizes=listing)
    if problems:
        raise ConfigError(
            f"{loc.url} does not match its {MANIFEST_NAME} ({len(problems)} problem(s): "
            + "; ".join(problems[:3])
            + "); rerun `colorfilter select`"
        )
