"""Options of the dataset-writing and release stages (standard library only)."""

from __future__ import annotations

from dataclasses import dataclass
from typing import ClassVar

from colorfilter.configtools import Checks


@dataclass
class OutputConfig:
    """How a selection is written to `OUTPUT/selected/<method>-tau<tau>/`."""

    rows_per_shard: int = 100_000  # rows per data/train-*.parquet shard
    checksum_inputs: bool = True  # sha256 every token/score shard into the manifest (slow at scale)
    histogram_bins: int = 100  # bins of the score histogram in the dataset card

    # keys of older versions that no longer do anything (named in the unknown-key error)
    REMOVED_KEYS: ClassVar[dict[str, str]] = {
        "hash_models": "it was never read; the manifest always hashes both checkpoints",
    }

    def validate(self, where: str = "selection.output") -> list[str]:
        check = Checks(where)
        check.at_least("rows_per_shard", self.rows_per_shard, 1)
        check.at_least("histogram_bins", self.histogram_bins, 1)
        return check.problems


@dataclass
class ReleaseConfig:
    """Where `colorfilter release` uploads a finished selection folder."""

    repo_id: str | None = None  # "org/name" of the dataset repo on the Hub
    private: bool = False  # create the repo private
    revision: str | None = None  # branch to commit to (created if missing); None = main

    def validate(self, where: str = "release") -> list[str]:
        check = Checks(where)
        if self.repo_id is not None and (self.repo_id.count("/") != 1 or " " in self.repo_id):
            check.add("repo_id", f"must be 'org/name', got {self.repo_id!r}")
        check.non_empty("revision", self.revision)
        return check.problems
