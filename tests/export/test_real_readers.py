"""Exports read back by the trainers' own libraries (megatron-core's IndexedDataset, OLMo-core's
NumpyFSLDataset and memmap helper) give exactly the selection's tokens, in order.

The libraries run in one subprocess (tests/export/real_readers.py). `make install` installs them
(tests/export/requirements-readers.txt); where they are missing these tests are skipped, with
the reason shown, except under CI, where a missing reader fails. The same exports are checked
in every run by the layout readers of tests/export/test_export.py.
"""

from __future__ import annotations

import importlib.metadata
import json
import os
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest

from tests.export.conftest import selection_rows, selection_tokens
from tests.export.real_readers import READERS
from tests.export.test_export import SEQ_LEN, export

REPO = Path(__file__).resolve().parents[2]
CASES = [("megatron", ()), ("megatron", ("--vocab-size", "70000")), ("olmo", ()),
         ("olmo", ("--vocab-size", "70000"))]


def _installed(fmt: str) -> bool:
    """Whether the library's distribution is installed (checked without importing it)."""
    try:
        importlib.metadata.version(READERS[fmt])
    except importlib.metadata.PackageNotFoundError:
        return False
    return True


@pytest.fixture(scope="module")
def read_back(selection, tmp_path_factory) -> dict[tuple, dict]:
    """Every case exported, then read by the real libraries in one subprocess."""
    missing = [fmt for fmt in READERS if not _installed(fmt)]
    if missing:
        message = (f"the trainers' readers are not installed ({', '.join(missing)}): "
                   "pip install --no-deps -r tests/export/requirements-readers.txt")
        if os.environ.get("CI"):
            pytest.fail(message)
        pytest.skip(message)
    root = tmp_path_factory.mktemp("real-readers")
    jobs = []
    for i, (fmt, args) in enumerate(CASES):
        out = root / f"{fmt}-{i}"
        export(selection, out, fmt, *args)
        jobs.append({"format": fmt, "out": str(out), "result": str(root / f"{i}.npz")})
    (root / "jobs.json").write_text(json.dumps(jobs))
    env = {**os.environ, "PYTHONPATH": str(REPO)}
    command = [sys.executable, "-m", "tests.export.real_readers", str(root / "jobs.json")]
    run = subprocess.run(command, env=env, capture_output=True, text=True, timeout=300)
    assert run.returncode == 0, run.stderr[-3000:]
    return {(fmt, args): dict(np.load(job["result"])) for (fmt, args), job in zip(CASES, jobs)}


@pytest.mark.parametrize("args", [(), ("--vocab-size", "70000")], ids=["uint16", "wide"])
def test_megatron_indexed_dataset_reads_the_selection(selection, read_back, args):
    got = read_back[("megatron", args)]
    rows = selection_rows(selection)
    assert str(got["dtype"]) == ("uint16" if not args else "int32")
    assert np.array_equal(got["tokens"], selection_tokens(selection))
    assert got["sizes"].tolist() == [len(r) for r in rows]
    assert bool(got["documents_are_sequences"]) and got["documents_per_prefix"].sum() == len(rows)


@pytest.mark.parametrize("args", [(), ("--vocab-size", "70000")], ids=["uint16", "wide"])
def test_olmo_core_reads_the_selection(selection, read_back, args):
    got = read_back[("olmo", args)]
    assert str(got["dtype"]) == ("uint16" if not args else "uint32")
    assert np.array_equal(got["tokens"], selection_tokens(selection))
    full = [r for r in selection_rows(selection) if len(r) == SEQ_LEN]
    assert got["instances"].tolist() == full  # NumpyFSLDataset: one instance per full chunk
