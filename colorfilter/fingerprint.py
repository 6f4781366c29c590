"""Fingerprints: one way to hash what decides an output, and one streamed sha256.

Every identity colorfilter records (a config's hash in a manifest, a training stage's hash in a
model record, the scoring fingerprint in each score shard's record, a select plan's hash) is a
sha256 over canonical JSON, built with `Digest`; `fingerprint(payload)` is the one-call form.
Records written by earlier versions keep matching because their layouts are named here
(`LEGACY_SEPARATORS`: the training stages' and the scoring fingerprint's JSON, which a change
would turn into a retrain or a rescore of every existing run).

Standard library only: the config imports this at start-up.
"""

from __future__ import annotations

import dataclasses
import hashlib
import json
from typing import IO, Any

COMPACT = (",", ":")  # canonical JSON: sorted keys, no whitespace
LEGACY_SEPARATORS = (", ", ": ")  # json.dumps' default, as model records and score shards hash
READ_BLOCK = 1 << 20


def canonical_json(payload: Any, separators: tuple[str, str] = COMPACT) -> str:
    """JSON with sorted keys (dataclasses as dicts, anything else as str): equal payloads give
    equal text."""
    if dataclasses.is_dataclass(payload) and not isinstance(payload, type):
        payload = dataclasses.asdict(payload)
    return json.dumps(payload, sort_keys=True, separators=separators, default=str)


class Digest:
    """A sha256 built from parts: canonical JSON payloads and plain text, in order."""

    def __init__(self) -> None:
        self._sha = hashlib.sha256()

    def json(self, payload: Any, separators: tuple[str, str] = COMPACT) -> Digest:
        self._sha.update(canonical_json(payload, separators).encode("utf-8"))
        return self

    def text(self, value: str) -> Digest:
        self._sha.update(value.encode("utf-8"))
        return self

    def hexdigest(self, length: int | None = None) -> str:
        return self._sha.hexdigest()[:length]


def fingerprint(payload: Any, length: int | None = None,
                separators: tuple[str, str] = COMPACT) -> str:  # fmt: skip
    """sha256 (hex, cut to `length`) of the canonical JSON of `payload`."""
    return Digest().json(payload, separators).hexdigest(length)


def sha256_stream(handle: IO[bytes], block: int = READ_BLOCK) -> str:
    """sha256 of everything left in a binary stream, read in blocks (bounded memory)."""
    digest = hashlib.sha256()
    while chunk := handle.read(block):
        digest.update(chunk)
    return digest.hexdigest()
