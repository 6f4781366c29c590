"""Run the pipeline on a Ray cluster through the Ray Jobs API: submit, follow, inspect, stop.

A job ships the working directory (this repo: code, configs, small data) to the cluster and runs
`python -m pipelines.<stage> CONFIG --set ...` there as the job's driver, which joins the
cluster (see colorfilter.cli.job_main). Paths in the config, output_dir above all, are read ON the
cluster: relative ones land in the job's temporary copy of the working dir, so give a shared
absolute path (NFS, Lustre) for outputs you want to keep. See docs/ray_jobs.md.

Ray is imported only inside the functions that talk to a cluster.
"""

from __future__ import annotations

import os
import shlex
import sys
import time
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, TextIO

from colorfilter.errors import EXIT_FAILURE, EXIT_USAGE, ColorFilterError, ConfigError
from colorfilter.io.faults import first_line
from colorfilter.pipeline.cluster import DEFAULT_CONNECT_TIMEOUT_S, check_dashboard

RUN_ALL = "run"  # the whole pipeline (pipelines/run_all.py)

# gitignore-style patterns, relative to the working dir, that never travel with a job: venvs,
# outputs, VCS metadata and caches (Ray refuses working dirs over ~500 MiB).
DEFAULT_EXCLUDES = [
    ".git",
    "/.venv",
    "/.venv-*",
    "/outputs",
    "__pycache__",
    "*.egg-info",
    ".pytest_cache",
    ".ruff_cache",
    ".hypothesis",
    ".cache",
    "/build",
    "/dist",
    "/.whl",
]

TERMINAL_STATUSES = ("SUCCEEDED", "FAILED", "STOPPED")


class JobError(ColorFilterError):
    """A job could not be submitted or inspected."""

    exit_code = EXIT_FAILURE


class ClusterUnreachableError(JobError):
    """No Ray dashboard answers at the address (wrong host/port, or the cluster is down)."""

    exit_code = EXIT_USAGE


class JobNotFoundError(JobError):
    """The cluster knows no job with this id."""

    exit_code = EXIT_USAGE


class JobFailedError(JobError):
    """The job ended FAILED or STOPPED."""

    exit_code = EXIT_FAILURE


def _stderr(message: str) -> None:
    print(message, file=sys.stderr, flush=True)


def stage_module(stage: str) -> str:
    """The entry point module for a stage name as the CLI spells it (`train-prior`, `run`)."""
    from colorfilter.pipeline.stages import STAGES

    if stage == RUN_ALL:
        return "pipelines.run_all"
    if stage not in STAGES:
        raise ConfigError(f"unknown stage {stage!r}; stages: {RUN_ALL}, {', '.join(STAGES)}")
    return "pipelines." + stage.replace("-", "_")


def build_entrypoint(
    config_rel: str,
    overrides: list[str],
    *,
    stage: str = RUN_ALL,
    python: str | None = None,
    overwrite: bool = False,
) -> str:
    """The shell command the job runs, every argument quoted."""
    argv = [python or "python", "-m", stage_module(stage), config_rel]
    for override in overrides:
        argv += ["--set", override]
    if overwrite:
        argv.append("--overwrite")
    return shlex.join(argv)


def build_runtime_env(
    working_dir: str | Path,
    *,
    env_vars: dict[str, str] | None = None,
    pip: list[str] | str | None = None,
    python: str | None = None,
    excludes: list[str] | None = None,
) -> dict[str, Any]:
    """Ray runtime env: the working dir (minus DEFAULT_EXCLUDES), env vars, and either pip
    packages installed per job or an existing interpreter on the cluster (`py_executable`)."""
    if pip and python:
        raise ConfigError("give either pip requirements or a cluster python, not both")
    env: dict[str, Any] = {
        "working_dir": str(working_dir),
        "excludes": DEFAULT_EXCLUDES + list(excludes or []),
    }
    if env_vars:
        env["env_vars"] = {str(k): str(v) for k, v in env_vars.items()}
    if pip:
        env["pip"] = pip
    if python:
        env["py_executable"] = python  # Ray's workers use the same interpreter as the driver
    return env


def config_in_working_dir(config_path: str | Path, working_dir: str | Path) -> str:
    """The config's path relative to the working dir: the only place the job can read it."""
    config, root = Path(config_path).resolve(), Path(working_dir).resolve()
    if not config.is_file():
        raise ConfigError(f"config file not found: {config_path}")
    try:
        return config.relative_to(root).as_posix()
    except ValueError:
        raise ConfigError(
            f"config {config_path} is outside the working dir {root}: the job could not read "
            "it; move it under the working dir or pass --working-dir"
        ) from None


def submission_warnings(config: Any) -> list[str]:
    """Things that work locally but surprise on a cluster."""
    notes = []
    if "://" not in config.output_dir and not Path(config.output_dir).is_absolute():
        notes.append(
            f"output_dir {config.output_dir!r} is relative: on the cluster it lands in the job's "
            "temporary copy of the working dir; use an absolute path on a shared filesystem"
        )
    if config.ray.address not in (None, "auto"):
        notes.append(f"ray.address={config.ray.address!r} is used as is inside the job")
    return notes


def client(address: str | None, connect_timeout_s: float = DEFAULT_CONNECT_TIMEOUT_S) -> Any:
    """A JobSubmissionClient for `http://HEAD:8265` (None: $RAY_ADDRESS), or a clear error:
    an address where nothing answers fails within `connect_timeout_s` naming it."""
    try:
        from ray.job_submission import JobSubmissionClient
    except ImportError as exc:
        raise JobError(
            f"the Ray Jobs client is missing ({exc}): pip install 'ray[default]'"
        ) from exc
    target = address or os.environ.get("RAY_ADDRESS")
    if target:
        try:
            check_dashboard(target, connect_timeout_s)
        except ConfigError as exc:
            raise ClusterUnreachableError(str(exc)) from None
    try:
        return JobSubmissionClient(address)
    except Exception as exc:  # noqa: BLE001 - refused, an HTTP error, no Jobs API: all mean
        # "no Ray cluster at this address"
        raise ClusterUnreachableError(
            f"no Ray cluster answers at {address or '$RAY_ADDRESS'} ({first_line(exc)}); give the "
            "dashboard address, e.g. --address http://HEAD:8265, and check that the head is up"
        ) from None


def _request(job_id: str, call: Callable[[], Any]) -> Any:
    """Run a client call, turning Ray's RuntimeError/ConnectionError into our errors."""
    try:
        return call()
    except ConnectionError as exc:
        raise ClusterUnreachableError(f"lost the connection to the Ray cluster: {exc}") from exc
    except RuntimeError as exc:
        if "404" in str(exc) or "does not exist" in str(exc):
            raise JobNotFoundError(f"no job {job_id!r} on this cluster") from exc
        raise JobError(f"job {job_id}: {exc}") from exc


@dataclass(frozen=True)
class JobRequest:
    """What `colorfilter submit` sends: the config (and overrides), where, which stage, and the
    job's environment and resources."""

    config_path: str | Path
    address: str | None
    overrides: tuple[str, ...] = ()
    stage: str = RUN_ALL
    working_dir: str | Path = "."
    env_vars: dict[str, str] = field(default_factory=dict)
    pip: list[str] | str | None = None  # packages, or a requirements.txt
    python: str | None = None  # an interpreter already on the nodes (instead of pip)
    excludes: list[str] | None = None
    overwrite: bool = False
    entrypoint_num_gpus: float = 0
    entrypoint_num_cpus: float | None = None
    submission_id: str | None = None


def submit(
    request: JobRequest,
    *,
    no_wait: bool = False,
    echo: Callable[[str], None] = _stderr,
    out: TextIO | None = None,
) -> str:
    """Submit one stage (or the whole pipeline) as a Ray job and return its id.

    The config and overrides are checked here first, so a typo fails before anything is
    uploaded. Unless `no_wait`, the job's logs stream to `out` (stdout) until it ends, and a job
    that ends FAILED or STOPPED raises JobFailedError (exit code 1).
    """
    from colorfilter.config import load_config

    r = request
    overrides = list(r.overrides)
    config = load_config(r.config_path, overrides)  # fail fast on a bad config or override
    config_rel = config_in_working_dir(r.config_path, r.working_dir)
    entrypoint = build_entrypoint(
        config_rel, overrides, stage=r.stage, python=r.python, overwrite=r.overwrite
    )
    runtime_env = build_runtime_env(
        r.working_dir, env_vars=r.env_vars, pip=r.pip, python=r.python, excludes=r.excludes
    )
    for note in submission_warnings(config):
        echo(f"warning: {note}")
    address = r.address
    jobs = client(address, config.ray.connect_timeout_s)
    job_id = _request(
        r.submission_id or "(new)",
        lambda: jobs.submit_job(
            entrypoint=entrypoint,
            runtime_env=runtime_env,
            submission_id=r.submission_id,
            metadata={"colorfilter_stage": r.stage, "colorfilter_config": config_rel},
            entrypoint_num_cpus=r.entrypoint_num_cpus,
            entrypoint_num_gpus=r.entrypoint_num_gpus or None,
        ),
    )
    echo(f"submitted job {job_id}: {entrypoint}")
    if no_wait:
        echo(f"follow it with: colorfilter jobs logs {job_id} --address {jobs.get_address()}")
        return job_id
    timeout_s = config.ray.connect_timeout_s
    status = follow_logs(address, job_id, out=out, echo=echo, connect_timeout_s=timeout_s)
    if status != "SUCCEEDED":
        info = job_status(address, job_id, connect_timeout_s=timeout_s)
        raise JobFailedError(
            f"job {job_id} ended {status}: {info.get('message') or 'no message'} "
            f"(full logs: colorfilter jobs logs {job_id})"
        )
    return job_id


def follow_logs(
    address: str | None,
    job_id: str,
    *,
    out: TextIO | None = None,
    echo: Callable[[str], None] = _stderr,
    poll_s: float = 2.0,
    connect_timeout_s: float = DEFAULT_CONNECT_TIMEOUT_S,
) -> str:
    """Stream a job's logs to `out` until it ends; return its final status (e.g. SUCCEEDED).

    Uses the dashboard's log websocket; if that drops, polls the full log and prints what is new.
    Ctrl-C stops following only: the job keeps running on the cluster.
    """
    import asyncio

    out = out or sys.stdout
    jobs = client(address, connect_timeout_s)
    _request(job_id, lambda: jobs.get_job_info(job_id))  # a clear error for an unknown id
    printed = [0]  # characters written so far, kept if the stream drops midway
    try:
        try:
            asyncio.run(_tail(jobs, job_id, out, printed))
        except Exception as exc:  # any websocket failure (aiohttp, Ray's RuntimeError): poll
            echo(f"log stream dropped ({exc}); polling instead")
        return _poll_until_done(jobs, job_id, out, printed[0], poll_s)
    except KeyboardInterrupt:
        echo(f"stopped following; job {job_id} keeps running (colorfilter jobs stop {job_id})")
        raise


async def _tail(jobs: Any, job_id: str, out: TextIO, printed: list[int]) -> None:
    async for chunk in jobs.tail_job_logs(job_id):
        out.write(chunk)
        out.flush()
        printed[0] += len(chunk)


def _poll_until_done(jobs: Any, job_id: str, out: TextIO, printed: int, poll_s: float) -> str:
    """Wait for a terminal status, printing log text past the first `printed` characters."""
    while True:
        status = str(_request(job_id, lambda: jobs.get_job_status(job_id)))
        logs = _request(job_id, lambda: jobs.get_job_logs(job_id)) or ""
        if len(logs) > printed:
            out.write(logs[printed:])
            out.flush()
            printed = len(logs)
        if status in TERMINAL_STATUSES:
            return status
        time.sleep(poll_s)


def job_status(
    address: str | None, job_id: str, connect_timeout_s: float = DEFAULT_CONNECT_TIMEOUT_S
) -> dict[str, Any]:
    """Status, message, entrypoint and times of one job, as plain JSON-able data."""
    jobs = client(address, connect_timeout_s)
    info = _request(job_id, lambda: jobs.get_job_info(job_id))
    return {
        "job_id": job_id,
        "status": str(info.status),
        "message": info.message,
        "entrypoint": info.entrypoint,
        "start_time": info.start_time,
        "end_time": info.end_time,
        "metadata": dict(info.metadata or {}),
    }


def job_logs(
    address: str | None, job_id: str, connect_timeout_s: float = DEFAULT_CONNECT_TIMEOUT_S
) -> str:
    """Everything the job's driver has printed so far."""
    jobs = client(address, connect_timeout_s)
    return _request(job_id, lambda: jobs.get_job_logs(job_id))


def stop_job(
    address: str | None, job_id: str, *, wait: bool = True, timeout_s: float = 60.0,
    connect_timeout_s: float = DEFAULT_CONNECT_TIMEOUT_S,
) -> str:
    """Ask the cluster to stop a job (SIGTERM, then SIGKILL); return its status afterwards."""
    jobs = client(address, connect_timeout_s)
    _request(job_id, lambda: jobs.stop_job(job_id))
    deadline = time.monotonic() + timeout_s
    status = str(_request(job_id, lambda: jobs.get_job_status(job_id)))
    while wait and status not in TERMINAL_STATUSES and time.monotonic() < deadline:
        time.sleep(1.0)
        status = str(_request(job_id, lambda: jobs.get_job_status(job_id)))
    return status
