"""selection.documents in evaluate: target models train on the documents-widened selections,
exactly the ones `colorfilter select` writes (`<method>-tau<τ>-docs`); the label oracle is
widened the same way."""

from __future__ import annotations

import json
from dataclasses import replace

import numpy as np
import pyarrow as pa
import pyarrow.parquet as pq
import pytest

from colorfilter.evaluation.oracle import label_oracle
from colorfilter.evaluation.plan import selection_digest
from colorfilter.io.atomic import write_parquet_atomic
from colorfilter.io.token_shards import list_shards
from colorfilter.pipeline.evaluate import plan_evaluation, run_evaluate
from colorfilter.pipeline.select import run_select
from colorfilter.selection.documents import expand_to_documents
from tests.evaluation.test_evaluate import SEQ_LEN, _config, _run_dir


@pytest.fixture(scope="module")
def documents_run(tmp_path_factory):
    """The evaluate tests' run directory with documents of three chunks (every third chunk
    ends in the next document), configured for documents mode, and select run on it."""
    root = _run_dir(tmp_path_factory.mktemp("docs") / "run")
    for shard in list_shards(root / "tokens" / "pool"):
        table = pq.read_table(shard)
        row = np.arange(table.num_rows)
        for name, values in (("doc_first", row // 3), ("doc_last", (row + 1) // 3)):
            table = table.set_column(table.schema.get_field_index(name), name,
                                     pa.array(values, pa.int64()))  # fmt: skip
        write_parquet_atomic(shard, table)
    config = _config(root)
    config.evaluate.methods, config.evaluate.taus = ["color", "label_oracle"], [4]
    config.evaluate.random_multiples = []
    config.selection = replace(config.selection, methods=["color"], tau=[4.0], documents=True)
    run_select(config)
    return config


def _pool(config) -> dict[str, np.ndarray]:
    paths = list_shards(config.output_path / "tokens" / "pool")
    tokens = pq.read_table(paths, columns=["seq_id", "n_tokens", "source"])
    scores = pq.read_table(list_shards(config.output_path / "scores" / "pool"))
    assert tokens.column("seq_id").equals(scores.column("seq_id"))
    return {
        "paths": paths,
        "seq_id": tokens.column("seq_id").to_numpy(),
        "full": tokens.column("n_tokens").to_numpy() == SEQ_LEN,
        "book": np.array([s.startswith("book:") for s in tokens.column("source").to_pylist()]),
        "score": scores.column("score").to_numpy(),
    }


def test_runs_train_on_the_widened_selections(documents_run) -> None:
    config = documents_run
    pool = _pool(config)
    written = np.sort(np.load(config.output_path / "selected" / "color-tau4-docs" / "indices.npy"))
    plan = plan_evaluation(config)
    narrow = plan_evaluation(replace(config, selection=replace(config.selection, documents=False)))
    runs = {run.spec.method: run for run in plan.runs if run.spec.tau == 4.0}
    assert runs["color"].selection_digest == selection_digest(written)
    in_written = np.isin(pool["seq_id"], written)
    assert runs["color"].selected_full_chunks == int(pool["full"][in_written].sum())
    narrow_runs = {run.spec.method: run for run in narrow.runs if run.spec.tau == 4.0}
    assert narrow_runs["color"].selected_full_chunks < runs["color"].selected_full_chunks
    assert set(runs["color"].index.seq_id) <= set(written)  # it trains on widened chunks only
    chosen = label_oracle(pool["seq_id"], pool["score"], pool["book"], [4])[4.0]
    widened = expand_to_documents(chosen, pool["paths"])
    assert runs["label_oracle"].selection_digest == selection_digest(widened)
    assert narrow_runs["label_oracle"].selection_digest == selection_digest(chosen)
    assert plan.documents and not narrow.documents


def test_the_report_says_documents_mode(documents_run) -> None:
    config = documents_run
    run_evaluate(config)
    eval_dir = config.output_path / "eval"
    details = json.loads((eval_dir / "details.json").read_text())
    assert details["documents"] is True
    written = np.load(config.output_path / "selected" / "color-tau4-docs" / "indices.npy")
    pool = _pool(config)
    tokens = pq.read_table(pool["paths"], columns=["seq_id", "n_tokens"])
    selected = np.isin(tokens.column("seq_id").to_numpy(), written)
    assert details["composition"]["color-tau4"]["tokens"] == int(
        tokens.column("n_tokens").to_numpy()[selected].sum()
    )
    assert "widened to the whole source documents" in (eval_dir / "report.md").read_text()
