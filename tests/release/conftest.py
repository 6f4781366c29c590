"""Fixtures for the release tests: a finished selection folder and a fake Hub on 127.0.0.1."""

from __future__ import annotations

import shutil
from pathlib import Path

import pytest

from tests.dataset import synthetic
from tests.hub_server import FakeHub


@pytest.fixture(scope="session")
def selection_template(tmp_path_factory) -> Path:
    """A complete selection folder written by the real writer (built once per session)."""
    from tests.dataset.synthetic import write_one

    root = tmp_path_factory.mktemp("release-pool")
    pool = synthetic.build_pool(root, n_files=2)
    out_dir = root / "selected" / "color-tau4"
    write_one(
        pool.top_k(4), pool.token_dir, pool.score_dir, pool.tokenizer_dir, out_dir,
        method="color", tau=4, rows_per_shard=8, seed=0, repo_id="org/selection",
    )  # fmt: skip
    return out_dir


@pytest.fixture
def folder(selection_template, tmp_path) -> Path:
    """A private copy of the template folder that a test may modify."""
    return Path(shutil.copytree(selection_template, tmp_path / "color-tau4"))


@pytest.fixture
def fake_hub():
    with FakeHub() as hub:
        yield hub
