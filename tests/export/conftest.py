"""Fixtures for the export tests: one real selection folder per session (read-only).

Built with the real writer over the synthetic pool of tests/dataset (3 input files, chunks of
24 tokens cut from EOS-joined documents, so each file's last chunk is shorter), selecting every
scored chunk (tau 1) into shards of 16 rows: the shuffled row order puts short chunks in the
middle of shards, which the OLMo-core export must cut files at.
"""

from __future__ import annotations

import shutil
from pathlib import Path

import numpy as np
import pyarrow.parquet as pq
import pytest

from tests.dataset import synthetic

ROWS_PER_SHARD = 16


def build_selection(root: Path, tau: int = 1) -> Path:
    """A finished selection folder at root/selected/color-tau<tau>, its run beside it."""
    from tests.dataset.synthetic import write_one

    pool = synthetic.build_pool(root)
    out_dir = root / "selected" / f"color-tau{tau}"
    write_one(
        pool.top_k(tau), pool.token_dir, pool.score_dir, pool.tokenizer_dir, out_dir,
        method="color", tau=tau, rows_per_shard=ROWS_PER_SHARD, seed=3,
        config={"seq_len": pool.seq_len}, checksum_inputs=False,
    )  # fmt: skip
    return out_dir


def selection_rows(folder: Path) -> list[list[int]]:
    """The selection's chunks (input_ids) in row order, read with pyarrow alone."""
    rows: list[list[int]] = []
    for path in sorted((folder / "data").glob("train-*.parquet")):
        rows += pq.read_table(path, columns=["input_ids"]).column("input_ids").to_pylist()
    return rows


def selection_tokens(folder: Path) -> np.ndarray:
    return np.concatenate([np.asarray(r, dtype=np.int64) for r in selection_rows(folder)])


@pytest.fixture(scope="session")
def selection(tmp_path_factory) -> Path:
    return build_selection(tmp_path_factory.mktemp("export-run"))


@pytest.fixture
def selection_copy(selection, tmp_path) -> Path:
    """A private copy of the selection folder (its manifest still names the run's tokenizer)."""
    return Path(shutil.copytree(selection, tmp_path / "selection"))
