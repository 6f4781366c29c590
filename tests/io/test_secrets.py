"""Secrets never leave the environment: planted keys appear in no object, record or message."""

from __future__ import annotations

import pyarrow as pa
import pyarrow.parquet as pq
import pytest

from colorfilter.errors import ConfigError
from colorfilter.io import storage
from colorfilter.io.cache import local_copy
from colorfilter.io.commit import write_unit
from colorfilter.io.config import StorageConfig
from colorfilter.io.preflight import check_readable, check_writable
from colorfilter.io.redact import has_credentials, redact

AWS_SECRET = "wJalrXUtnFEMI/K7MDENG/bPxRfiCYPLANTEDKEY1"
AWS_SESSION = "FQoGZXIvYXdzEPLANTEDsessionTOKENvalue42"
HF_SECRET = "hf_PlantedFakeTokenAbCdEfGhIjKlMnOpQrSt"
PLANTED = (AWS_SECRET, AWS_SESSION, HF_SECRET)


@pytest.mark.parametrize(
    "text, leaked",
    [
        ("s3://AKIDPLANTED:supersecretvalue@bucket/key", "supersecretvalue"),
        ("s3://AKID:wJalrX/K7MDENG/bPxRfi@bucket/key", "bPxRfi"),  # AWS secrets hold '/'
        ("https://b.s3.amazonaws.com/k?X-Amz-Credential=AKIAIOSFODNN7EXAMPLE%2F20261201"
         "&X-Amz-Signature=deadbeefcafe&X-Amz-Expires=60", "deadbeefcafe"),
        ("https://storage.googleapis.com/b/o?X-Goog-Signature=abc123xyz&x=1", "abc123xyz"),
        ("https://hub/api?token=tok_very_secret_1", "tok_very_secret_1"),
        ("Authorization: Bearer eyJhbGciOiJIUzI1NiJ9.payload.sig", "eyJhbGciOiJIUzI1NiJ9"),
        ("failed with hf_abcdefghijklmnopqrstuvwx in header", "hf_abcdefghijklmnopqrstuvwx"),
        ("key id AKIAIOSFODNN7EXAMPLE refused", "AKIAIOSFODNN7EXAMPLE"),
    ],
)
def test_redact_patterns(text, leaked):
    out = redact(text)
    assert leaked not in out and "REDACTED" in out
    assert redact(out) == out  # idempotent


def test_plain_urls_are_untouched():
    for url in ["s3://bucket/c4/c4-train.00000-of-01024.json.gz", "hf://datasets/o/n@main/x",
                "/data/run/scores/shard-00001.parquet", "https://example.org/?page=2"]:
        assert redact(url) == url and not has_credentials(url)


def test_planted_secrets_reach_no_object_record_or_message(s3_bucket, tmp_path, monkeypatch):
    import s3fs

    monkeypatch.setenv("AWS_SECRET_ACCESS_KEY", AWS_SECRET)
    monkeypatch.setenv("AWS_SESSION_TOKEN", AWS_SESSION)
    monkeypatch.setenv("HF_TOKEN", HF_SECRET)
    s3fs.S3FileSystem.clear_instance_cache()  # new clients sign with the planted keys
    local_out = storage.Location.parse(tmp_path / "out")
    messages: list[str] = []
    for out in (s3_bucket.join("out"), local_out):
        check_writable(out, "output_dir")
        storage.write_json(out.join("config.json"), {"output_dir": out.url})
        write_unit(out.join("prepare", "part-0.done.json"), {"part-0.bin": b"tokens"},
                   meta={"leak": f"token={HF_SECRET}", "env": f"secret {AWS_SECRET} here",
                         "signed": f"https://x/y?X-Amz-Security-Token={AWS_SESSION}"})
        fs, path = storage.parquet_filesystem(out.join("scores", "shard-0.parquet"))
        storage.makedirs(out.join("scores"))
        pq.write_table(pa.table({"score": [1.0, 2.0]}), path, filesystem=fs)
    local_copy(s3_bucket.join("out", "prepare"), cache_dir=tmp_path / "cache")

    failing = [
        lambda: check_readable("s3://no-such-bucket-planted/x", "data.pool"),
        lambda: check_readable(s3_bucket.join(f"pool/{AWS_SECRET}.gz"), "data.pool"),
        lambda: check_writable(f"s3://user:{AWS_SECRET}@bucket/out", "output_dir"),
        lambda: check_writable(f"s3://bkt/out?X-Amz-Signature={AWS_SESSION}", "output_dir"),
        lambda: check_writable("s3://bkt/out", "output_dir",
                               StorageConfig(endpoint_url="http://127.0.0.1:9",
                                             preflight_timeout_s=1.0)),
        lambda: check_readable(f"gopher://{HF_SECRET}/x", "tokenizer"),
        lambda: check_readable(f"s4://bkt/{AWS_SECRET}", "data.pool"),
    ]
    for call in failing:
        with pytest.raises(ConfigError) as info:
            call()
        messages.append(str(info.value))

    written = [storage.read_bytes(f.location) for f in storage.find(s3_bucket)]
    written += [p.read_bytes() for p in tmp_path.rglob("*") if p.is_file()]
    assert len(written) >= 8 and len(messages) == len(failing)
    for blob in written:
        for secret in PLANTED:
            assert secret.encode() not in blob
    for message in messages:
        for secret in PLANTED:
            assert secret not in message, message
