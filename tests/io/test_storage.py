"""The storage layer on local disk and on a real S3 protocol server (moto on 127.0.0.1)."""

from __future__ import annotations

import os
import pickle

import pyarrow as pa
import pyarrow.parquet as pq
import pytest

from colorfilter.errors import ConfigError
from colorfilter.io import storage
from colorfilter.io.config import StorageConfig
from colorfilter.io.storage import Location


@pytest.fixture(params=["local", "s3"])
def root(request, tmp_path) -> Location:
    """The same tests on both backends: a local folder, and a fresh bucket."""
    if request.param == "local":
        return Location.parse(tmp_path / "root")
    return request.getfixturevalue("s3_bucket").join("root")


def test_parse_spellings_and_parts(tmp_path):
    assert Location.parse("s3a://bkt/a//b/").url == "s3://bkt/a/b"
    assert Location.parse("gcs://bkt/x").url == "gs://bkt/x"
    assert Location.parse(f"file://{tmp_path}/x").url == f"{tmp_path}/x"
    local = Location.parse(tmp_path / "a" / "b.txt")
    assert local.is_local and local.name == "b.txt" and local.parent.url == f"{tmp_path}/a"
    remote = Location.parse("s3://bkt/out").join("scores", "shard-00001.parquet")
    assert remote.url == "s3://bkt/out/scores/shard-00001.parquet"
    assert remote.bucket == "bkt" and remote.parent.name == "scores"
    assert remote.relative_to(Location.parse("s3://bkt/out")) == "scores/shard-00001.parquet"
    with pytest.raises(ValueError):
        remote.join("../escape")


def test_location_pickles_with_its_storage_config():
    loc = Location.parse("s3://bkt/x", StorageConfig(region="eu-west-1", anonymous=True))
    back = pickle.loads(pickle.dumps(loc))
    assert back == loc and back.storage.region == "eu-west-1" and back.storage.anonymous
    assert back.join("y").storage.anonymous  # children keep the config


@pytest.mark.parametrize("url", ["s4://bkt/x", "http://example.org/x", "azure://c/x"])
def test_unknown_scheme_is_one_config_error_naming_key_and_url(url):
    with pytest.raises(ConfigError) as info:
        Location.parse(url, key="data.pool")
    message = str(info.value)
    assert message.startswith("data.pool: ") and url in message and "\n" not in message


def test_url_with_credentials_is_refused_and_not_echoed():
    with pytest.raises(ConfigError) as info:
        Location.parse("s3://AKIDEXAMPLE:wJalrXUtnFEMIsecretKEY@bkt/x", key="output_dir")
    assert "wJalrXUtnFEMIsecretKEY" not in str(info.value)
    assert "output_dir" in str(info.value) and "environment" in str(info.value)


def test_read_write_exists_size_remove(root):
    target = root.join("a", "b.bin")
    assert not storage.exists(target)
    storage.write_bytes(target, b"hello world")
    assert storage.exists(target) and storage.size(target) == 11
    assert storage.read_bytes(target) == b"hello world"
    storage.write_json(root.join("r.json"), {"b": 1, "a": [1, 2]})
    assert storage.read_json(root.join("r.json")) == {"a": [1, 2], "b": 1}
    assert storage.read_json_object(root.join("missing.json")) is None
    storage.remove(target)
    storage.remove(target)  # missing is fine
    assert not storage.exists(target)
    with pytest.raises(FileNotFoundError):
        storage.size(target)


def test_failed_write_leaves_nothing(root):
    target = root.join("partial.bin")
    with pytest.raises(RuntimeError), storage.open_write(target) as handle:
        handle.write(b"x" * 1000)
        raise RuntimeError("killed mid-write")
    assert not storage.exists(target)
    assert storage.glob(root.join("*")) == []  # no temp file or torn object either


def test_failed_multipart_upload_is_aborted(s3_bucket):
    """A write that already uploaded parts (a big shard) and then fails leaves no object and
    no pending multipart upload behind."""
    target = s3_bucket.join("big.bin")
    part = 5 * 1024 * 1024  # the smallest S3 part
    with pytest.raises(RuntimeError), storage.open_write(target, block_size=part) as handle:
        handle.write(b"x" * (2 * part + 10))  # two parts are uploaded here
        assert handle.mpu is not None
        raise RuntimeError("killed mid-upload")
    assert not storage.exists(target)
    fs = storage.filesystem(target)
    assert fs.list_multipart_uploads(s3_bucket.bucket) == []


def test_glob_is_sorted_recursive_and_files_only(root):
    names = ["c4/c4-train.00002.json.gz", "c4/c4-train.00000.json.gz", "c4/sub/deep.json.gz",
             "c4/c4-train.00001.json.gz", "c4/readme.txt"]
    for name in names:
        storage.write_bytes(root.join(name), name.encode())
    top = storage.glob(root.join("c4", "*.json.gz"))
    assert [m.relative_to(root) for m in top] == [
        "c4/c4-train.00000.json.gz", "c4/c4-train.00001.json.gz", "c4/c4-train.00002.json.gz"]
    assert all(m.scheme == root.scheme for m in top)
    deep = storage.glob(root.join("c4", "**", "*.json.gz"))
    assert "c4/sub/deep.json.gz" in [m.relative_to(root) for m in deep]
    assert storage.glob(root.join("c4", "*.parquet")) == []
    assert "c4/sub" not in [m.relative_to(root) for m in storage.glob(root.join("c4", "*"))]
    found = storage.find(root.join("c4"))
    assert [f.location.relative_to(root) for f in found] == sorted(names)
    assert {f.location.name: f.size for f in found}["readme.txt"] == len("c4/readme.txt")


def test_stat_many_and_read_many(root):
    storage.write_bytes(root.join("d", "x"), b"12345")
    storage.write_bytes(root.join("d", "y"), b"1")
    storage.write_bytes(root.join("d", "sub", "f"), b"folder, not a file of d")
    few = [root.join("d", "x"), root.join("d", "y"), root.join("d", "z"), root.join("d", "sub"),
           root.join("nowhere", "w")]
    assert list(storage.stat_many(few).values()) == [5, 1, None, None, None]
    assert [c.name for c in storage.list_dir(root.join("d"))] == ["sub", "x", "y"]
    assert storage.list_dir(root.join("nowhere")) == []
    for i in range(storage.LIST_THRESHOLD + 2):  # many: answered from one listing
        storage.write_bytes(root.join("many", f"shard-{i:03d}"), b"s" * i)
    many = [root.join("many", f"shard-{i:03d}") for i in range(storage.LIST_THRESHOLD + 4)]
    expected = list(range(storage.LIST_THRESHOLD + 2)) + [None, None]
    assert list(storage.stat_many(many + [root.join("many")]).values()) == expected + [None]
    got = storage.read_many([root.join("d", "x"), root.join("d", "z"),
                             root.join("many", "shard-003")])
    assert list(got.values()) == [b"12345", None, b"sss"]


@pytest.mark.parametrize("native", [True, False])
def test_parquet_round_trip_through_pyarrow(root, native):
    loc = Location.parse(root.join("shards", "part-0.parquet").url,
                         StorageConfig(pyarrow_native_s3=native))
    table = pa.table({"seq_id": pa.array(range(1000), pa.int64()),
                      "score": pa.array([i / 7 for i in range(1000)], pa.float32())})
    storage.makedirs(loc.parent)
    fs, path = storage.parquet_filesystem(loc)
    pq.write_table(table, path, filesystem=fs, compression="zstd")
    assert storage.size(loc) > 0
    assert pq.read_table(path, filesystem=fs).equals(table)
    dataset = pq.ParquetDataset(storage.parquet_filesystem(loc.parent)[1],
                                filesystem=storage.parquet_filesystem(loc.parent)[0])
    assert dataset.read().num_rows == 1000


def test_storage_options_carry_no_secrets_and_work_for_other_fsspec_users(s3_bucket):
    import fsspec

    storage.write_bytes(s3_bucket.join("sel", "a.txt"), b"selected")
    options = storage.storage_options(s3_bucket)
    assert options["endpoint_url"] == os.environ["AWS_ENDPOINT_URL"]
    assert "testing" not in repr(options)  # the (dummy) keys stay in the environment
    with fsspec.open(s3_bucket.join("sel", "a.txt").url, "rb", **options) as handle:
        assert handle.read() == b"selected"
