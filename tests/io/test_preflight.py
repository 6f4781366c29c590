"""Preflight: every storage failure is one ConfigError line naming the config key and the URL."""

from __future__ import annotations

import socket
import time

import pytest

from colorfilter.errors import EXIT_USAGE, ConfigError, MissingExtraError
from colorfilter.io import storage
from colorfilter.io.config import StorageConfig
from colorfilter.io.preflight import check_readable, check_writable


def _one_line_error(call, key: str, url: str) -> str:
    with pytest.raises(ConfigError) as info:
        call()
    message = str(info.value)
    assert info.value.exit_code == EXIT_USAGE
    assert message.startswith(f"{key}: ") and url in message and "\n" not in message, message
    assert "Traceback" not in message
    return message


def _closed_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return sock.getsockname()[1]


def test_readable_inputs_pass(s3_bucket):
    storage.write_bytes(s3_bucket.join("pool", "a.json.gz"), b"x")
    assert check_readable(s3_bucket.join("pool", "a.json.gz"), "data.pool").name == "a.json.gz"
    check_readable(s3_bucket.join("pool", "*.json.gz"), "data.pool")
    check_readable(s3_bucket.join("pool"), "tokenizer")  # a folder (prefix) is readable too


def test_writable_output_passes_and_leaves_no_probe(s3_bucket, tmp_path):
    check_writable(s3_bucket.join("out"), "output_dir")
    assert storage.find(s3_bucket) == []
    check_writable(str(tmp_path / "new" / "out"), "output_dir")
    assert [p.name for p in (tmp_path / "new" / "out").iterdir()] == []


def test_unknown_scheme():
    message = _one_line_error(lambda: check_readable("s4://bkt/x", "data.pool"),
                              "data.pool", "s4://bkt/x")
    assert "unknown storage scheme" in message


def test_missing_bucket(s3_server):
    url = "s3://no-such-bucket-here/out"
    message = _one_line_error(lambda: check_writable(url, "output_dir"), "output_dir", url)
    assert "bucket 's3://no-such-bucket-here' does not exist" in message
    message = _one_line_error(lambda: check_readable(url + "/*.gz", "data.pool"), "data.pool", url)
    assert "does not exist" in message


def test_missing_object_and_empty_pattern(s3_bucket):
    url = s3_bucket.join("pool", "nothing.json.gz").url
    assert "no such file" in _one_line_error(
        lambda: check_readable(url, "data.pool"), "data.pool", url)
    pattern = s3_bucket.join("pool", "*.json.gz").url
    assert "matches no files" in _one_line_error(
        lambda: check_readable(pattern, "data.pool"), "data.pool", pattern)


def test_refused_credentials(s3_bucket, s3_refusing_credentials):
    url = s3_bucket.join("pool", "a.json.gz").url
    cfg = StorageConfig()  # fresh clients: the server now checks every signature
    message = _one_line_error(lambda: check_readable(url, "data.pool", cfg), "data.pool", url)
    assert "access denied" in message and "AWS_ACCESS_KEY_ID" in message
    out = s3_bucket.join("out").url
    assert "access denied" in _one_line_error(
        lambda: check_writable(out, "output_dir", cfg), "output_dir", out)


def test_unreachable_endpoint_fails_fast(s3_server):
    endpoint = f"http://127.0.0.1:{_closed_port()}"
    cfg = StorageConfig(endpoint_url=endpoint, preflight_timeout_s=1.0)
    start = time.monotonic()
    message = _one_line_error(
        lambda: check_writable("s3://some-bucket/out", "output_dir", cfg),
        "output_dir", "s3://some-bucket/out")
    assert "cannot reach the storage endpoint" in message and endpoint in message
    assert time.monotonic() - start < 10


def test_silent_endpoint_times_out_fast(s3_server):
    """An endpoint that accepts connections and never answers (a hung proxy) costs one short
    timeout, not minutes of retries."""
    with socket.socket() as silent:
        silent.bind(("127.0.0.1", 0))
        silent.listen(8)  # the kernel completes connections; nobody ever reads or answers
        endpoint = f"http://127.0.0.1:{silent.getsockname()[1]}"
        cfg = StorageConfig(endpoint_url=endpoint, preflight_timeout_s=0.5)
        start = time.monotonic()
        message = _one_line_error(lambda: check_readable("s3://bkt/x", "data.pool", cfg),
                                  "data.pool", "s3://bkt/x")
        elapsed = time.monotonic() - start
    assert "cannot reach the storage endpoint" in message and endpoint in message
    assert elapsed < 5, elapsed


def test_local_paths(tmp_path):
    missing = str(tmp_path / "nope.jsonl")
    assert "no such file" in _one_line_error(
        lambda: check_readable(missing, "data.pool"), "data.pool", missing)
    (tmp_path / "a.jsonl").write_text("{}\n")
    check_readable(str(tmp_path / "*.jsonl"), "data.pool")


def test_endpoint_with_credentials_is_rejected_by_config():
    problems = StorageConfig(endpoint_url="http://user:pw@127.0.0.1:9000").validate()
    assert problems and "must not hold credentials" in problems[0] and "pw" not in problems[0]
    with pytest.raises(ConfigError):
        StorageConfig(endpoint_url="127.0.0.1:9000").check()


def test_gs_without_the_optional_extra_says_what_to_install():
    try:
        import gcsfs  # noqa: F401
    except ImportError:
        pass
    else:
        pytest.skip("gcsfs is installed")
    with pytest.raises(MissingExtraError, match=r"colorfilter\[gcs\]") as info:
        check_readable("gs://bkt/pool/*.json.gz", "data.pool")
    assert info.value.exit_code == EXIT_USAGE
    assert str(info.value).startswith("data.pool: cannot read 'gs://bkt/pool/*.json.gz': ")
