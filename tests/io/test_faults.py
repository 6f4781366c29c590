"""Damage versus weather, judged on the real libraries' own errors: a corrupt file is fatal and
named, a network error stays transient, out of space is never retried, and a service that is
down or refuses is one line naming its endpoint."""

from __future__ import annotations

import errno
import gzip
import io
import json
import resource
import socket
from pathlib import Path

import numpy as np
import pyarrow as pa
import pyarrow.parquet as pq
import pytest

from colorfilter.errors import DamagedDataError, OutOfSpaceError
from colorfilter.io import faults, storage
from colorfilter.io.config import StorageConfig
from colorfilter.io.transfer import open_parquet, read_parquet, write_parquet
from colorfilter.layout import RunLayout
from colorfilter.pipeline.retry import FATAL, TRANSIENT, classify_error


def caught(call) -> BaseException:
    try:
        call()
    except Exception as exc:  # noqa: BLE001 - the error is what the test looks at
        return exc
    raise AssertionError("no error raised")


def closed_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return sock.getsockname()[1]


@pytest.fixture
def shard(tmp_path) -> Path:
    path = tmp_path / "scores" / "pool" / "00000-00001.parquet"
    path.parent.mkdir(parents=True)
    scores = np.random.default_rng(0).normal(size=500).astype(np.float32)
    table = pa.table({"seq_id": pa.array(range(500), pa.uint64()), "score": pa.array(scores)})
    pq.write_table(table, path, compression="zstd")
    return path


def test_truncated_and_corrupt_parquet_are_damage_named_by_the_reader(shard):
    data = shard.read_bytes()
    shard.write_bytes(data[: len(data) // 2])
    raw = caught(lambda: pq.read_table(shard))
    assert faults.damage_reason(raw) and classify_error(raw) == FATAL
    error = caught(lambda: read_parquet(shard))
    assert isinstance(error, DamagedDataError) and error.exit_code == 3
    assert str(error).startswith(f"score shard {shard} is damaged (")
    assert "rerun `colorfilter score`" in str(error)
    page = pq.ParquetFile(io.BytesIO(data)).metadata.row_group(0).column(1).data_page_offset
    corrupt = bytearray(data)  # bytes of the score column's first page, size unchanged
    corrupt[page + 30 : page + 100] = bytes(b ^ 0x5A for b in corrupt[page + 30 : page + 100])
    shard.write_bytes(bytes(corrupt))
    raw = caught(lambda: pq.read_table(shard))
    assert type(raw) is OSError and raw.errno is None  # what made it look transient before
    assert classify_error(raw) == FATAL

    def read_through():
        with open_parquet(shard) as parquet:
            parquet.read()

    assert isinstance(caught(read_through), DamagedDataError)


def test_errors_that_are_not_damage_pass_through_the_reader_unchanged(tmp_path):
    missing = tmp_path / "scores" / "pool" / "absent.parquet"
    assert isinstance(caught(lambda: read_parquet(missing)), FileNotFoundError)
    with pytest.raises(ZeroDivisionError):  # the block's own bug is not the file's damage
        with faults.reading(missing):
            raise ZeroDivisionError


def test_compression_json_safetensors_and_tokenizer_errors_are_damage(tmp_path):
    import safetensors.torch
    import torch
    import yaml
    import zstandard
    from tokenizers import Tokenizer

    truncated_gz = gzip.compress(b"x" * 10_000)[:30]
    errors = [
        caught(lambda: gzip.decompress(truncated_gz)),
        caught(lambda: zstandard.ZstdDecompressor().decompress(b"\x28\xb5\x2f\xfd" + b"\0" * 9)),
        caught(lambda: json.loads('{"rows": 4')),
        caught(lambda: yaml.safe_load("a: [1, 2\nb: {")),
    ]
    weights = tmp_path / "model.safetensors"
    safetensors.torch.save_file({"w": torch.ones(64, 64)}, weights)
    weights.write_bytes(weights.read_bytes()[:100])
    errors.append(caught(lambda: safetensors.torch.load_file(weights)))
    (tmp_path / "tokenizer.json").write_text('{"version": "1.0", "model": {')
    errors.append(caught(lambda: Tokenizer.from_file(str(tmp_path / "tokenizer.json"))))
    for error in errors:
        assert faults.damage_reason(error), error
        assert classify_error(error) == FATAL, error


def test_gzip_damage_was_an_oserror_and_is_now_fatal():
    error = caught(lambda: gzip.decompress(b"PK\x03\x04 a zip, not a gzip stream"))
    assert isinstance(error, gzip.BadGzipFile) and isinstance(error, OSError)
    assert classify_error(error) == FATAL


def test_network_errors_stay_transient_on_both_s3_clients(s3_bucket):
    """pyarrow reports S3 trouble as a bare OSError, like its decoding errors: told apart."""
    dead = StorageConfig(endpoint_url=f"http://127.0.0.1:{closed_port()}", retries=1,
                         connect_timeout_s=1, read_timeout_s=1)
    for native in (True, False):
        cfg = StorageConfig(**{**dead.__dict__, "pyarrow_native_s3": native})
        loc = storage.Location.parse(f"{s3_bucket.url}/scores/pool/x.parquet", cfg)
        error = caught(lambda loc=loc: read_parquet(loc))
        assert not isinstance(error, DamagedDataError), error
        assert faults.damage_reason(error) is None and classify_error(error) == TRANSIENT, error
        service = faults.service_failure(error)
        assert service is not None and "127.0.0.1" in str(service), error


def test_a_truncated_object_on_s3_is_damage_named_by_its_url(s3_bucket, shard):
    for native in (True, False):
        loc = storage.Location.parse(f"{s3_bucket.url}/out/scores/pool/x.parquet",
                                     StorageConfig(pyarrow_native_s3=native))
        storage.write_bytes(loc, shard.read_bytes()[:300])
        error = caught(lambda loc=loc: read_parquet(loc))
        assert isinstance(error, DamagedDataError), error
        assert str(error).startswith(f"score shard {loc.url} is damaged"), error
        assert "StorageConfig" not in str(error) and "Location(" not in str(error)


def test_out_of_space_is_fatal_and_names_the_file(tmp_path):
    assert classify_error(OSError(errno.ENOSPC, "No space left on device")) == FATAL
    assert classify_error(OSError(errno.EDQUOT, "Disk quota exceeded")) == FATAL
    target = tmp_path / "scores" / "pool" / "x.parquet"
    table = pa.table({"x": pa.array(range(100_000))})
    soft, hard = resource.getrlimit(resource.RLIMIT_FSIZE)
    resource.setrlimit(resource.RLIMIT_FSIZE, (4096, hard))  # a real EFBIG (SIGXFSZ ignored)
    try:
        error = caught(lambda: write_parquet(storage.Location.parse(target), table))
    finally:
        resource.setrlimit(resource.RLIMIT_FSIZE, (soft, hard))
    assert isinstance(error, OutOfSpaceError) and error.exit_code == 2
    assert f"cannot write {target}" in str(error) and "file size limit" in str(error)
    assert classify_error(error.__cause__) == FATAL
    assert not target.exists() and not list(target.parent.iterdir())  # no partial file left


def test_every_layout_path_names_its_stage(tmp_path):
    """faults.owner's patterns follow colorfilter.layout: a moved folder fails here."""
    for root in (RunLayout.at(str(tmp_path / "out")), RunLayout.at("s3://bucket/out")):
        expected = {
            root.tokens("pool").join("00000-00001.parquet"): "prepare",
            root.tokens("downstream_eval").join("00000-00000.parquet"): "prepare",
            root.tokenizer.join("tokenizer.json"): "prepare",
            root.tokenizer: "prepare",
            root.model("prior").join("model.safetensors"): "train-prior",
            root.model("prior"): "train-prior",
            root.model("conditional").join("config.json"): "train-conditional",
            root.scores.join("00000-00001.parquet"): "score",
            root.dsir.join("00000-00001.parquet"): "select",
            root.selected("color-tau16").join("data", "train-00000-of-00001.parquet"): "select",
            root.eval_runs.join("x.json"): "evaluate",
            root.sample_scores.join("00000-00001.parquet"): "distill",
            root.cheap_model.join("model.npz"): "distill",
            root.candidates: "distill",
            **{root.marker(stage): stage for stage in ("prepare", "distill", "score", "evaluate")},
        }
        for loc, stage in expected.items():
            assert faults.owner(loc.url)[1] == stage, loc.url
    assert faults.owner("/data/c4/c4-train.00000-of-01024.json.gz") == ("input file", None)


def test_a_cache_copy_is_named_by_the_url_it_came_from(s3_bucket, tmp_path, monkeypatch):
    from colorfilter.io.cache import local_copy, source_url

    monkeypatch.setenv("COLORFILTER_CACHE", str(tmp_path / "cache"))
    folder = s3_bucket.join("out", "models", "prior")
    storage.write_bytes(folder.join("config.json"), b"{}")
    storage.write_bytes(folder.join("model.safetensors"), b"\0" * 16)
    local = local_copy(folder)
    assert source_url(local) == folder.url
    assert source_url(local / "model.safetensors") == folder.join("model.safetensors").url
    assert source_url(tmp_path) is None
