"""Fixtures for the model tests: synthetic corpora written once per session, a shared prior."""

from __future__ import annotations

import dataclasses
from pathlib import Path

import pytest

from colorfilter.models.stages import train_prior

from .synthetic import build_tokenizer, job, micro_prior_config, write_split


@dataclasses.dataclass
class Corpus:
    tokenizer: Path
    pool: Path
    pool_eval: Path
    train: Path
    eval: Path


@pytest.fixture(scope="session")
def corpus(tmp_path_factory: pytest.TempPathFactory) -> Corpus:
    root = tmp_path_factory.mktemp("corpus")
    return Corpus(
        tokenizer=build_tokenizer(root / "tokenizer"),
        pool=write_split(root / "pool", "pool", n_files=3, chunks_per_file=24, seed=1),
        pool_eval=write_split(root / "pool_eval", "pool", 1, 8, seed=2, first_file_index=10),
        train=write_split(root / "train", "target", 2, 16, seed=3, first_file_index=20),
        eval=write_split(root / "eval", "target", 1, 8, seed=4, first_file_index=30),
    )


@pytest.fixture(scope="session")
def trained_prior(corpus: Corpus, tmp_path_factory: pytest.TempPathFactory) -> tuple[Path, dict]:
    """A micro prior trained once on the pool and shared by the tests that only read it."""
    out = tmp_path_factory.mktemp("models") / "prior"
    stats = train_prior(job(corpus.pool, out, corpus.tokenizer, eval_data=corpus.pool_eval),
                        micro_prior_config())  # fmt: skip
    return out, stats
