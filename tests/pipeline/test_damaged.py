"""Damaged run folders: each damaged file fails the stage that reads it at once, with one line
naming the file and the stage to rerun (exit 3), never a retry, a repr or "unexpected failure";
no wrong output is written; rerunning the named stage repairs it.

A finished run (prepare, two random micro models, score, select) is built once; each test
damages a copy and runs the real CLI on it (`python -m colorfilter`, executor=local).
"""

from __future__ import annotations

import resource
import shutil
import subprocess
import time
from dataclasses import replace
from pathlib import Path

import pytest

from colorfilter.config import save_resolved
from colorfilter.errors import EXIT_BAD_DATA, EXIT_USAGE, DamagedDataError
from colorfilter.pipeline.stages import run_stage
from tests.conftest import write_c4_inputs
from tests.pipeline.test_resume import build_scored_run, cli_command, cli_env

FLIP_FROM, FLIP_TO = 60, 200  # bytes XOR-ed in "altered" files: inside the first data page


@pytest.fixture(scope="module")
def finished_run(tmp_path_factory, tokenizer_dir):
    root = tmp_path_factory.mktemp("damaged")
    config = build_scored_run(root, tokenizer_dir, write_c4_inputs(root))
    run_stage("select", config)
    return config


@pytest.fixture
def run_copy(finished_run, tmp_path):
    """(config, its config.yaml) of a private copy of the finished run."""
    target = tmp_path / "run"
    shutil.copytree(finished_run.output_path, target)
    config = replace(finished_run, output_dir=str(target))
    return config, save_resolved(config)


def cli(stage: str, config_path: Path, *extra: str, limit_bytes: int | None = None):
    """(exit code, stderr without progress lines, seconds) of `colorfilter STAGE` on the copy."""
    def limit() -> None:  # a real EFBIG for writes past `limit_bytes` (Python ignores SIGXFSZ)
        resource.setrlimit(resource.RLIMIT_FSIZE, (limit_bytes, resource.RLIM_INFINITY))

    start = time.perf_counter()
    done = subprocess.run(
        [*cli_command(stage, config_path), "--set", "ray.retry_backoff_s=1", *extra],
        env=cli_env(), capture_output=True, text=True, timeout=300,
        preexec_fn=limit if limit_bytes else None,
    )  # fmt: skip
    lines = [line for line in done.stderr.splitlines() if not line.startswith("[")]
    return done.returncode, "\n".join(lines), time.perf_counter() - start


def truncate(path: Path) -> None:
    path.write_bytes(path.read_bytes()[: path.stat().st_size // 2])


def alter(path: Path) -> None:
    data = bytearray(path.read_bytes())
    data[FLIP_FROM:FLIP_TO] = bytes(b ^ 0x5A for b in data[FLIP_FROM:FLIP_TO])
    path.write_bytes(bytes(data))


def assert_one_line(err: str, *parts: str) -> None:
    last = err.strip().splitlines()[-1]
    assert last.startswith("error: ") and "unexpected" not in last, err
    for part in parts:
        assert part in last, err
    assert "Location(" not in err and "StorageConfig" not in err and "retry" not in err, err


def test_altered_score_shard_fails_select_at_once_naming_it(run_copy):
    config, path = run_copy
    shard = config.output_path / "scores" / "pool" / "00000-00001.parquet"
    alter(shard)
    shutil.rmtree(config.output_path / "selected")
    code, err, seconds = cli("select", path)
    assert code == EXIT_BAD_DATA
    assert_one_line(err, f"score shard {shard} is damaged", "rerun `colorfilter score`")
    assert not (config.output_path / "selected" / "color-tau4").exists()  # nothing wrong written
    assert seconds < 60
    # what the message says works: score redoes the shard (its sha256 no longer matches)
    assert cli("score", path)[0] == 0
    assert cli("select", path)[0] == 0
    assert (config.output_path / "selected" / "color-tau4" / "manifest.json").exists()


def test_truncated_token_shard_fails_score_naming_it_and_prepare_repairs_it(run_copy):
    config, path = run_copy
    shard = config.output_path / "tokens" / "pool" / "00001-00000.parquet"
    truncate(shard)
    code, err, _ = cli("score", path, "--overwrite")
    assert code == EXIT_BAD_DATA
    # checked against prepare's record before pyarrow reads it: the size says it
    assert_one_line(err, f"token shard {shard} is damaged", "its record says",
                    "rerun `colorfilter prepare`")
    assert cli("prepare", path)[0] == 0  # the unit's record no longer matches: redone
    assert cli("score", path, "--overwrite")[0] == 0


@pytest.mark.parametrize("name, damage, reason", [  # the model's record tells, before loading
    ("model.safetensors", truncate, "its record says"),
    ("model.safetensors", Path.unlink, "missing"),
    ("config.json", truncate, "its record says"),
])  # fmt: skip
def test_damaged_model_fails_score_naming_the_model(run_copy, name, damage, reason):
    config, path = run_copy
    damage(config.output_path / "models" / "prior" / name)
    code, err, _ = cli("score", path, "--overwrite")
    assert code == EXIT_BAD_DATA
    assert_one_line(err, "prior model", str(config.output_path / "models" / "prior"), reason,
                    "rerun `colorfilter train-prior`")


def test_damaged_tokenizer_fails_score_and_select_naming_it(run_copy):
    config, path = run_copy
    truncate(config.output_path / "tokenizer" / "tokenizer.json")
    for stage in ("score", "select"):
        code, err, _ = cli(stage, path, "--overwrite")
        assert code == EXIT_BAD_DATA, err
        assert_one_line(err, "the run's tokenizer", str(config.output_path / "tokenizer"),
                        "its record says", "rerun `colorfilter prepare`")


def test_damaged_saved_config_is_named_and_overwrite_replaces_it(run_copy):
    config, path = run_copy
    saved = config.output_path / "config.yaml"
    shutil.copy(saved, config.output_path.parent / "config.yaml")  # the command's own copy
    path = config.output_path.parent / "config.yaml"
    saved.write_text("seed: [1, 2\n  output_dir: {")
    code, err, _ = cli("select", path)
    assert code == EXIT_BAD_DATA
    assert_one_line(err, f"{saved} is damaged", "--overwrite")
    code, err, _ = cli("select", path, "--overwrite")
    assert code == 0, err
    assert "the saved config.yaml is damaged" in err and "removed" in err


def test_a_write_over_the_file_size_limit_fails_at_once_naming_the_file(run_copy):
    """EFBIG (as ENOSPC, EDQUOT) is not weather: no retry, one line naming the file, exit 2."""
    config, path = run_copy
    shutil.rmtree(config.output_path / "selected")
    code, err, _ = cli("select", path, limit_bytes=12_000)  # config.yaml fits, a dataset not
    assert code == EXIT_USAGE, err
    assert_one_line(err, "file too large", "a write by the map task on", "free space")
    assert not (config.output_path / "selected" / "color-tau4" / "manifest.json").exists()


def test_truncated_parquet_input_fails_prepare_naming_the_input(tmp_path, tokenizer_dir):
    import pyarrow as pa
    import pyarrow.parquet as pq

    from tests.pipeline.test_prepare import make_config

    good = tmp_path / "pool" / "a.parquet"
    good.parent.mkdir()
    pq.write_table(pa.table({"text": [f"document {i} " * 40 for i in range(50)]}), good)
    bad = tmp_path / "pool" / "b.parquet"
    shutil.copy(good, bad)
    truncate(bad)
    inputs = {"pool": [good, bad], "downstream_train": [good], "downstream_eval": [good]}
    config = make_config(tmp_path, tokenizer_dir, inputs, **{"data.source_field": "null"})
    with pytest.raises(DamagedDataError, match=f"input file {bad} is damaged") as caught:
        run_stage("prepare", config)
    assert caught.value.exit_code == EXIT_BAD_DATA and "replace it" in str(caught.value)


def test_altered_token_shard_read_by_a_ray_actor_fails_select_without_retries(
    run_copy, ray_session
):
    """The token shard is read only inside the select map tasks (on Ray actors): the damage
    found there comes back as the worker's one-line error, at once, naming the shard."""
    config, _ = run_copy
    config = replace(config, executor="ray")
    config.selection.num_workers, config.selection.worker_cpus = 1, 0.5
    config.ray.retry_backoff_s = 5.0  # a retry would show in the time taken
    shard = config.output_path / "tokens" / "pool" / "00000-00001.parquet"
    alter(shard)
    shutil.rmtree(config.output_path / "selected")
    start = time.perf_counter()
    with pytest.raises(DamagedDataError) as caught:
        run_stage("select", config)
    message = str(caught.value)
    assert message.startswith(f"token shard {shard} is damaged") and "\n" not in message
    assert time.perf_counter() - start < 60
    assert not (config.output_path / "selected" / "color-tau4" / "manifest.json").exists()
