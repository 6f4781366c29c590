"""Filesystems behind Locations: fsspec for files and listings, pyarrow.fs for parquet.

s3fs (s3://), gcsfs (gs://, optional extra `gcs`), huggingface_hub's HfFileSystem (hf://) and
fsspec's LocalFileSystem. Listing caches are off: actors on other nodes write objects the driver
must see at once. `preflight=True` gives short timeouts and one attempt, for checks before work.
pyarrow's S3FileSystem does not read AWS_ENDPOINT_URL, so the endpoint is passed explicitly.
"""

from __future__ import annotations

import os
from typing import Any

from colorfilter.errors import ConfigError, require
from colorfilter.io.config import StorageConfig
from colorfilter.io.location import Location, as_location


def storage_options(loc: Location, preflight: bool = False) -> dict[str, Any]:
    """fsspec options for `loc`'s backend: no secrets, so they may be logged or passed on.

    Also what other fsspec users take, e.g. `datasets.load_dataset("parquet",
    data_files="s3://bkt/sel/*.parquet", storage_options=storage_options(loc))`.
    """
    cfg = loc.storage
    timeout = cfg.preflight_timeout_s if preflight else None
    read = timeout or cfg.read_timeout_s
    if loc.scheme == "s3":
        attempts = 1 if preflight else cfg.retries
        options: dict[str, Any] = {
            "anon": cfg.anonymous,
            "config_kwargs": {
                "connect_timeout": timeout or cfg.connect_timeout_s,
                "read_timeout": read,
                "retries": {"max_attempts": attempts, "mode": "standard"},
            },
        }
        if endpoint_url(cfg):
            options["endpoint_url"] = endpoint_url(cfg)
        if region(cfg):
            options["client_kwargs"] = {"region_name": region(cfg)}
    elif loc.scheme == "gs":
        # token None: GOOGLE_APPLICATION_CREDENTIALS or the metadata server; gcsfs reads
        # STORAGE_EMULATOR_HOST (a local fake-gcs-server) by itself
        options = {"token": "anon" if cfg.anonymous else None, "requests_timeout": read}
    elif loc.scheme == "hf":
        # HF_ENDPOINT is read now (huggingface_hub reads it once, at import); token None: HF_TOKEN
        options = {"endpoint": os.environ.get("HF_ENDPOINT") or None,
                   "token": False if cfg.anonymous else None}
    else:
        return {}
    options["use_listings_cache"] = False  # objects written by other nodes must show at once
    return options


def filesystem(loc: Location, preflight: bool = False) -> Any:
    """The fsspec filesystem for `loc` (instances are cached by fsspec per process and thread)."""
    if loc.is_local:
        import fsspec.implementations.local

        return fsspec.implementations.local.LocalFileSystem()
    options = storage_options(loc, preflight)
    if loc.scheme == "s3":
        fs = require("s3fs").S3FileSystem(**options)
        fs.retries = 1 if preflight else loc.storage.retries  # s3fs's own loop over botocore's
        return fs
    if loc.scheme == "gs":
        return require("gcsfs", "gcs").GCSFileSystem(**options)
    if loc.scheme == "hf":
        from huggingface_hub import HfFileSystem

        # preflight: no cached "this repo exists" answers from earlier calls
        return HfFileSystem(**options, **({"skip_instance_cache": True} if preflight else {}))
    raise ConfigError(f"'{loc.url}': unsupported storage scheme '{loc.scheme}'")


def endpoint_url(cfg: StorageConfig) -> str:
    """The S3 endpoint: the config's, else AWS_ENDPOINT_URL_S3 / AWS_ENDPOINT_URL, else ''."""
    return (cfg.endpoint_url or os.environ.get("AWS_ENDPOINT_URL_S3")
            or os.environ.get("AWS_ENDPOINT_URL") or "")


def region(cfg: StorageConfig) -> str:
    return cfg.region or os.environ.get("AWS_REGION") or os.environ.get("AWS_DEFAULT_REGION") or ""


def parquet_filesystem(value: str | Location) -> tuple[Any, str]:
    """(pyarrow.fs.FileSystem, path) for pyarrow's parquet/dataset functions on `value`."""
    import pyarrow.fs as pafs

    loc = as_location(value)
    cfg = loc.storage
    if loc.is_local:
        return pafs.LocalFileSystem(), loc.path
    if loc.scheme == "s3" and cfg.pyarrow_native_s3:
        kwargs: dict[str, Any] = {
            "anonymous": cfg.anonymous,
            "connect_timeout": cfg.connect_timeout_s,
            "request_timeout": cfg.read_timeout_s,
            "retry_strategy": pafs.AwsStandardS3RetryStrategy(max_attempts=cfg.retries),
        }
        endpoint = endpoint_url(cfg)
        if endpoint:
            scheme, _, host = endpoint.partition("://")
            kwargs.update(endpoint_override=host.rstrip("/"), scheme=scheme)
        kwargs["region"] = region(cfg) or "us-east-1"
        return pafs.S3FileSystem(**kwargs), loc.path
    handler = pafs.FSSpecHandler(filesystem(loc))
    return pafs.PyFileSystem(handler), loc.path
