"""Fixtures for the dataset writer tests: one synthetic pool per session (read-only)."""

from __future__ import annotations

import pytest

from tests.dataset import synthetic


@pytest.fixture(scope="session")
def pool(tmp_path_factory) -> synthetic.Pool:
    """A 3-file pool of ~150 chunks with scores, one unscored row and one NaN score."""
    return synthetic.build_pool(tmp_path_factory.mktemp("pool"))
