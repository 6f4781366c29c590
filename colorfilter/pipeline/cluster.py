"""Fail fast on a cluster address that nothing answers: probe before Ray or the Jobs client
would loop ("Failed to connect to GCS ..." until killed).

`ray.address` (`auto`, `ray://HOST:PORT`, `HOST:PORT`) and a Jobs dashboard address
(`http://HOST:8265`) are resolved the way Ray resolves them and TCP-probed for up to
`ray.connect_timeout_s` (default 30 s); nothing answering is one ConfigError naming the address
(exit 2). `ray.init` itself is bounded too: Ray's own retry loop over the GCS connection is cut
to a single attempt (~40 s at most when a port accepts connections but is no Ray cluster).
"""

from __future__ import annotations

import contextlib
import os
import socket
import time
from collections.abc import Iterator
from typing import Any

from colorfilter.errors import ConfigError
from colorfilter.io.faults import first_line
from colorfilter.io.redact import redact

DEFAULT_CONNECT_TIMEOUT_S = 30.0
RAY_CLIENT_PORT = 10001
GCS_WAIT_ENV = "RAY_gcs_server_port_wait_time_s"  # Ray's GCS connect attempts (~1 s apart)


def probe_target(address: str) -> tuple[str, int] | None:
    """(host, port) that `ray.init(address)` will connect to, or None when it cannot be known
    here (e.g. `auto` with no cluster recorded: ray.init then fails fast by itself)."""
    if address.startswith("ray://"):
        return _host_port(address[len("ray://"):], RAY_CLIENT_PORT)
    try:
        from ray._private.services import canonicalize_bootstrap_address

        resolved = canonicalize_bootstrap_address(address)  # RAY_ADDRESS, the recorded cluster
    except Exception:  # noqa: BLE001 - a private helper: fall back to our own parsing
        resolved = None if address == "auto" else address
    return _host_port(resolved, None) if resolved else None


def dashboard_target(address: str) -> tuple[str, int] | None:
    """(host, port) of a Jobs API address such as http://HEAD:8265 (or HEAD:8265)."""
    scheme, sep, rest = address.partition("://")
    if not sep:
        scheme, rest = "http", address
    default = {"http": 80, "https": 443}.get(scheme.lower())
    return _host_port(rest.split("/", 1)[0], default)


def _host_port(text: str, default_port: int | None) -> tuple[str, int] | None:
    text = text.rsplit("@", 1)[-1]
    host, sep, port = text.rpartition(":")
    if not sep or host.endswith(":"):  # no port, or a bare IPv6 address
        return (text.strip("[]"), default_port) if default_port else None
    try:
        return host.strip("[]"), int(port)
    except ValueError:
        return None


def wait_for_port(host: str, port: int, timeout_s: float) -> str | None:
    """Try a TCP connection until one succeeds or `timeout_s` passes; None when it answered,
    else the last error in words."""
    deadline = time.monotonic() + timeout_s
    last = "no attempt"
    while True:
        left = deadline - time.monotonic()
        try:
            with socket.create_connection((host, port), timeout=max(0.1, min(left, 5.0))):
                return None
        except OSError as exc:
            last = exc.strerror or type(exc).__name__
        if deadline - time.monotonic() <= 0:
            return last
        time.sleep(min(1.0, max(0.0, deadline - time.monotonic())))


def check_ray_address(address: str, timeout_s: float, key: str = "ray.address") -> None:
    """ConfigError naming the address unless its cluster port answers within `timeout_s`."""
    target = probe_target(address)
    if target is None:
        return
    host, port = target
    error = wait_for_port(host, port, timeout_s)
    if error is not None:
        raise ConfigError(redact(
            f"{key}={address}: no Ray cluster answers at {host}:{port} within {timeout_s:g} s "
            f"({error}); check the address and that the cluster is up (`ray status` on the "
            "head), or raise ray.connect_timeout_s"
        ))


def check_dashboard(address: str, timeout_s: float) -> None:
    """ConfigError naming the address unless the Jobs API port answers within `timeout_s`."""
    target = dashboard_target(address)
    if target is None:
        return
    host, port = target
    error = wait_for_port(host, port, timeout_s)
    if error is not None:
        raise ConfigError(redact(
            f"no Ray cluster answers at {address} (nothing at {host}:{port} within "
            f"{timeout_s:g} s: {error}); give the dashboard address, e.g. --address "
            "http://HEAD:8265, and check that the head is up"
        ))


def join_cluster(ray: Any, address: str, timeout_s: float) -> None:
    """`ray.init(address)` after the probe, with Ray's GCS retry loop bounded; a cluster that
    still does not answer is a ConfigError naming the address."""
    check_ray_address(address, timeout_s)
    with _bounded_gcs_wait():
        try:
            ray.init(address=address, log_to_driver=True)
        except (ConnectionError, RuntimeError, TimeoutError) as exc:
            raise ConfigError(redact(
                f"ray.address={address}: could not join a Ray cluster there "
                f"({first_line(exc, 200)}); "
                "check the address and that the cluster is up"
            )) from None


@contextlib.contextmanager
def _bounded_gcs_wait() -> Iterator[None]:
    """One GCS connection attempt in ray.init (unless the user set Ray's own variable), so a
    port that is no GCS fails in ~40 s instead of ~20 attempts of that."""
    if GCS_WAIT_ENV in os.environ:
        yield
        return
    os.environ[GCS_WAIT_ENV] = "1"
    try:
        yield
    finally:
        os.environ.pop(GCS_WAIT_ENV, None)
