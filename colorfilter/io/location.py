"""Location: one parsed path or URL (local, s3://, gs://, hf://) that travels with its options.

Parsing is where bad locations are caught: an unknown scheme or a URL carrying credentials is a
ConfigError naming the config key. A Location is a frozen dataclass holding its StorageConfig,
so it pickles to Ray actors and every child made by `join` keeps the same options.
"""

from __future__ import annotations

import os
import posixpath
from dataclasses import dataclass, field

from colorfilter.errors import ConfigError
from colorfilter.io.config import StorageConfig
from colorfilter.io.redact import has_credentials, redact

# accepted spelling -> canonical scheme ("" = local disk)
SCHEMES = {"": "", "file": "", "s3": "s3", "s3a": "s3", "gs": "gs", "gcs": "gs", "hf": "hf"}
GLOB_CHARS = frozenset("*?[")


@dataclass(frozen=True)
class Location:
    """A parsed path or URL: `scheme` ("" for local, s3, gs, hf) and `path` (fsspec style)."""

    scheme: str
    path: str  # local: absolute POSIX path; remote: "bucket/key" or "datasets/org/name/file"
    storage: StorageConfig = field(default_factory=StorageConfig, compare=False)

    @classmethod
    def parse(
        cls, text: str | os.PathLike | Location, storage: StorageConfig | None = None,
        key: str = "",
    ) -> Location:
        """Parse a path or URL; ConfigError (naming `key`) for an unknown scheme or credentials."""
        if isinstance(text, Location):
            return text if storage is None else cls(text.scheme, text.path, storage)
        storage = storage or StorageConfig()
        raw = os.fspath(text)
        where = f"{key}: " if key else ""
        if has_credentials(raw):
            raise ConfigError(
                f"{where}'{redact(raw)}' holds credentials or a signature; use a plain URL and "
                "put credentials in the environment (AWS_*, GOOGLE_APPLICATION_CREDENTIALS, "
                "HF_TOKEN)"
            )
        scheme, sep, rest = raw.partition("://")
        if not sep:
            return cls("", os.path.abspath(os.path.expanduser(raw)), storage)
        canonical = SCHEMES.get(scheme.lower())
        if canonical is None:
            known = ", ".join(f"{s}://" for s in ("s3", "gs", "hf", "file"))
            raise ConfigError(
                f"{where}'{redact(raw)}': unknown storage scheme '{redact(scheme)}://'; use a "
                f"local path or one of {known}"
            )
        if canonical == "":
            return cls("", os.path.abspath(rest if rest.startswith("/") else "/" + rest), storage)
        rest = rest.strip("/")
        if not rest:
            raise ConfigError(f"{where}'{redact(raw)}': the URL names no bucket or repository")
        return cls(canonical, posixpath.normpath(rest), storage)

    @property
    def url(self) -> str:
        """The canonical string: a local absolute path, or SCHEME://PATH."""
        return self.path if self.is_local else f"{self.scheme}://{self.path}"

    @property
    def is_local(self) -> bool:
        return self.scheme == ""

    @property
    def name(self) -> str:
        return posixpath.basename(self.path)

    @property
    def parent(self) -> Location:
        parent = posixpath.dirname(self.path)
        return Location(self.scheme, parent or self.path, self.storage)

    @property
    def bucket(self) -> str:
        """The bucket (s3, gs) or repository prefix (hf) a remote path lives in."""
        return self.path.split("/", 1)[0]

    @property
    def has_glob(self) -> bool:
        return bool(GLOB_CHARS & set(self.path))

    def join(self, *parts: str) -> Location:
        """A child location; parts may hold '/', never '..' (outputs stay under their root)."""
        pieces = [p.strip("/") for p in parts if p.strip("/")]
        if any(".." in p.split("/") for p in pieces):
            raise ValueError(f"refusing '..' in a storage path: {parts}")
        return Location(self.scheme, posixpath.join(self.path, *pieces), self.storage)

    def relative_to(self, base: Location) -> str:
        """The '/'-separated path of `self` under `base` (ValueError if not under it)."""
        prefix = base.path.rstrip("/") + "/"
        if self.scheme != base.scheme or not self.path.startswith(prefix):
            raise ValueError(f"{self.url} is not under {base.url}")
        return self.path[len(prefix):]

    def __str__(self) -> str:
        return self.url

    def __fspath__(self) -> str:
        """Local locations pass to open()/Path(); a URL there is a bug, told as such."""
        if not self.is_local:
            raise TypeError(f"{self.url} is not a local path: use colorfilter.io.storage")
        return self.path


def as_location(value: str | os.PathLike | Location, storage: StorageConfig | None = None,
                key: str = "") -> Location:
    """`value` as a Location (Locations pass through, keeping their own storage config)."""
    if isinstance(value, Location):
        return value
    return Location.parse(value, storage, key)
