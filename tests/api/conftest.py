from __future__ import annotations

import pytest

from tests.api.run_folder import shared_run


@pytest.fixture(scope="session")
def run_dir(tmp_path_factory, tokenizer_dir):
    """A finished small run folder (prepare ... select), shared by the session."""
    return shared_run(tmp_path_factory, tokenizer_dir)
