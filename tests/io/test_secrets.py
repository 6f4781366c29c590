"""Secrets never leave the environment: planted keys appear in no object, record or message."""

from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path

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
REPO = Path(__file__).resolve().parents[2]
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


@pytest.fixture
def selection_folder(tmp_path) -> Path:
    """A finished selection folder (the release tests' template, written by the real writer)."""
    from tests.dataset import synthetic
    from tests.dataset.synthetic import write_one

    pool = synthetic.build_pool(tmp_path / "pool", n_files=1)
    out_dir = tmp_path / "selected" / "color-tau4"
    write_one(
        pool.top_k(4), pool.token_dir, pool.score_dir, pool.tokenizer_dir, out_dir,
        method="color", tau=4, rows_per_shard=8, seed=0, repo_id="org/selection",
    )  # fmt: skip
    return out_dir


def release_cli(folder: Path, endpoint: str) -> tuple[int, str]:
    env = {**os.environ, "PYTHONPATH": str(REPO), "HF_ENDPOINT": endpoint, "HF_TOKEN": HF_SECRET}
    done = subprocess.run(
        [sys.executable, "-m", "colorfilter", "release", str(folder), "--repo-id", "org/sel"],
        env=env, capture_output=True, text=True, timeout=120,
    )  # fmt: skip
    return done.returncode, done.stderr + done.stdout


def test_a_hub_that_refuses_or_is_down_is_one_line_naming_it_without_the_token(
    selection_folder,
):
    """Refused token (401), outage (503), nothing listening: exit 2, one line naming the
    endpoint, never the token."""
    from tests.hub_server import FakeHub

    with FakeHub() as hub:
        hub.refused_tokens.add(HF_SECRET)
        code, out = release_cli(selection_folder, hub.url)
        assert code == 2 and out.count("\n") == 1, out
        assert f"the Hugging Face hub at {hub.url} refused the credentials (HTTP 401" in out
        hub.refused_tokens.clear()
        hub.outage = 503
        code, out = release_cli(selection_folder, hub.url)
        assert code == 2 and f"the Hugging Face hub at {hub.url} failed (HTTP 503" in out, out
        assert not hub.repos  # nothing was created
        down = hub.url
    code, out = release_cli(selection_folder, down)  # the server is gone
    assert code == 2 and out.startswith(f"error: the Hugging Face hub at {down} does not answer")
    assert HF_SECRET not in out


def test_refused_s3_credentials_mid_run_print_no_key(s3_bucket, monkeypatch, capsys):
    import s3fs

    from colorfilter.reporting import report_error

    loc = s3_bucket.join("out", "scores", "pool", "x.parquet")
    storage.write_bytes(loc, b"x")
    monkeypatch.setenv("AWS_SECRET_ACCESS_KEY", AWS_SECRET)
    s3fs.S3FileSystem.clear_instance_cache()
    from moto import settings

    monkeypatch.setattr(settings, "INITIAL_NO_AUTH_ACTION_COUNT", 0)
    try:
        storage.read_bytes(loc)
    except Exception as exc:  # noqa: BLE001 - what the user would see of it
        assert report_error(exc) == 2
    err = capsys.readouterr().err
    assert err.startswith("error: the S3 endpoint") and "refused the credentials" in err
    assert AWS_SECRET not in err and err.count("\n") == 1
