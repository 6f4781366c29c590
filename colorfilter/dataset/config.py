"""Options of the dataset-writing and release stages (standard library only)."""

from __future__ import annotations

from dataclasses import dataclass


@dataclass
class OutputConfig:
    """How a selection is written to `OUTPUT/selected/<method>-tau<tau>/`."""

    rows_per_shard: int = 100_000  # rows per data/train-*.parquet shard
    checksum_inputs: bool = True  # sha256 every token/score shard into the manifest (slow at scale)
    hash_models: bool = True  # sha256 the prior/conditional checkpoints into the manifest
    histogram_bins: int = 100  # bins of the score histogram in the dataset card


@dataclass
class ReleaseConfig:
    """Where `colorfilter release` uploads a finished selection folder."""

    repo_id: str | None = None  # "org/name" of the dataset repo on the Hub
    private: bool = False  # create the repo private
    revision: str | None = None  # branch to commit to (created if missing); None = main
