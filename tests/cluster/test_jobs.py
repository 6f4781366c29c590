"""Job submission pieces that need no cluster: entrypoint, runtime env, paths, errors."""

from __future__ import annotations

import shlex
import time

import pytest

from colorfilter import jobs
from colorfilter.errors import EXIT_USAGE, ConfigError
from tests.cluster.conftest import free_port


def test_entrypoint_quotes_every_override_and_picks_the_stage_module():
    command = jobs.build_entrypoint(
        "configs/demo.yaml", ["data.pool=[a b.jsonl]", "selection.tau=[16]"],
        stage="train-prior", python="/opt/venv/bin/python", overwrite=True,
    )  # fmt: skip
    assert shlex.split(command) == [
        "/opt/venv/bin/python", "-m", "pipelines.train_prior", "configs/demo.yaml",
        "--set", "data.pool=[a b.jsonl]", "--set", "selection.tau=[16]", "--overwrite",
    ]  # fmt: skip
    assert shlex.split(jobs.build_entrypoint("c.yaml", []))[:3] == [
        "python",
        "-m",
        "pipelines.run_all",
    ]


def test_every_stage_has_an_importable_entry_module():
    import importlib

    from colorfilter.pipeline.stages import STAGES

    for stage in [jobs.RUN_ALL, *(s for s in STAGES if STAGES[s] is not None)]:
        importlib.import_module(jobs.stage_module(stage))
    with pytest.raises(ConfigError, match="unknown stage"):
        jobs.stage_module("train")


def test_runtime_env_excludes_venvs_and_outputs_and_takes_pip_or_python(tmp_path):
    env = jobs.build_runtime_env(tmp_path, env_vars={"A": 1}, pip=["zstandard"], excludes=["big/"])
    assert env["working_dir"] == str(tmp_path) and env["pip"] == ["zstandard"]
    assert env["env_vars"] == {"A": "1"}
    assert {"/.venv", "/outputs", ".git", "big/"} <= set(env["excludes"])
    env = jobs.build_runtime_env(tmp_path, python="/opt/venv/bin/python")
    assert env["py_executable"] == "/opt/venv/bin/python" and "pip" not in env
    with pytest.raises(ConfigError, match="either pip"):
        jobs.build_runtime_env(tmp_path, pip=["x"], python="/opt/venv/bin/python")


def test_config_must_live_inside_the_working_dir(tmp_path):
    inside = tmp_path / "work" / "configs" / "x.yaml"
    inside.parent.mkdir(parents=True)
    inside.write_text("seed: 1\n")
    assert jobs.config_in_working_dir(inside, tmp_path / "work") == "configs/x.yaml"
    with pytest.raises(ConfigError, match="outside the working dir"):
        jobs.config_in_working_dir(inside, tmp_path / "elsewhere")
    with pytest.raises(ConfigError, match="not found"):
        jobs.config_in_working_dir(tmp_path / "work" / "missing.yaml", tmp_path / "work")


def test_bad_override_fails_before_contacting_any_cluster(tmp_path):
    config = tmp_path / "c.yaml"
    config.write_text("seed: 1\n")
    address = f"http://127.0.0.1:{free_port()}"  # nothing listens: would fail differently
    with pytest.raises(ConfigError):
        jobs.submit(jobs.JobRequest(config, address, ("no_such_key=1",), working_dir=tmp_path))


def test_unreachable_cluster_is_a_clear_usage_error(tmp_path):
    config = tmp_path / "c.yaml"
    # a short connect timeout: the default (30 s) is what the bound is, not what is tested here
    config.write_text(f"output_dir: {tmp_path / 'out'}\nray:\n  connect_timeout_s: 2\n")
    address = f"http://127.0.0.1:{free_port()}"
    start = time.perf_counter()
    with pytest.raises(jobs.ClusterUnreachableError, match="no Ray cluster answers") as caught:
        jobs.submit(jobs.JobRequest(config, address, working_dir=tmp_path), echo=lambda _: None)
    assert caught.value.exit_code == EXIT_USAGE
    with pytest.raises(jobs.ClusterUnreachableError, match="within 2 s"):
        jobs.job_status(address, "raysubmit_x", connect_timeout_s=2.0)
    assert time.perf_counter() - start < 20


def test_relative_output_dir_is_flagged():
    from colorfilter.config import load_config

    notes = jobs.submission_warnings(load_config(None, ["output_dir=outputs/x"]))
    assert any("relative" in note for note in notes)
    assert not jobs.submission_warnings(load_config(None, ["output_dir=/shared/x"]))
