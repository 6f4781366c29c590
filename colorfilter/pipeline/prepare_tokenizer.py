"""The run's tokenizer: the configured one, copied once into OUTPUT/tokenizer by prepare.

`tokenizer:` in the config is a hub name (`EleutherAI/gpt-neox-20b`, fetched by transformers),
a local folder, or a folder URL (s3://, gs://, hf://ORG/REPO[/SUB], file://), fetched once per
node with colorfilter.io.cache.local_copy. Prepare saves it to RunLayout.tokenizer (a local
folder or a bucket prefix, through colorfilter.io.transfer.staged_folder) with
`tokenizer_config.json` written last, so a run killed while saving leaves no folder a rerun
takes as saved. Prepare's marker then lists every file of it and the folder's sha256, which
every later stage checks (RunLayout.check_tokenizer). Workers and later stages read the saved
folder with `local_copy(layout.tokenizer)`.
"""

from __future__ import annotations

from typing import Any

from colorfilter.configtools import URL_SCHEME
from colorfilter.errors import ConfigError
from colorfilter.io import storage
from colorfilter.io.cache import local_copy
from colorfilter.io.config import StorageConfig
from colorfilter.io.location import Location, as_location
from colorfilter.io.transfer import staged_folder

MARKER = "tokenizer_config.json"  # written last: the folder was saved whole


def tokenizer_source(name_or_url: str, storage_cfg: StorageConfig | None = None) -> str:
    """What AutoTokenizer.from_pretrained takes for the configured value: a hub name or a local
    folder as given, a URL's node-local copy (ConfigError naming `tokenizer` if unreadable)."""
    if not URL_SCHEME.match(name_or_url):
        return name_or_url

    location = Location.parse(name_or_url, storage_cfg, key="tokenizer")
    try:
        return str(local_copy(location))
    except (OSError, ValueError) as exc:
        raise ConfigError(f"tokenizer: cannot read '{location.url}': {exc}") from exc


def open_configured(name_or_url: str, storage_cfg: StorageConfig | None = None) -> Any:
    """The configured tokenizer, checked (it needs an EOS token), with pad = EOS when unset."""
    from transformers import AutoTokenizer

    try:
        tokenizer = AutoTokenizer.from_pretrained(tokenizer_source(name_or_url, storage_cfg))
    except (OSError, ValueError) as exc:
        raise ConfigError(f"tokenizer: cannot load '{name_or_url}': {exc}") from exc
    if tokenizer.eos_token_id is None:
        raise ConfigError(f"tokenizer '{name_or_url}' has no EOS token to join documents with")
    if tokenizer.pad_token is None:
        tokenizer.pad_token = tokenizer.eos_token
    return tokenizer


def save_tokenizer(name_or_url: str, target: Any) -> str:
    """Copy the configured tokenizer into the run (unless already there) so every worker and
    stage uses the same one; returns the target's URL (a local path when local).

    `target` is a Location (its storage options also reach a URL `name_or_url`) or a path.
    """
    target = as_location(target)
    marker = target.join(MARKER)
    if storage.exists(marker):
        return target.url

    tokenizer = open_configured(name_or_url, target.storage)
    with staged_folder(target) as folder:
        tokenizer.save_pretrained(folder)
        last = folder / MARKER
        data = last.read_bytes()
        last.unlink()  # uploaded (or left) last, below, after every other file is in place
    storage.write_bytes(marker, data)
    return target.url
