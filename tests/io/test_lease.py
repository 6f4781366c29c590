"""One writer per output dir: a live holder is refused by name, a dead or expired one is taken
over with one line, on local disk and on a bucket; and through the real CLI, two runs into one
folder (the second refused) and a kill -9 followed by the same command (it just continues)."""

from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
import time
from dataclasses import asdict, replace
from pathlib import Path

import pytest

from colorfilter.errors import EXIT_USAGE, OutputDirBusyError
from colorfilter.io import storage
from colorfilter.io.lease import LEASE_NAME, Lease, held, me, read_holder, stale_reason
from tests.pipeline.test_resume import cli_env

REPO = Path(__file__).resolve().parents[2]


@pytest.fixture(params=["local", "s3"])
def root(request, tmp_path):
    if request.param == "local":
        return storage.Location.parse(tmp_path / "out")
    return request.getfixturevalue("s3_bucket").join("out")


def plant(root: storage.Location, **changes) -> None:
    """A lease as another run would have written it."""
    holder = replace(me("colorfilter score", 60.0), **changes)
    storage.write_json(root.join(LEASE_NAME), asdict(holder))


def dead_pid() -> int:
    child = subprocess.Popen([sys.executable, "-c", "pass"])
    child.wait()
    return child.pid


def test_a_live_holder_is_refused_by_name_and_release_frees_it(root, capsys):
    first = Lease(root, ttl_s=30.0, command="colorfilter run")
    first.acquire()
    second = Lease(root, ttl_s=30.0, command="colorfilter select")
    # the same process again is "this process" (taken); a live other pid on this host is not
    storage.write_json(root.join(LEASE_NAME),
                       {**asdict(first.holder), "pid": os.getppid(), "token": "another-run",
                        "pid_started": _start(os.getppid())})
    with pytest.raises(OutputDirBusyError) as caught:
        second.acquire()
    message = str(caught.value)
    assert caught.value.exit_code == EXIT_USAGE and root.url in message
    assert f"pid {os.getppid()}" in message and "started 20" in message
    assert "colorfilter run" in message and "\n" not in message
    storage.write_json(root.join(LEASE_NAME), asdict(first.holder))  # ours again
    first.release()
    assert not storage.exists(root.join(LEASE_NAME))
    with held(root, ttl_s=30.0) as lease:
        assert read_holder(root).token == lease.holder.token
    assert not storage.exists(root.join(LEASE_NAME))
    assert "taking over" not in capsys.readouterr().err


def _start(pid: int) -> float:
    import psutil

    return psutil.Process(pid).create_time()


def test_a_dead_holder_on_this_host_is_taken_over_at_once(root, capsys):
    plant(root, pid=dead_pid())
    with held(root, ttl_s=60.0):
        pass
    err = capsys.readouterr().err
    assert err.count("\n") == 1 and "taking over the lease" in err and "process is gone" in err


def test_a_reused_pid_is_not_the_holder(root, capsys):
    plant(root, pid=os.getppid(), pid_started=_start(os.getppid()) - 1000)
    with held(root, ttl_s=60.0):
        pass
    assert "its pid now belongs to another process" in capsys.readouterr().err


def test_another_hosts_lease_counts_until_it_expires(root, capsys):
    plant(root, host="gpu-node-7", pid=4242, expires_at=time.time() + 60)
    with pytest.raises(OutputDirBusyError, match="host gpu-node-7, pid 4242"):
        Lease(root, ttl_s=60.0).acquire()
    plant(root, host="gpu-node-7", pid=4242, expires_at=time.time() - 5)
    with held(root, ttl_s=60.0):
        assert read_holder(root).host != "gpu-node-7"
    assert "its lease expired 5 s ago" in capsys.readouterr().err


def test_the_holder_renews_its_lease_while_it_runs(root):
    with held(root, ttl_s=1.5) as lease:
        first = read_holder(root).expires_at
        time.sleep(1.2)
        renewed = read_holder(root)
        assert renewed.token == lease.holder.token and renewed.expires_at > first
        assert stale_reason(renewed, now=time.time()) == "it is this process"


def test_a_torn_lease_is_no_lease(root):
    storage.write_bytes(root.join(LEASE_NAME), b'{"host": "a", "pid"')
    with held(root, ttl_s=60.0) as lease:
        assert read_holder(root).token == lease.holder.token


# -- through the CLI -------------------------------------------------------------------------
def prepare_command(tmp_path: Path, tokenizer_dir: Path, c4_inputs: dict, out: str) -> list[str]:
    from colorfilter.config import save_resolved
    from tests.pipeline.test_prepare import make_config

    config = make_config(tmp_path, tokenizer_dir, c4_inputs, **{"prepare.rows_per_shard": 4})
    path = save_resolved(replace(config, output_dir=str(tmp_path / "out")))
    return [sys.executable, "-m", "colorfilter", "prepare", str(path), "--set",
            f"output_dir={out}"]


def wait_for_lease(root: storage.Location, timeout_s: float = 60) -> None:
    deadline = time.time() + timeout_s
    while not storage.exists(root.join(LEASE_NAME)):
        assert time.time() < deadline, "the first run never took the lease"
        time.sleep(0.05)


@pytest.mark.parametrize("where", ["local", "s3"])
def test_a_second_run_into_a_held_folder_is_refused_and_kill_9_then_rerun_continues(
    where, tmp_path, tokenizer_dir, c4_inputs, request
):
    out = (str(tmp_path / "out") if where == "local"
           else request.getfixturevalue("s3_bucket").join("out").url)
    root = storage.Location.parse(out)
    command = prepare_command(tmp_path, tokenizer_dir, c4_inputs, out)
    first = subprocess.Popen(command, env=cli_env(), stdout=subprocess.PIPE,
                             stderr=subprocess.PIPE, text=True)
    wait_for_lease(root)
    second = subprocess.run(command, env=cli_env(), capture_output=True, text=True, timeout=120)
    assert second.returncode == EXIT_USAGE, second.stderr
    assert second.stderr.count("\n") == 1
    assert f"in use by another run (host {os.uname().nodename}, pid {first.pid}" in second.stderr
    first.send_signal(signal.SIGKILL)  # kill -9: the lease stays behind
    first.communicate()
    holder = json.loads(storage.read_bytes(root.join(LEASE_NAME)))
    assert holder["pid"] == first.pid
    start = time.perf_counter()
    rerun = subprocess.run(command, env=cli_env(), capture_output=True, text=True, timeout=300)
    assert rerun.returncode == 0, rerun.stderr
    assert f"taking over the lease of {root.url}" in rerun.stderr
    assert "its process is gone" in rerun.stderr
    assert time.perf_counter() - start < 60 * 2  # no wait for the 60 s TTL on top of the work
    assert not storage.exists(root.join(LEASE_NAME))  # released at the end
