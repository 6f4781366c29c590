"""A real Ray head on 127.0.0.1 for job-submission tests: its own temp dir and ports, so it
never meets the session's `ray.init` (tests/conftest.py) or any other Ray on the machine."""

from __future__ import annotations

import os
import shutil
import signal
import socket
import subprocess
import sys
import tempfile
import time
import urllib.request
from pathlib import Path

import pytest

PORT_FLAGS = [
    "port", "dashboard-port", "dashboard-agent-listen-port", "dashboard-agent-grpc-port",
    "ray-client-server-port", "runtime-env-agent-port", "metrics-export-port",
    "node-manager-port", "object-manager-port",
]  # fmt: skip


def free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return sock.getsockname()[1]


def _wait_for_dashboard(url: str, process: subprocess.Popen, log: Path, timeout_s: float) -> None:
    deadline = time.monotonic() + timeout_s
    while time.monotonic() < deadline:
        if process.poll() is not None:
            raise RuntimeError(f"ray start exited {process.returncode}:\n{log.read_text()[-3000:]}")
        try:
            with urllib.request.urlopen(f"{url}/api/version", timeout=2) as response:
                if response.status == 200:
                    return
        except OSError:
            time.sleep(0.5)
    raise RuntimeError(f"no dashboard at {url} after {timeout_s}s:\n{log.read_text()[-3000:]}")


def _stop_head(process: subprocess.Popen) -> None:
    """SIGTERM to `ray start --block` drains and stops the processes it started; SIGKILL the
    process group (ours alone: started with a new session) if anything is left."""
    if process.poll() is None:
        process.send_signal(signal.SIGTERM)
        try:
            process.wait(timeout=40)
        except subprocess.TimeoutExpired:
            pass
    try:
        os.killpg(process.pid, signal.SIGKILL)
    except ProcessLookupError:
        pass
    process.wait(timeout=10)


@pytest.fixture(scope="module")
def ray_head() -> str:
    """Start `ray start --head --block` with this venv first on PATH (the job's `python`);
    yield the dashboard address http://127.0.0.1:PORT; stop exactly this head afterwards."""
    temp_dir = Path(tempfile.mkdtemp(prefix="rh", dir="/tmp"))  # short: Ray's socket paths
    ports = {flag: free_port() for flag in PORT_FLAGS}
    bin_dir = Path(sys.executable).parent
    env = dict(
        os.environ,
        PATH=f"{bin_dir}{os.pathsep}{os.environ.get('PATH', '')}",
        RAY_USAGE_STATS_ENABLED="0",
        RAY_AUTH_MODE="disabled",
    )
    env.pop("RAY_ADDRESS", None)
    command = [
        str(bin_dir / "ray"), "start", "--head", "--block", "--num-cpus=2",
        "--object-store-memory=300000000", "--node-ip-address=127.0.0.1",
        "--dashboard-host=127.0.0.1", "--include-dashboard=true", "--disable-usage-stats",
        f"--temp-dir={temp_dir}", *(f"--{flag}={port}" for flag, port in ports.items()),
    ]  # fmt: skip
    log = temp_dir / "ray_start.log"
    with open(log, "w") as log_file:
        process = subprocess.Popen(
            command, env=env, stdout=log_file, stderr=subprocess.STDOUT, start_new_session=True
        )
    url = f"http://127.0.0.1:{ports['dashboard-port']}"
    try:
        _wait_for_dashboard(url, process, log, timeout_s=90)
        yield url
    finally:
        _stop_head(process)
        shutil.rmtree(temp_dir, ignore_errors=True)
