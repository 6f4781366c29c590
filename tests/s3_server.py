"""A real S3-compatible server on 127.0.0.1 for tests: moto in server mode (the S3 HTTP protocol).

`s3_server` (session scope) starts `moto.server.ThreadedMotoServer` on a free port and points
the standard AWS variables at it (AWS_ENDPOINT_URL, dummy keys, a region), so s3fs, boto3 and
any subprocess the test starts use it exactly as they would use AWS. `s3_bucket` gives each test
a fresh, empty bucket as an `s3://NAME` Location. `s3_refusing_credentials` makes the server
check signatures against its (empty) IAM user list, so every request is refused with 403, as a
real endpoint does for unknown keys.
"""

from __future__ import annotations

import itertools
import os

import pytest

AWS_ENV = {
    "AWS_ACCESS_KEY_ID": "testing",
    "AWS_SECRET_ACCESS_KEY": "testing",
    "AWS_DEFAULT_REGION": "us-east-1",
    "AWS_REGION": "us-east-1",
}
AWS_UNSET = ("AWS_PROFILE", "AWS_SESSION_TOKEN", "AWS_SECURITY_TOKEN", "AWS_ENDPOINT_URL_S3",
             "AWS_CONFIG_FILE", "AWS_SHARED_CREDENTIALS_FILE")
_bucket_ids = itertools.count()


class S3Server:
    """The running server: `endpoint` (http://127.0.0.1:PORT) and a boto3-free bucket maker."""

    def __init__(self, endpoint: str) -> None:
        import s3fs

        self.endpoint = endpoint
        self.fs = s3fs.S3FileSystem(endpoint_url=endpoint, skip_instance_cache=True)

    def make_bucket(self, name: str) -> str:
        self.fs.mkdir(name)
        return f"s3://{name}"


@pytest.fixture(scope="session")
def s3_server():
    from moto.server import ThreadedMotoServer

    server = ThreadedMotoServer(ip_address="127.0.0.1", port=0, verbose=False)
    server.start()
    host, port = server.get_host_and_port()
    endpoint = f"http://{host}:{port}"
    with pytest.MonkeyPatch.context() as patch:
        for name in AWS_UNSET:
            patch.delenv(name, raising=False)
        for name, value in {**AWS_ENV, "AWS_ENDPOINT_URL": endpoint}.items():
            patch.setenv(name, value)
        # never read the developer's real ~/.aws files
        patch.setenv("AWS_CONFIG_FILE", os.devnull)
        patch.setenv("AWS_SHARED_CREDENTIALS_FILE", os.devnull)
        try:
            yield S3Server(endpoint)
        finally:
            server.stop()


@pytest.fixture
def s3_bucket(s3_server):
    """A fresh empty bucket on the test server, as a Location."""
    from colorfilter.io.storage import Location

    url = s3_server.make_bucket(f"test-bucket-{os.getpid()}-{next(_bucket_ids)}")
    return Location.parse(url)


@pytest.fixture
def s3_refusing_credentials(s3_server, monkeypatch):
    """While active, the server authenticates requests, refusing the dummy keys (403)."""
    from moto import settings

    monkeypatch.setattr(settings, "INITIAL_NO_AUTH_ACTION_COUNT", 0)
    return s3_server


@pytest.fixture
def quiet_disk(tmp_path, monkeypatch):
    """An empty cwd, and the node cache under tmp_path: all a bucket run may touch locally."""
    cwd = tmp_path / "cwd"
    cwd.mkdir()
    monkeypatch.chdir(cwd)
    monkeypatch.setenv("COLORFILTER_CACHE", str(tmp_path / "cache"))
    return cwd
