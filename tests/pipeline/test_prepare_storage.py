"""prepare with its inputs on a bucket (a real S3 server on 127.0.0.1) or the hub (fake hub).

The token shards must equal those prepared from local disk, row for row (seq_ids included),
except `source_file`, which names the input's URL. Bad bucket inputs stop before any work.
"""

from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path

import pyarrow as pa
import pyarrow.parquet as pq
import pytest

from colorfilter.errors import ConfigError
from colorfilter.io.token_shards import list_shards
from colorfilter.pipeline.stages import run_stage
from tests.hub_server import FakeHub
from tests.pipeline.test_prepare import make_config

SPLITS = ("pool", "downstream_train", "downstream_eval")


@pytest.fixture
def inputs_with_parquet(c4_inputs, tmp_path) -> dict:
    """c4_inputs plus a parquet pool file, so both readers are covered."""
    path = tmp_path / "pool" / "extra.parquet"
    pq.write_table(pa.Table.from_pylist(c4_inputs["records"][60:80]), path)
    return dict(c4_inputs, pool=[*c4_inputs["pool"], path])


def upload(s3_server, bucket: str, inputs: dict, root: Path) -> dict[str, str]:
    """Copy every input file to the bucket under the same relative path; {local: url}."""
    urls = {}
    for split in SPLITS:
        for path in inputs[split]:
            rel = Path(path).relative_to(root).as_posix()
            s3_server.fs.put_file(str(path), f"{bucket}/{rel}")
            urls[str(Path(path).resolve())] = f"s3://{bucket}/{rel}"
    return urls


def tables(out: Path) -> dict[str, dict[str, pa.Table]]:
    return {s: {p.name: pq.read_table(p) for p in list_shards(out / "tokens" / s)} for s in SPLITS}


def assert_same_shards(local: Path, remote: Path, urls: dict[str, str]) -> None:
    expected, got = tables(local), tables(remote)
    for split in SPLITS:
        assert sorted(expected[split]) == sorted(got[split]) and expected[split]
        for name, table in expected[split].items():
            other = got[split][name]
            assert other.drop(["source_file"]).equals(table.drop(["source_file"])), name
            renamed = [urls[f] for f in table.column("source_file").to_pylist()]
            assert other.column("source_file").to_pylist() == renamed


def bucket_config(tmp_path, tokenizer_dir, inputs, bucket: str, out: str, **extra):
    remote = {
        "pool": [f"s3://{bucket}/pool/c4-train.*", f"s3://{bucket}/pool/*.parquet"],
        "downstream_train": [f"s3://{bucket}/target/train.jsonl.zst"],
        "downstream_eval": [f"s3://{bucket}/target/eval.jsonl.gz"],
    }
    return make_config(tmp_path, tokenizer_dir, remote, out=out, **extra)


def test_prepare_from_a_bucket_equals_local_disk(
    tmp_path, tokenizer_dir, inputs_with_parquet, s3_server, s3_bucket, ray_session
):
    local = make_config(tmp_path, tokenizer_dir, inputs_with_parquet, out="local")
    run_stage("prepare", local)
    urls = upload(s3_server, s3_bucket.bucket, inputs_with_parquet, tmp_path)
    for executor, extra in [
        ("local", {}),
        ("ray", {"prepare.num_workers": 2, "prepare.worker_cpus": 0.5}),
    ]:
        config = bucket_config(tmp_path, tokenizer_dir, inputs_with_parquet, s3_bucket.bucket,
                               out=f"s3-{executor}", executor=executor, **extra)
        stats = run_stage("prepare", config)
        assert stats["pool"]["files"] == 4 and stats["pool"]["skipped"] == {}
        assert_same_shards(local.output_path, config.output_path, urls)
    rerun = run_stage("prepare", config)  # the records name the URLs: a rerun redoes nothing
    assert rerun["pool"] == stats["pool"]


@pytest.mark.parametrize("pool, expected", [
    ("s3://{bucket}/pool/missing.json.gz", "no such file"),
    ("s3://{bucket}/pool/*.zst", "matches no files"),
    ("s3://no-such-bucket-here/pool/*.json.gz", "does not exist"),
    ("ftp://{bucket}/pool/a.json.gz", "ftp:// is not supported"),  # refused at load
])
def test_bad_bucket_inputs_stop_before_any_work(
    tmp_path, tokenizer_dir, c4_inputs, s3_bucket, pool, expected
):
    url = pool.format(bucket=s3_bucket.bucket)
    with pytest.raises(ConfigError) as info:
        config = make_config(tmp_path, tokenizer_dir, dict(c4_inputs, pool=[url]))
        run_stage("prepare", config)
    message = str(info.value)
    assert "data.pool" in message and url.split("*")[0] in message and expected in message
    assert "\n" not in message
    assert not (tmp_path / "out" / "tokenizer").exists()  # no work was started


def test_cli_names_a_missing_bucket_in_one_line(tmp_path, tokenizer_dir, c4_inputs, s3_server):
    from colorfilter.config import save_resolved

    url = "s3://absent-bucket/c4/*.json.gz"
    config = make_config(tmp_path, tokenizer_dir, dict(c4_inputs, pool=[url]))
    saved = save_resolved(config)
    proc = subprocess.run([sys.executable, "-m", "colorfilter", "prepare", str(saved)],
                          capture_output=True, text=True, timeout=120, env=dict(os.environ))
    assert proc.returncode == 2, proc.stderr
    lines = [line for line in proc.stderr.splitlines() if line.strip()]
    assert len(lines) == 1 and "data.pool" in lines[0] and "s3://absent-bucket" in lines[0]
    assert "Traceback" not in proc.stderr


def test_prepare_from_hub_file_urls(tmp_path, tokenizer_dir, c4_inputs, monkeypatch):
    root = tmp_path
    with FakeHub() as hub:
        monkeypatch.setenv("HF_ENDPOINT", hub.url)
        files = {Path(p).relative_to(root).as_posix(): Path(p).read_bytes()
                 for s in SPLITS for p in c4_inputs[s]}
        hub.add_files("org/c4-mini", files)
        local = make_config(tmp_path, tokenizer_dir, c4_inputs, out="local")
        run_stage("prepare", local)
        base = "hf://datasets/org/c4-mini"
        remote = {
            "pool": [f"{base}/pool/c4-train.*"],
            "downstream_train": [f"{base}/target/train.jsonl.zst"],
            "downstream_eval": [f"{base}/target/eval.jsonl.gz"],
        }
        config = make_config(tmp_path, tokenizer_dir, remote, out="hub")
        run_stage("prepare", config)
        assert hub.unknown == []
    urls = {str(Path(p).resolve()): f"{base}/{rel}" for rel, p in
            ((Path(p).relative_to(root).as_posix(), p) for s in SPLITS for p in c4_inputs[s])}
    assert_same_shards(local.output_path, config.output_path, urls)


def test_endpoint_from_the_storage_section(
    tmp_path, tokenizer_dir, c4_inputs, s3_server, s3_bucket, monkeypatch
):
    """storage.endpoint_url reaches the listing and the readers when AWS_ENDPOINT_URL is unset."""
    upload(s3_server, s3_bucket.bucket, c4_inputs, tmp_path)
    monkeypatch.delenv("AWS_ENDPOINT_URL")
    config = bucket_config(tmp_path, tokenizer_dir, c4_inputs, s3_bucket.bucket, out="cfg",
                           **{"storage.endpoint_url": s3_server.endpoint})
    config.data.pool = config.data.pool[:1]  # the .json.gz / .zst / .jsonl files
    stats = run_stage("prepare", config)
    assert stats["pool"]["files"] == 3 and stats["pool"]["documents"] == 80
