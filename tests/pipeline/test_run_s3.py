"""The issue's done-when, reduced: `colorfilter run` of the demo config with pool, targets and
output_dir on a real S3-compatible server selects what the same run on local disk selects, and
writes nothing to local disk but the node cache.

Reduced: micro models trained for a few steps and a slice of the bundled sample, so the two
whole-pipeline runs (subprocesses, as a user types them) take about a minute on 2 cores.
"""

from __future__ import annotations

import io
import os
import subprocess
import sys
from pathlib import Path

import numpy as np
import pyarrow as pa

from colorfilter.io import storage
from colorfilter.io.transfer import read_parquet, upload_folder
from tests.s3_server import s3_bucket, s3_server  # noqa: F401 - fixtures

REPO = Path(__file__).resolve().parents[2]
SAMPLE = REPO / "data" / "sample"
REDUCED = [
    "seq_len=64", "executor=local", "prepare.rows_per_shard=512",
    "prior.preset=micro", "prior.token_budget=20000", "prior.batch_size=8",
    "prior.checkpoint_every=10", "conditional.max_steps=6", "conditional.batch_size=8",
    "conditional.checkpoint_every=4", "score.batch_size=32", "selection.tau=[8]",
    "selection.methods=[color,dsir]",
]  # fmt: skip


def run_cli(cwd: Path, cache: Path, *args: str) -> subprocess.CompletedProcess:
    env = {**os.environ, "COLORFILTER_CACHE": str(cache), "PYTHONPATH": str(REPO)}
    command = [sys.executable, "-m", "colorfilter", "run", str(REPO / "configs" / "demo.yaml"),
               *[a for s in REDUCED for a in ("--set", s)], *args]  # fmt: skip
    result = subprocess.run(command, cwd=cwd, env=env, capture_output=True, text=True,
                            timeout=600)  # fmt: skip
    assert result.returncode == 0, result.stderr[-3000:]
    return result


def sets(**values: str) -> list[str]:
    return [a for key, value in values.items() for a in ("--set", f"{key}={value}")]


def inputs_at(pool: str, books: str, tokenizer: str) -> dict[str, str]:
    """The demo's input keys, pointing at copies of the bundled sample under these roots."""
    return {
        "data.pool": f"[{pool}/*.json.gz,{pool}/*.json.zst]",
        "data.downstream_train": f"[{books}/train.jsonl.zst]",
        "data.downstream_eval": f"[{books}/eval.jsonl.zst]",
        "tokenizer": tokenizer,
    }


def upload_sample(bucket) -> dict[str, str]:
    """The demo's inputs (and tokenizer) copied to the bucket."""
    for name, folder in (("c4", "pool"), ("books", "target"), ("tokenizer", "tokenizer")):
        upload_folder(SAMPLE / folder, bucket.join(name))
    return inputs_at(*(bucket.join(name).url for name in ("c4", "books", "tokenizer")))


def test_demo_run_on_s3_selects_what_the_local_run_selects(tmp_path, s3_bucket):  # noqa: F811
    local_out = tmp_path / "local-out"
    local_inputs = inputs_at(str(SAMPLE / "pool"), str(SAMPLE / "target"), str(SAMPLE / "tokenizer"))
    run_cli(tmp_path, tmp_path / "cache-local", *sets(output_dir=str(local_out), **local_inputs))

    cwd, cache = tmp_path / "empty-cwd", tmp_path / "cache-s3"
    cwd.mkdir()
    out = s3_bucket.join("runs", "demo")
    run_cli(cwd, cache, *sets(output_dir=out.url, **upload_sample(s3_bucket)))

    assert not any(cwd.iterdir()), "a stage wrote to the working directory"
    for name in ("color-tau8", "dsir-tau8"):
        selected = out.join("selected", name)
        remote = np.load(io.BytesIO(storage.read_bytes(selected.join("indices.npy"))))
        local = np.load(local_out / "selected" / name / "indices.npy")
        assert np.array_equal(remote, local), name
        shards = sorted(storage.glob(selected.join("*.parquet")), key=lambda loc: loc.name)
        assert shards, name
        local_table = pa.concat_tables(
            read_parquet(p) for p in sorted((local_out / "selected" / name).glob("*.parquet"))
        )
        assert pa.concat_tables(read_parquet(s) for s in shards).equals(local_table)
    assert storage.exists(out.join("config.yaml"))
