"""Release from a selection folder on a bucket (real S3 server on 127.0.0.1) to the fake hub."""

from __future__ import annotations

import json
from pathlib import Path

import pytest

from colorfilter.release import ReleaseError, format_release, release
from tests.release.test_release import local_files, release_in_subprocess

PLANTED_SECRET = "planted/Secret+Key/9f8e7d6c5b4a39281706"


def copy_to_bucket(s3_server, folder: Path, prefix: str) -> None:
    for rel in local_files(folder):
        s3_server.fs.put_file(str(folder / rel), f"{prefix}/{rel}")


def test_release_from_a_bucket_uploads_exactly_the_manifest_files(
    selection_template, s3_server, s3_bucket, fake_hub, tmp_path
):
    selection = s3_bucket.join("cf-out/selected/color-tau4")
    copy_to_bucket(s3_server, selection_template, selection.path)
    s3_server.fs.pipe_file(selection.join("notes.txt").path, b"scratch")  # a stray object
    cache = tmp_path / "cache"
    result = release_in_subprocess(
        selection.url, fake_hub, tmp_path, "org/from-bucket", "public",
        AWS_SECRET_ACCESS_KEY=PLANTED_SECRET, COLORFILTER_CACHE=str(cache),
    )  # fmt: skip
    uploaded = fake_hub.files("org/from-bucket")
    assert uploaded == local_files(selection_template)  # byte for byte, manifest included
    assert result["folder"] == selection.url and result["not_uploaded"] == ["notes.txt"]
    assert fake_hub.unknown == []
    everything = b"".join(uploaded.values()) + json.dumps(result).encode()
    everything += format_release(result).encode()
    assert PLANTED_SECRET.encode() not in everything
    assert list(cache.iterdir()) == []  # the staged copy is gone


def test_bucket_folder_is_verified_before_any_upload(
    selection_template, s3_server, s3_bucket, fake_hub
):
    selection = s3_bucket.join("sel")
    copy_to_bucket(s3_server, selection_template, selection.path)
    dry = release(selection, "org/x", dry_run=True)
    assert {e["path"]: e["size"] for e in dry["files"]} == {
        rel: len(data) for rel, data in local_files(selection_template).items()
    }
    shard = next(r for r in local_files(selection_template) if r.endswith(".parquet"))
    data = bytearray(s3_server.fs.cat_file(selection.join(shard).path))
    data[len(data) // 2] ^= 0xFF  # same size: only the sha256 can tell
    s3_server.fs.pipe_file(selection.join(shard).path, bytes(data))
    with pytest.raises(ReleaseError, match="sha256 differs"):
        release(selection.url, "org/x", token="dummy", endpoint=fake_hub.url)
    s3_server.fs.pipe_file(selection.join(shard).path, bytes(data[:-1]))
    with pytest.raises(ReleaseError, match="size"):
        release(selection.url, "org/x", dry_run=True)
    s3_server.fs.rm_file(selection.join("manifest.json").path)
    with pytest.raises(ReleaseError, match="no complete manifest.json"):
        release(selection.url, "org/x", dry_run=True)
    assert ("dataset", "org/x") not in fake_hub.repos  # nothing was created, nothing uploaded
    assert not any(method == "POST" for method, _ in fake_hub.requests)


def test_datasets_reads_a_selection_on_a_bucket(selection_template, s3_server, s3_bucket, tmp_path):
    """The README's recipe: datasets.load_dataset on the bucket with the layer's storage options."""
    import datasets
    import pyarrow.parquet as pq

    from colorfilter.io.storage import storage_options

    selection = s3_bucket.join("sel")
    copy_to_bucket(s3_server, selection_template, selection.path)
    loaded = datasets.load_dataset(
        "parquet", data_files=f"{selection.url}/data/train-*.parquet", split="train",
        storage_options=storage_options(selection), cache_dir=str(tmp_path / "hf-cache"),
    )  # fmt: skip
    shards = sorted((selection_template / "data").glob("train-*.parquet"))
    expected = pq.read_table(shards)
    assert loaded.num_rows == expected.num_rows > 0
    assert loaded.data.table.select(expected.column_names).equals(expected)
