"""The Ray job entry points `python -m pipelines.<stage>` are the `colorfilter` commands: the same
help and options, messages and exit codes, except that a job's driver joins the job's cluster.

Entry points run as real processes (a job runs `python -m` modules), started together so the
file takes seconds; the CLI side runs in-process where its output is the same."""

from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path

import pytest
import yaml
from typer.testing import CliRunner

from colorfilter import jobs
from colorfilter.cli import app, job_main
from colorfilter.errors import EXIT_USAGE
from colorfilter.pipeline.stages import STAGES

ROOT = Path(__file__).resolve().parents[1]
ENTRY_STAGES = [jobs.RUN_ALL, *(s for s in STAGES if STAGES[s] is not None)]


def start(*args: str, env: dict[str, str] | None = None) -> subprocess.Popen:
    """`python -m ARGS` outside any Ray job (unless `env` says so), 100 columns of help."""
    full = {**os.environ, "PYTHONPATH": str(ROOT), "COLUMNS": "100", **(env or {})}
    for key in ("RAY_ADDRESS", "RAY_JOB_CONFIG_JSON_ENV_VAR"):
        if key not in (env or {}):
            full.pop(key, None)
    return subprocess.Popen(
        [sys.executable, "-m", *args], cwd=ROOT, env=full, text=True,
        stdout=subprocess.PIPE, stderr=subprocess.PIPE,
    )  # fmt: skip


def finish(process: subprocess.Popen) -> tuple[int, str, str]:
    out, err = process.communicate(timeout=120)
    return process.returncode, out, err


def unpadded(text: str) -> str:
    return "\n".join(line.rstrip() for line in text.splitlines())


def write_config(tmp_path: Path, name: str = "c") -> Path:
    path = tmp_path / f"{name}.yaml"
    path.write_text(f"output_dir: {tmp_path / name}\nexecutor: local\nray:\n  num_cpus: 1\n")
    return path


def test_every_entry_point_has_its_commands_help_and_options():
    started = {stage: start(jobs.stage_module(stage), "--help") for stage in ENTRY_STAGES}
    for stage, entry in started.items():
        module = jobs.stage_module(stage)
        code, out, _ = finish(entry)
        cli = CliRunner().invoke(app, [stage, "--help"], env={"COLUMNS": "100"}, prog_name="cf")
        assert code == cli.exit_code == 0
        assert f"Usage: python -m {module} [OPTIONS]" in out
        assert unpadded(out) == unpadded(cli.output).replace(f"cf {stage} ", f"python -m {module} ")
        assert "--set" in out and "--overwrite" in out
        assert ("--stages" in out) == (stage == jobs.RUN_ALL)


def test_bad_override_is_the_clis_one_line_and_exit_code(tmp_path):
    config = str(write_config(tmp_path))
    entry = start("pipelines.score", config, "--set", "data.nope=1")
    cli = start("colorfilter", "score", config, "--set", "data.nope=1")
    (entry_code, entry_out, entry_err), (cli_code, _, cli_err) = finish(entry), finish(cli)
    assert entry_code == cli_code == EXIT_USAGE
    assert entry_err == cli_err and entry_err.startswith("error: ") and "data.nope" in entry_err
    assert entry_err.count("\n") == 1 and entry_out == ""


def test_a_jobs_driver_joins_the_jobs_cluster_unless_the_config_names_one(tmp_path):
    """Ray sets RAY_ADDRESS for a job's driver; `colorfilter submit` users export it too, so the
    CLI itself must not read it as "join". The saved config.yaml says which address ran."""
    in_job = {"RAY_ADDRESS": "127.0.0.1:1"}  # nothing is contacted: select stops before Ray
    runs = {
        "entry": start("pipelines.select", str(write_config(tmp_path, "entry")), env=in_job),
        "run_all": start(
            "pipelines.run_all", str(write_config(tmp_path, "run_all")), "--stages", "select",
            env=in_job,
        ),  # fmt: skip
        "named": start(
            "pipelines.select", str(write_config(tmp_path, "named")),
            "--set", "ray.address=ray://head:10001", env=in_job,
        ),  # fmt: skip
        "no_job": start("pipelines.select", str(write_config(tmp_path, "no_job"))),
        "cli": start("colorfilter", "select", str(write_config(tmp_path, "cli")), env=in_job),
    }
    addresses = {}
    for name, process in runs.items():
        code, _, err = finish(process)
        assert code == EXIT_USAGE and "no pool token shards" in err, err
        saved = yaml.safe_load((tmp_path / name / "config.yaml").read_text())
        addresses[name] = saved["ray"]["address"]
    assert addresses == {
        "entry": "auto", "run_all": "auto", "named": "ray://head:10001",
        "no_job": None, "cli": None,
    }  # fmt: skip


def test_errors_exit_with_the_clis_codes_in_process(tmp_path, capsys):
    config = str(write_config(tmp_path))
    with pytest.raises(SystemExit) as caught:
        job_main("run", [config, "--stages", "prepare,nope"])
    assert caught.value.code == EXIT_USAGE
    assert "unknown stage" in capsys.readouterr().err
    with pytest.raises(SystemExit) as caught:
        job_main("score", [config])  # nothing prepared: a ConfigError, not a traceback
    assert caught.value.code == EXIT_USAGE
    assert capsys.readouterr().err.startswith("error: ")
