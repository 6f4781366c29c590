"""The `storage` config section: options for object stores, never secrets.

Credentials stay in the environment, read by each backend's own standard chain:
AWS_ACCESS_KEY_ID / AWS_SECRET_ACCESS_KEY / AWS_SESSION_TOKEN / AWS_PROFILE and
AWS_ENDPOINT_URL(_S3) for s3://, GOOGLE_APPLICATION_CREDENTIALS (or the metadata server) for
gs://, HF_TOKEN and HF_ENDPOINT for hf://. Nothing here is ever a key or a token, so the section
can be written to config.yaml, manifests and logs as it is.
"""

from __future__ import annotations

import re
from dataclasses import dataclass

from colorfilter.errors import ConfigError

_USERINFO = re.compile(r"^[A-Za-z][A-Za-z0-9+.-]*://[^/]*@")


@dataclass(frozen=True)
class StorageConfig:
    endpoint_url: str = ""  # S3-compatible endpoint; "" = AWS_ENDPOINT_URL(_S3) or AWS itself
    region: str = ""  # S3 region; "" = AWS_REGION / AWS_DEFAULT_REGION / the SDK's default
    anonymous: bool = False  # unsigned requests (public buckets, public hub repos)
    connect_timeout_s: float = 10.0  # per connection attempt, during the stages
    read_timeout_s: float = 60.0  # per request, during the stages
    retries: int = 5  # attempts per request, during the stages
    preflight_timeout_s: float = 3.0  # connect/read timeout of the checks run before any work
    pyarrow_native_s3: bool = True  # parquet on s3 via pyarrow's S3FileSystem (else via s3fs)

    def validate(self) -> list[str]:
        """Problems with this section, as 'storage.KEY: ...' lines (empty when fine)."""
        problems = []
        if self.endpoint_url and _USERINFO.match(self.endpoint_url):
            problems.append(
                "storage.endpoint_url: must not hold credentials; "
                "set AWS_ACCESS_KEY_ID / AWS_SECRET_ACCESS_KEY in the environment instead"
            )
        if self.endpoint_url and not self.endpoint_url.startswith(("http://", "https://")):
            problems.append(
                f"storage.endpoint_url: expected http://HOST:PORT or https://HOST, "
                f"got {self.endpoint_url!r}"
            )
        for name in ("connect_timeout_s", "read_timeout_s", "preflight_timeout_s"):
            if getattr(self, name) <= 0:
                problems.append(f"storage.{name}: must be > 0")
        if self.retries < 1:
            problems.append("storage.retries: must be at least 1")
        return problems

    def check(self) -> StorageConfig:
        """Self, or one ConfigError listing every problem."""
        problems = self.validate()
        if problems:
            raise ConfigError("; ".join(problems))
        return self
