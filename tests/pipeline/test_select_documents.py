"""The select stage in document mode: `-docs` folders hold whole documents and add up."""

from __future__ import annotations

from dataclasses import replace

import numpy as np

from colorfilter.io.atomic import read_json
from colorfilter.io.token_shards import list_shards
from colorfilter.pipeline.stages import run_stage
from colorfilter.selection.documents import expand_to_documents
from tests.pipeline.test_resume import scored_run  # noqa: F401  (a fixture)


def test_document_mode_writes_widened_selections(scored_run):  # noqa: F811
    run_stage("select", scored_run)
    documents = replace(scored_run, selection=replace(scored_run.selection, documents=True))
    summaries = run_stage("select", documents)
    selected = scored_run.output_path / "selected"
    token_paths = list_shards(scored_run.output_path / "tokens" / "pool")
    assert sorted(summaries) == [
        "color-tau4-docs",
        "color-tau8-docs",
        "random-tau4-docs",
        "random-tau8-docs",
    ]
    for name in ("color-tau4", "random-tau8"):
        chunks = np.load(selected / name / "indices.npy")
        widened = np.sort(np.load(selected / f"{name}-docs" / "indices.npy"))
        assert np.array_equal(widened, expand_to_documents(chunks, token_paths))
        assert len(widened) > len(chunks) and np.isin(chunks, widened).all()
        counts = read_json(selected / f"{name}-docs" / "manifest.json")["counts"]
        assert counts["selected"] == len(widened)
        assert counts["candidates"] == (
            counts["selected"] + counts["not_selected"] + counts["skipped_total"]
        )
