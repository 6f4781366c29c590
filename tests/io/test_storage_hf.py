"""hf:// URLs (hub datasets and model repos) through HfFileSystem, against the local fake hub."""

from __future__ import annotations

import gzip

import pyarrow as pa
import pyarrow.parquet as pq
import pytest

from colorfilter.errors import ConfigError
from colorfilter.io import storage
from colorfilter.io.cache import fetch
from colorfilter.io.preflight import check_readable
from tests.hub_server import FakeHub


@pytest.fixture
def hub(monkeypatch):
    with FakeHub() as server:
        monkeypatch.setenv("HF_ENDPOINT", server.url)
        monkeypatch.setenv("HF_TOKEN", "hf_fake_token_for_tests_0123456789")
        parquet = pa.BufferOutputStream()
        pq.write_table(pa.table({"text": ["a", "b", "c"]}), parquet)
        server.add_files("org/pool", {
            "README.md": b"# pool",
            "data/c4-train.00001.json.gz": gzip.compress(b'{"text": "one"}\n'),
            "data/c4-train.00000.json.gz": gzip.compress(b'{"text": "zero"}\n'),
            "data/extra/more.json.gz": gzip.compress(b'{"text": "deep"}\n'),
            "tables/t.parquet": parquet.getvalue().to_pybytes(),
        })
        server.add_files("org/tiny-tokenizer", {
            "tokenizer.json": b'{"version": "1.0"}', "special/map.json": b"{}"}, repo_type="model")
        yield server
        assert server.unknown == []  # every call the client made is one the fake hub serves


def test_glob_read_and_size_on_a_hub_dataset(hub):
    matches = storage.glob("hf://datasets/org/pool/data/*.json.gz")
    assert [m.url for m in matches] == ["hf://datasets/org/pool/data/c4-train.00000.json.gz",
                                        "hf://datasets/org/pool/data/c4-train.00001.json.gz"]
    assert gzip.decompress(storage.read_bytes(matches[0])) == b'{"text": "zero"}\n'
    assert storage.size(matches[1]) == len(gzip.compress(b'{"text": "one"}\n'))
    deep = storage.glob("hf://datasets/org/pool/**/*.json.gz")
    assert "hf://datasets/org/pool/data/extra/more.json.gz" in [m.url for m in deep]
    fs, path = storage.parquet_filesystem("hf://datasets/org/pool/tables/t.parquet")
    assert pq.read_table(path, filesystem=fs).column("text").to_pylist() == ["a", "b", "c"]


def test_preflight_on_the_hub(hub):
    check_readable("hf://datasets/org/pool/data/*.json.gz", "data.pool")
    with pytest.raises(ConfigError) as info:
        check_readable("hf://datasets/org/missing/x.json.gz", "data.pool")
    assert "data.pool" in str(info.value) and "hf://datasets/org/missing" in str(info.value)
    assert "does not exist" in str(info.value)
    with pytest.raises(ConfigError, match="matches no files"):
        check_readable("hf://datasets/org/pool/data/*.parquet", "data.pool")


def test_model_repo_is_cached_once(hub, tmp_path):
    path, fetched = fetch("hf://org/tiny-tokenizer", cache_dir=tmp_path)
    assert fetched and (path / "tokenizer.json").read_bytes() == b'{"version": "1.0"}'
    assert (path / "special" / "map.json").read_bytes() == b"{}"
    assert fetch("hf://org/tiny-tokenizer", cache_dir=tmp_path) == (path, False)
