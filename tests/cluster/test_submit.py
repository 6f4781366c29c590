"""End to end on a real Ray head (127.0.0.1): submit the demo pipeline, reduced to seconds,
through the Ray Jobs API, follow it to the end, and check the selection it wrote."""

from __future__ import annotations

import gzip
import io
import json
import sys
from pathlib import Path

import pyarrow.parquet as pq
import pytest

from colorfilter import jobs

REPO = Path(__file__).resolve().parents[2]
SAMPLE = REPO / "data" / "sample"

pytestmark = [
    pytest.mark.slow,
    pytest.mark.skipif(not (SAMPLE / "tokenizer").is_dir(), reason="bundled sample missing"),
]


def _read_jsonl(path: Path) -> list[str]:
    if path.suffix == ".zst":
        import zstandard

        with zstandard.ZstdDecompressor().stream_reader(path.open("rb")) as reader:
            return io.TextIOWrapper(reader, encoding="utf-8").read().splitlines()
    with gzip.open(path, "rt", encoding="utf-8") as handle:
        return handle.read().splitlines()


def _slice(source: Path, count: int, target: Path) -> Path:
    """The first `count` records of a bundled file: the same real text, seconds to process."""
    with gzip.open(target, "wt", encoding="utf-8") as handle:
        handle.write("\n".join(_read_jsonl(source)[:count]) + "\n")
    return target


def reduced_demo_overrides(tmp_path: Path) -> list[str]:
    """configs/demo.yaml cut down: 300 pool documents, micro models, a few steps, seq 64."""
    pool = _slice(
        SAMPLE / "pool" / "c4-train.00000-of-00004.json.gz", 300, tmp_path / "pool.jsonl.gz"
    )
    train = _slice(SAMPLE / "target" / "train.jsonl.zst", 30, tmp_path / "train.jsonl.gz")
    held_out = _slice(SAMPLE / "target" / "eval.jsonl.zst", 10, tmp_path / "eval.jsonl.gz")
    return [
        f"output_dir={tmp_path / 'out'}",  # absolute: the cluster is this machine
        "seq_len=64",
        f"data.pool=[{pool}]",
        f"data.downstream_train=[{train}]",
        f"data.downstream_eval=[{held_out}]",
        "prior.preset=micro",
        "prior.token_budget=20000",
        "prior.max_steps=5",
        "prior.progress=false",
        "conditional.max_steps=5",
        "conditional.progress=false",
        "selection.methods=[color]",
        "selection.tau=[16]",
    ]


def test_submit_reduced_demo_pipeline_and_check_the_selection(ray_head, tmp_path):
    logs = io.StringIO()
    request = jobs.JobRequest(
        REPO / "configs" / "demo.yaml", ray_head, tuple(reduced_demo_overrides(tmp_path)),
        working_dir=REPO, env_vars={"TOKENIZERS_PARALLELISM": "false"},
    )  # fmt: skip
    job_id = jobs.submit(request, out=logs, echo=lambda line: print(line, file=sys.stderr))
    assert jobs.job_status(ray_head, job_id)["status"] == "SUCCEEDED"
    assert "== select" in logs.getvalue() and "done: outputs in" in logs.getvalue()
    assert jobs.job_logs(ray_head, job_id).strip() == logs.getvalue().strip()

    selected = tmp_path / "out" / "selected" / "color-tau16"
    manifest = json.loads((selected / "manifest.json").read_text())
    counts = manifest["counts"]
    pool_chunks = sum(
        pq.ParquetFile(p).metadata.num_rows
        for p in (tmp_path / "out/tokens/pool").glob("*.parquet")
    )
    assert manifest["complete"] and counts["candidates"] == pool_chunks > 0
    assert counts["selected"] + counts["not_selected"] == counts["candidates"]
    assert counts["selected"] == counts["candidates"] // 16
    rows = sum(pq.ParquetFile(p).metadata.num_rows for p in (selected / "data").glob("*.parquet"))
    assert rows == counts["selected"]
    # the job read the tokenizer through the config's relative path, from its working dir copy
    assert (tmp_path / "out" / "tokenizer" / "tokenizer.json").is_file()


def test_a_failing_stage_fails_the_job_with_its_message(ray_head, tmp_path):
    logs = io.StringIO()
    with pytest.raises(jobs.JobFailedError, match="FAILED") as caught:
        request = jobs.JobRequest(
            REPO / "configs" / "demo.yaml", ray_head, (f"output_dir={tmp_path / 'empty'}",),
            stage="score", working_dir=REPO, python=sys.executable,
        )  # fmt: skip
        jobs.submit(request, out=logs, echo=lambda _: None)
    assert caught.value.exit_code == 1
    assert "error:" in logs.getvalue() and "run `colorfilter" in logs.getvalue()


def test_status_logs_and_stop_of_a_job(ray_head, tmp_path):
    request = jobs.JobRequest(
        REPO / "configs" / "demo.yaml", ray_head, tuple(reduced_demo_overrides(tmp_path)),
        working_dir=REPO,
    )  # fmt: skip
    job_id = jobs.submit(request, no_wait=True, echo=lambda _: None)
    assert jobs.job_status(ray_head, job_id)["status"] in ("PENDING", "RUNNING")
    assert jobs.stop_job(ray_head, job_id) == "STOPPED"
    assert isinstance(jobs.job_logs(ray_head, job_id), str)
    assert jobs.follow_logs(ray_head, job_id, out=io.StringIO()) == "STOPPED"
    with pytest.raises(jobs.JobNotFoundError):
        jobs.job_status(ray_head, "raysubmit_doesnotexist")
