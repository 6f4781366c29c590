"""The vocabulary an export's token dtype is chosen for, and the ids a trainer's config needs.

Where it comes from, in order:
1. `--vocab-size N`: the size alone (for a selection that travelled without its run, e.g. one
   downloaded from the hub); the EOS and pad ids are then unknown to the export's manifest.
2. The run's tokenizer that the selection's manifest records (`tokenizer.path`), used only if
   its files still hash to the recorded `tokenizer.sha256` (a rerun of prepare with another
   tokenizer must not size the dtype).
3. The same tokenizer where the run layout puts it beside the selection (`OUTPUT/tokenizer` for
   `OUTPUT/selected/NAME`: a run folder copied or synced elsewhere as a whole), same check.
Otherwise the export stops (exit 2), naming where it looked and suggesting `--vocab-size`.

The size is the largest id of the tokenizer's vocabulary and added tokens, plus one (so ids
need not be dense); pad = EOS when the tokenizer has no pad token, as prepare does.
Every token of the selection is checked against the size as it is exported.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

from colorfilter.errors import ColorFilterError
from colorfilter.export.source import ExportError, Selection
from colorfilter.io import storage
from colorfilter.io.cache import local_copy
from colorfilter.io.location import Location


@dataclass(frozen=True)
class Vocabulary:
    size: int
    source: str  # "--vocab-size", or the tokenizer folder it was read from
    eos_token_id: int | None = None
    pad_token_id: int | None = None

    def describe(self) -> dict[str, Any]:
        return {"size": self.size, "source": self.source, "eos_token_id": self.eos_token_id,
                "pad_token_id": self.pad_token_id}


def find_vocabulary(selection: Selection, vocab_size: int | None = None) -> Vocabulary:
    """The vocabulary of the selection's run (see the module docstring for the order)."""
    if vocab_size is not None:
        if vocab_size < 1:
            raise ExportError(f"--vocab-size must be at least 1, got {vocab_size}")
        return Vocabulary(vocab_size, "--vocab-size")
    recorded = selection.manifest.get("tokenizer") or {}
    expected = recorded.get("sha256")
    tried = []
    for candidate in _candidates(selection, recorded.get("path")):
        tried.append(candidate.url)
        if expected and _has_tokenizer(candidate) and storage.folder_sha256(candidate) == expected:
            return _read_tokenizer(candidate)
    where = ", ".join(tried) if tried else "no tokenizer path in its manifest"
    raise ExportError(
        f"{selection.location.url}: the run's tokenizer (sha256 {str(expected)[:12]}) was not "
        f"found ({where}); pass --vocab-size N"
    )


def _candidates(selection: Selection, recorded: str | None) -> list[Location]:
    found: list[Location] = []
    if recorded:
        try:
            found.append(Location.parse(recorded, selection.location.storage))
        except (ColorFilterError, ValueError):  # a path this machine cannot parse
            pass
    parent = selection.location.parent  # OUTPUT/selected
    if parent.parent.path != parent.path:
        sibling = parent.parent.join("tokenizer")  # OUTPUT/tokenizer
        if sibling not in found:
            found.append(sibling)
    return found


def _has_tokenizer(loc: Location) -> bool:
    try:
        return storage.exists(loc.join("tokenizer_config.json"))
    except OSError:
        return False


def _read_tokenizer(loc: Location) -> Vocabulary:
    from transformers import AutoTokenizer


    tokenizer = AutoTokenizer.from_pretrained(str(local_copy(loc)))
    ids = [*tokenizer.get_vocab().values(), *tokenizer.all_special_ids]
    eos = tokenizer.eos_token_id
    pad = tokenizer.pad_token_id if tokenizer.pad_token_id is not None else eos
    return Vocabulary(max(ids) + 1, loc.url, eos, pad)
