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
    "prior.preset=micro", "prior.token_budget=10000", "prior.batch_size=8",
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


def small_sample(root: Path, docs: int = 150) -> Path:
    """The first documents of the bundled sample, in its formats (.json.gz, .json.zst, .jsonl.zst)
    and folder shape, so the two runs stay short."""
    import gzip

    import zstandard

    def head(path: Path) -> bytes:
        opener = gzip.open if path.suffix == ".gz" else zstandard.open
        with opener(path, "rb") as handle:
            return b"".join(handle.read().splitlines(keepends=True)[:docs])

    for name in ("pool/c4-train.00000-of-00004.json.gz", "pool/c4-train.00002-of-00004.json.zst",
                 "target/train.jsonl.zst", "target/eval.jsonl.zst"):  # fmt: skip
        (root / name).parent.mkdir(parents=True, exist_ok=True)
        data = head(SAMPLE / name)
        packed = gzip.compress(data) if name.endswith(".gz") else zstandard.compress(data)
        (root / name).write_bytes(packed)
    return root


def inputs_at(root: str, tokenizer: str) -> dict[str, str]:
    """The demo's input keys, pointing at the sample's folders under `root` (a path or URL)."""
    return {
        "data.pool": f"[{root}/pool/*.json.gz,{root}/pool/*.json.zst]",
        "data.downstream_train": f"[{root}/target/train.jsonl.zst]",
        "data.downstream_eval": f"[{root}/target/eval.jsonl.zst]",
        "tokenizer": tokenizer,
    }


def test_demo_run_on_s3_selects_what_the_local_run_selects(tmp_path, s3_bucket):  # noqa: F811
    sample = small_sample(tmp_path / "sample")
    local_out = tmp_path / "local-out"
    local_inputs = inputs_at(str(sample), str(SAMPLE / "tokenizer"))
    run_cli(tmp_path, tmp_path / "cache-local", *sets(output_dir=str(local_out), **local_inputs))
    upload_folder(sample, s3_bucket.join("inputs"))
    upload_folder(SAMPLE / "tokenizer", s3_bucket.join("tokenizer"))
    remote_inputs = inputs_at(s3_bucket.join("inputs").url, s3_bucket.join("tokenizer").url)

    cwd, cache = tmp_path / "empty-cwd", tmp_path / "cache-s3"
    cwd.mkdir()
    out = s3_bucket.join("runs", "demo")
    run_cli(cwd, cache, *sets(output_dir=out.url, **remote_inputs))

    assert not any(cwd.iterdir()), "a stage wrote to the working directory"
    for name in ("color-tau8", "dsir-tau8"):
        selected = out.join("selected", name)
        remote = np.load(io.BytesIO(storage.read_bytes(selected.join("indices.npy"))))
        local = np.load(local_out / "selected" / name / "indices.npy")
        assert np.array_equal(remote, local), name
        shards = sorted(storage.glob(selected.join("data", "*.parquet")), key=lambda loc: loc.name)
        assert shards, name
        local_data = local_out / "selected" / name / "data"
        local_shards = sorted(local_data.glob("*.parquet"))
        local_table = pa.concat_tables(read_parquet(p) for p in local_shards)
        remote_table = pa.concat_tables(read_parquet(s) for s in shards)
        sources = set(remote_table.column("source_file").to_pylist())
        assert all(url.startswith(f"{s3_bucket.url}/inputs/pool/") for url in sources), sources
        same = [c for c in local_table.column_names if c != "source_file"]  # paths vs URLs
        assert remote_table.select(same).equals(local_table.select(same)), name
    assert storage.exists(out.join("config.yaml"))
