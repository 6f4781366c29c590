"""Services at the edges: a bucket endpoint that goes down mid-stage (retried, then one line
naming the endpoint, exit 2), refused credentials, and cluster addresses nothing answers at
(a clear error naming the address within ray.connect_timeout_s), on real servers."""

from __future__ import annotations

import socket
import subprocess
import sys
import time
import uuid
from dataclasses import dataclass

import pytest

from colorfilter.config import RayConfig
from colorfilter.errors import EXIT_USAGE, ConfigError, ServiceError
from colorfilter.io import storage
from colorfilter.io.config import StorageConfig
from colorfilter.pipeline.cluster import check_ray_address, dashboard_target, probe_target
from colorfilter.pipeline.executor import WorkerSpec, map_tasks
from colorfilter.pipeline.retry import describe_task
from colorfilter.reporting import report_error
from tests.pipeline.test_resume import cli_env
from tests.s3_server import S3Server

FAST = RayConfig(max_task_attempts=2, retry_backoff_s=0.1, capacity_wait_s=5.0)


@dataclass(frozen=True)
class ReadTask:
    source: storage.Location


class ObjectReader:
    """Reads one object per task (through the storage layer, as the stages do)."""

    def __call__(self, task: ReadTask) -> int:
        return len(storage.read_bytes(task.source))


def closed_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return sock.getsockname()[1]


@pytest.fixture
def private_s3(s3_server):
    """A moto server of this test's own (the session one must stay up), stopped by the test."""
    from moto.server import ThreadedMotoServer

    server = ThreadedMotoServer(ip_address="127.0.0.1", port=0, verbose=False)
    server.start()
    host, port = server.get_host_and_port()
    endpoint = f"http://{host}:{port}"
    cfg = StorageConfig(endpoint_url=endpoint, retries=1, connect_timeout_s=1, read_timeout_s=2)
    root = storage.Location.parse(f"s3://faults-{uuid.uuid4().hex[:12]}", cfg)  # moto's
    # state is shared by every server of this process: a fresh bucket name per test
    S3Server(endpoint).make_bucket(root.bucket)
    yield server, endpoint, root
    server.stop()


@pytest.mark.parametrize("executor", ["local", "ray"])
def test_endpoint_down_mid_stage_is_retried_then_one_line_naming_it(
    executor, private_s3, ray_session, capsys
):
    server, endpoint, root = private_s3
    tasks = [ReadTask(root.join("out", "scores", "pool", f"{i:05d}.parquet")) for i in range(3)]
    for task in tasks:
        storage.write_bytes(task.source, b"x" * 10)
    spec = WorkerSpec(ObjectReader, num_cpus=0.5)
    assert sum(r for _, r in map_tasks(spec, tasks, executor=executor, num_workers=1,
                                       ray_cfg=FAST)) == 30
    server.stop()  # the bucket's endpoint goes down between two stages' worth of work
    with pytest.raises(ServiceError) as caught:
        list(map_tasks(spec, tasks, executor=executor, num_workers=1, ray_cfg=FAST))
    message = str(caught.value)
    assert caught.value.exit_code == EXIT_USAGE and "\n" not in message
    assert endpoint in message and "does not answer" in message and "after 2 attempts" in message
    assert message.startswith(f"read task on {tasks[0].source.url}")
    assert "StorageConfig" not in message and "Location(" not in message
    assert report_error(caught.value) == EXIT_USAGE
    assert capsys.readouterr().err.strip().splitlines()[-1] == f"error: {message}"


def test_a_task_is_described_by_its_files_not_its_repr():
    cfg = StorageConfig(endpoint_url="http://minio:9000")
    task = ReadTask(storage.Location.parse("s3://b/out/tokens/pool/00001-00000.parquet", cfg))
    assert describe_task(task) == "read task on s3://b/out/tokens/pool/00001-00000.parquet"


def test_refused_credentials_mid_stage_are_one_line_naming_s3(s3_bucket, capsys, monkeypatch):
    loc = s3_bucket.join("out", "scores", "pool", "x.parquet")
    storage.write_bytes(loc, b"x")
    from moto import settings

    monkeypatch.setattr(settings, "INITIAL_NO_AUTH_ACTION_COUNT", 0)  # keys now refused (403)
    spec = WorkerSpec(ObjectReader)
    start = time.perf_counter()
    with pytest.raises(Exception) as caught:  # fatal: no retry for a refusal
        list(map_tasks(spec, [ReadTask(loc)], executor="local", num_workers=1,
                       ray_cfg=RayConfig(max_task_attempts=3, retry_backoff_s=5.0)))
    assert time.perf_counter() - start < 5
    assert report_error(caught.value) == EXIT_USAGE
    line = capsys.readouterr().err.strip()
    assert line.startswith("error: the S3 endpoint") and "refused the credentials" in line
    assert "\n" not in line and "testing" not in line.replace("test-bucket", "")


def test_ray_addresses_resolve_as_ray_resolves_them():
    assert probe_target("ray://head.example:10001") == ("head.example", 10001)
    assert probe_target("ray://head.example") == ("head.example", 10001)
    host, port = probe_target("10.1.2.3:6379")
    assert (host, port) == ("10.1.2.3", 6379)
    assert dashboard_target("http://head:8265") == ("head", 8265)
    assert dashboard_target("https://head/") == ("head", 443)
    assert dashboard_target("head:8265") == ("head", 8265)


def test_an_address_nothing_answers_at_fails_within_the_timeout():
    port = closed_port()
    start = time.perf_counter()
    with pytest.raises(ConfigError, match=f"ray.address=127.0.0.1:{port}: no Ray cluster"):
        check_ray_address(f"127.0.0.1:{port}", timeout_s=2.0)
    assert 1.5 < time.perf_counter() - start < 10


def test_cli_with_an_unreachable_ray_address_exits_2_naming_it(tmp_path, tokenizer_dir,
                                                              c4_inputs):
    from colorfilter.config import save_resolved
    from tests.pipeline.test_prepare import make_config

    port = closed_port()
    config = make_config(tmp_path, tokenizer_dir, c4_inputs, executor="ray")
    command = [sys.executable, "-m", "colorfilter", "prepare", str(save_resolved(config)),
               "--set", f"ray.address=127.0.0.1:{port}", "--set", "ray.connect_timeout_s=3"]
    start = time.perf_counter()
    done = subprocess.run(command, env=cli_env(), capture_output=True, text=True, timeout=120)
    seconds = time.perf_counter() - start
    assert done.returncode == EXIT_USAGE, done.stderr
    last = done.stderr.strip().splitlines()[-1]
    assert last.startswith(f"error: ray.address=127.0.0.1:{port}: no Ray cluster answers")
    assert "within 3 s" in last and seconds < 60
    assert not (tmp_path / "out" / "tokens").exists()


def test_jobs_with_an_unreachable_dashboard_exit_2_naming_it():
    address = f"http://127.0.0.1:{closed_port()}"
    for command in (["status", "raysubmit_x"], ["logs", "raysubmit_x"], ["stop", "raysubmit_x"]):
        start = time.perf_counter()
        done = subprocess.run(
            [sys.executable, "-m", "colorfilter", "jobs", *command, "--address", address,
             "--connect-timeout", "2"], env=cli_env(), capture_output=True, text=True, timeout=60,
        )  # fmt: skip
        assert done.returncode == EXIT_USAGE, done.stderr
        assert done.stderr.startswith(f"error: no Ray cluster answers at {address}")
        assert done.stderr.count("\n") == 1 and time.perf_counter() - start < 30


@pytest.mark.slow
def test_a_port_that_is_no_ray_cluster_fails_in_bounded_time():
    """Something listens, but it is no GCS: Ray's own retry loop (~20 x 35 s) is cut to one
    attempt. In a subprocess: this process may hold the session's Ray."""
    code = (
        "import ray, sys\n"
        "from colorfilter.pipeline.cluster import join_cluster\n"
        "from colorfilter.errors import ConfigError\n"
        "try:\n"
        "    join_cluster(ray, sys.argv[1], timeout_s=2.0)\n"
        "except ConfigError as exc:\n"
        "    print(exc)\n"
    )
    with socket.socket() as server:
        server.bind(("0.0.0.0", 0))
        server.listen()
        address = f"127.0.0.1:{server.getsockname()[1]}"
        start = time.perf_counter()
        done = subprocess.run([sys.executable, "-c", code, address], env=cli_env(),
                              capture_output=True, text=True, timeout=300)
    assert done.stdout.startswith(f"ray.address={address}: could not join"), done.stderr
    assert time.perf_counter() - start < 120


def test_jobs_against_a_server_that_is_no_ray_dashboard_exit_2_naming_it():
    import http.server
    import threading

    server = http.server.ThreadingHTTPServer(("127.0.0.1", 0), http.server.BaseHTTPRequestHandler)
    thread = threading.Thread(target=server.serve_forever, daemon=True)
    thread.start()
    address = f"http://127.0.0.1:{server.server_address[1]}"
    try:
        done = subprocess.run(
            [sys.executable, "-m", "colorfilter", "jobs", "status", "raysubmit_x", "--address",
             address], env=cli_env(), capture_output=True, text=True, timeout=60,
        )  # fmt: skip
    finally:
        server.shutdown()
        server.server_close()
    assert done.returncode == EXIT_USAGE, done.stderr
    assert done.stderr.startswith(f"error: no Ray cluster answers at {address} (")
    assert done.stderr.count("\n") == 1
