"""The datatrove step inside a real datatrove pipeline: JsonlReader over the bundled sample's
C4-shaped pool files, LocalPipelineExecutor, JsonlWriter for kept and excluded documents."""

from __future__ import annotations

import gzip
import json
from pathlib import Path

import numpy as np
import pytest

pytest.importorskip("datatrove")

from datatrove.executor import LocalPipelineExecutor  # noqa: E402
from datatrove.pipeline.readers import JsonlReader  # noqa: E402
from datatrove.pipeline.writers import JsonlWriter  # noqa: E402

import colorfilter as cf  # noqa: E402
from colorfilter.integrations import datatrove as step  # noqa: E402

POOL = Path(__file__).resolve().parents[2] / "data" / "sample" / "pool"
LIMIT = 12  # documents per task: one .json.gz file per task, two tasks


def read_documents(folder: Path) -> list[dict]:
    docs = []
    for path in sorted(folder.rglob("*.jsonl*")):
        opener = gzip.open if path.name.endswith(".gz") else open
        with opener(path, "rt") as handle:
            docs += [json.loads(line) for line in handle]
    return docs


def pool_texts() -> dict[str, str]:
    """The first LIMIT documents of each .json.gz pool file, by datatrove's default id."""
    texts = {}
    for path in sorted(POOL.glob("*.json.gz")):
        with gzip.open(path, "rt") as handle:
            for index, line in zip(range(LIMIT), handle):
                texts[f"{path.name}/{index}"] = json.loads(line)["text"]
    return texts


def pipeline_run(tmp_path: Path, run_dir: Path, threshold: float | None) -> None:
    LocalPipelineExecutor(
        pipeline=[
            JsonlReader(str(POOL), glob_pattern="*.json.gz", limit=LIMIT),
            step.ColorFilterScoreFilter(
                str(run_dir), threshold=threshold, docs_per_batch=8,
                scorer_options={"torch_threads": 1},
                exclusion_writer=JsonlWriter(str(tmp_path / "excluded")),
            ),
            JsonlWriter(str(tmp_path / "kept")),
        ],
        tasks=2, workers=1, logging_dir=str(tmp_path / "logs"),
    ).run()  # fmt: skip


@pytest.fixture(scope="module")
def expected(run_dir) -> dict[str, float]:
    texts = pool_texts()
    scores = cf.load_scorer(run_dir, torch_threads=1).score_texts(list(texts.values()))
    return dict(zip(texts, scores.score.tolist()))


def test_filter_keeps_documents_at_or_above_the_threshold(run_dir, tmp_path, expected, monkeypatch):
    import colorfilter.api

    loads = []
    load_scorer = colorfilter.api.load_scorer
    monkeypatch.setattr(colorfilter.api, "load_scorer", lambda *a, **k: loads.append(a) or
                        load_scorer(*a, **k))  # fmt: skip
    step._LOADED.clear()
    threshold = float(np.median(list(expected.values())))
    pipeline_run(tmp_path, run_dir, threshold)
    assert len(loads) == 1  # two tasks in this process, one load: not per document or task

    kept, excluded = read_documents(tmp_path / "kept"), read_documents(tmp_path / "excluded")
    assert len(kept) + len(excluded) == len(expected) == 2 * LIMIT
    assert kept and excluded
    for doc in kept + excluded:
        meta = doc["metadata"]
        assert abs(meta["colorfilter_score"] - expected[doc["id"]]) <= 1e-5
        assert meta["colorfilter_n_tokens"] > 0 and meta["source"]  # C4 fields kept too
        assert meta["colorfilter_score"] == pytest.approx(
            meta["colorfilter_prior_loss"] - meta["colorfilter_cond_loss"], abs=1e-5
        )
    assert {d["id"] for d in kept} == {i for i, s in expected.items() if s >= threshold}
    assert {d["metadata"]["filter_reason"] for d in excluded} == {step.BELOW}
    stats = json.loads((tmp_path / "logs" / "stats.json").read_text())
    ours = next(s for s in stats if "CoLoR" in s["name"])
    assert ours["stats"]["dropped"] == len(excluded)


def test_annotate_only_keeps_every_document(run_dir, tmp_path, expected):
    pipeline_run(tmp_path, run_dir, threshold=None)
    kept = read_documents(tmp_path / "kept")
    assert not (tmp_path / "excluded").exists() or not read_documents(tmp_path / "excluded")
    assert sorted(d["id"] for d in kept) == sorted(expected)
    got = np.array([d["metadata"]["colorfilter_score"] for d in kept])
    assert np.max(np.abs(got - np.array([expected[d["id"]] for d in kept]))) <= 1e-5


def test_empty_text_is_dropped_when_filtering_and_annotated_as_none(run_dir):
    from datatrove.data import Document

    keep_all = step.ColorFilterScoreFilter(str(run_dir))
    docs = [Document(text="", id="empty"), Document(text="Some words here.", id="words")]
    assert keep_all.filter_batch(docs) == [True, True]
    assert docs[0].metadata["colorfilter_score"] is None
    assert isinstance(docs[1].metadata["colorfilter_score"], float)
    strict = step.ColorFilterScoreFilter(str(run_dir), threshold=-1e9)
    assert strict.filter_batch(docs) == [(False, step.UNSCORED), True]


@pytest.mark.slow
def test_worker_processes_each_load_the_pair(run_dir, tmp_path, expected):
    """workers=2: the step is pickled into two forkserver processes, each loads its scorer."""
    LocalPipelineExecutor(
        pipeline=[
            JsonlReader(str(POOL), glob_pattern="*.json.gz", limit=LIMIT),
            step.ColorFilterScoreFilter(str(run_dir), scorer_options={"torch_threads": 1}),
            JsonlWriter(str(tmp_path / "kept")),
        ],
        tasks=2, workers=2, logging_dir=str(tmp_path / "logs"),
    ).run()  # fmt: skip
    kept = read_documents(tmp_path / "kept")
    assert sorted(d["id"] for d in kept) == sorted(expected)
    got = np.array([d["metadata"]["colorfilter_score"] for d in kept])
    assert np.max(np.abs(got - np.array([expected[d["id"]] for d in kept]))) <= 1e-5
