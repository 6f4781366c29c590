"""Every user error is caught before work starts, named, with its exit code, never a traceback.

One case per class of error: names from fixed sets, ranges, duplicate YAML keys, empty overrides,
a data file given as the config, the device, output_dir, object-storage URLs, errors raised in a
real Ray actor, unexpected errors (one line and a log file), and empty or unusable input data.
Config errors run in-process (typer's CliRunner); a real process is used only where a traceback
could only show there.
"""

from __future__ import annotations

import gzip
import json
import os
import subprocess
import sys
from pathlib import Path

import pytest
from typer.testing import CliRunner

from colorfilter.cli import app
from colorfilter.errors import EXIT_BAD_DATA, EXIT_FAILURE, EXIT_USAGE, ConfigError
from colorfilter.reporting import find_user_error, report_error
from tests.conftest import sample_documents, write_jsonl

ROOT = Path(__file__).resolve().parents[1]
runner = CliRunner()


def invoke(args: list[str]):
    """Run the CLI in-process; assert nothing escaped it (an escaped error would be a traceback)."""
    result = runner.invoke(app, args)
    assert result.exception is None or isinstance(result.exception, SystemExit), result.exception
    assert "Traceback" not in result.output
    return result


def write_config(tmp_path: Path, text: str = "") -> Path:
    path = tmp_path / "c.yaml"
    path.write_text(f"output_dir: {tmp_path / 'out'}\nexecutor: local\n{text}")
    return path


# ------------------------------------------------------------------------- the config at load


@pytest.mark.parametrize(
    ("override", "named"),
    [
        # names from fixed sets
        ("selection.methods=[colr]", "selection.methods[0] must be one of color,"),
        ("evaluate.methods=[color, oracle]", "evaluate.methods[1] must be one of"),
        ("evaluate.methods=[label_oracle]", "label_oracle needs evaluate.target_source"),
        ("score.backend=tpu", "score.backend must be one of torch, vllm; got 'tpu'"),
        ("prior.preset=olmo-1b", "prior.preset must be one of micro, mini, olmo-150m, tiny"),
        ("evaluate.preset=huge", "evaluate.preset must be one of"),
        ("device=gpu", "device must be auto, cpu, cuda or cuda:N, got 'gpu'"),
        ("executor=dask", "executor must be one of ray, local; got 'dask'"),
        ("data.format=xml", "data.format must be one of"),
        ("prior.dtype=fp8", "prior.dtype must be one of"),
        # ranges
        ("selection.tau=.nan", "selection.tau must be >= 1 and finite (keep 1 in tau), got [nan]"),
        ("selection.tau=[16, .inf]", "selection.tau must be >= 1 and finite"),
        ("selection.tau=[]", "selection.tau must list at least one tau, got []"),
        ("selection.tau=0.5", "selection.tau must be >= 1"),
        ("selection.temperature=0", "selection.temperature must be a finite number > 0, got 0.0"),
        ("selection.block_n=0", "selection.block_n must be >= 1, got 0"),
        ("selection.min_chunks=0", "selection.min_chunks must be >= 1, got 0"),
        ("selection.output.rows_per_shard=0", "selection.output.rows_per_shard must be >= 1"),
        ("prepare.rows_per_shard=0", "prepare.rows_per_shard must be >= 1, got 0"),
        ("prepare.worker_cpus=0", "prepare.worker_cpus must be a finite number > 0"),
        ("score.batch_size=0", "score.batch_size must be >= 1, got 0"),
        ("prior.batch_size=0", "prior.batch_size must be >= 1, got 0"),
        ("prior.token_budget=0", "prior.token_budget must be >= 1, got 0"),
        ("conditional.lr=-1", "conditional.lr must be a finite number > 0"),
        ("conditional.epochs=0", "conditional.epochs must be >= 1, got 0"),
        ("evaluate.workers=0", "evaluate.workers must be >= 1, got 0"),
        ("evaluate.taus=[]", "evaluate.taus must list at least one tau"),
        ("data.max_bad_fraction=2", "data.max_bad_fraction must be within [0, 1], got 2.0"),
        ("ray.object_store_memory_mb=10", "ray.object_store_memory_mb must be >= 75, got 10"),
        ("seq_len=1", "seq_len must be >= 2, got 1"),
        # empty values, object storage
        ("data.pool=", "--set data.pool= has no value"),
        ("data.pool=['']", "data.pool[0] must be a path, got ''"),
        ("output_dir=''", "output_dir must be a path, got ''"),
        ("output_dir=ftp://bucket/run", "output_dir = 'ftp://bucket/run': ftp:// is not supported"),
        ("output_dir=hf://datasets/org/out", "output_dir = 'hf://datasets/org/out': hf:// is not"),
        ("data.pool=[ftp://bucket/c4/*.json.gz]", "data.pool[0] = 'ftp://bucket/c4/*.json.gz'"),
    ],
)
def test_config_errors_name_the_key_and_exit_2(tmp_path, override, named):
    result = invoke(["prepare", str(write_config(tmp_path)), "--set", override])
    assert result.exit_code == EXIT_USAGE, result.output
    assert f"error: {named}" in result.output or named in result.output
    assert not (tmp_path / "out").exists()  # refused before any work


def test_every_problem_of_a_config_is_reported_at_once(tmp_path):
    config = write_config(tmp_path, "seq_len: 1\nselection:\n  tau: [0]\n  block_n: 0\n")
    result = invoke(["run", str(config), "--set", "score.backend=tpu"])
    assert result.exit_code == EXIT_USAGE
    assert "4 config problems" in result.output
    for key in ("seq_len", "selection.tau", "selection.block_n", "score.backend"):
        assert f"\n  {key} must be" in result.output


def test_name_sets_match_the_registries():
    from colorfilter.evaluation.oracle import LABEL_ORACLE
    from colorfilter.names import EVALUATE_METHODS, SELECTION_METHODS
    from colorfilter.selection import METHODS

    assert set(SELECTION_METHODS) == set(METHODS)
    assert set(EVALUATE_METHODS) == {*METHODS, LABEL_ORACLE}


def test_duplicate_yaml_key_names_file_key_and_lines(tmp_path):
    config = write_config(tmp_path, "selection:\n  tau: [16]\n  block_n: 8\n  tau: [4]\n")
    result = invoke(["prepare", str(config)])
    assert result.exit_code == EXIT_USAGE
    assert f"{config}: duplicate key: key 'tau' on line 6 is already set on line 4" in result.output


def test_a_data_file_given_as_the_config_is_one_line(tmp_path):
    data = tmp_path / "pool.json.gz"
    data.write_bytes(gzip.compress(b'{"text": "hello"}\n'))
    result = invoke(["prepare", str(data)])
    assert result.exit_code == EXIT_USAGE
    assert f"error: {data}: not a YAML config (not UTF-8 text" in result.output
    assert len(result.output.strip().splitlines()) == 1


def test_a_jsonl_file_given_as_the_config_names_it(tmp_path):
    data = write_jsonl(tmp_path / "pool.jsonl", [{"text": "a"}, {"text": "b"}])
    result = invoke(["prepare", str(data)])
    assert result.exit_code == EXIT_USAGE and str(data) in result.output


def test_missing_gpu_is_refused_at_load(tmp_path):
    import torch

    gpus = torch.cuda.device_count() if torch.cuda.is_available() else 0
    config = str(write_config(tmp_path))
    result = invoke(["prepare", config, "--set", f"device=cuda:{gpus + 7}"])
    assert result.exit_code == EXIT_USAGE
    assert f"device='cuda:{gpus + 7}' but" in result.output
    if gpus == 0:
        result = invoke(["prepare", config, "--set", "device=cuda"])
        assert result.exit_code == EXIT_USAGE
        assert "device='cuda' but no CUDA GPU is visible" in result.output


def test_output_dir_below_a_file_is_refused(tmp_path):
    (tmp_path / "afile").write_text("x")
    config = str(write_config(tmp_path))
    result = invoke(["prepare", config, "--set", f"output_dir={tmp_path / 'afile' / 'run'}"])
    assert result.exit_code == EXIT_USAGE
    assert f"is below the file {tmp_path / 'afile'}, not a directory" in result.output
    result = invoke(["prepare", config, "--set", f"output_dir={tmp_path / 'afile'}"])
    assert result.exit_code == EXIT_USAGE and "is a file, not a directory" in result.output


@pytest.mark.skipif(os.geteuid() == 0, reason="root may write anywhere")
def test_unwritable_output_dir_is_refused(tmp_path):
    locked = tmp_path / "locked"
    locked.mkdir(mode=0o500)
    result = invoke(["prepare", str(write_config(tmp_path)), "--set", f"output_dir={locked}"])
    assert result.exit_code == EXIT_USAGE and "cannot create or write there" in result.output


# ------------------------------------------------------------------------- errors while running


def buggy_stage(config, overwrite):
    raise ZeroDivisionError("a bug in a stage")


def test_unexpected_error_is_one_line_and_a_log_file(tmp_path, monkeypatch):
    from colorfilter.pipeline import stages

    monkeypatch.setitem(stages.STAGES, "select", "tests.test_user_errors:buggy_stage")
    result = invoke(["select", str(write_config(tmp_path))])
    assert result.exit_code == EXIT_FAILURE
    logs = sorted((tmp_path / "out" / "logs").glob("error-*.log"))
    assert len(logs) == 1
    line = result.output.strip()
    assert line == (
        f"error: unexpected failure (ZeroDivisionError: a bug in a stage); full traceback in "
        f"{logs[0]}"
    )
    assert "Traceback" in logs[0].read_text() and "buggy_stage" in logs[0].read_text()


def test_errors_raised_in_a_real_ray_actor_are_their_one_line_message(ray_session, capsys):
    from colorfilter.config import RayConfig
    from colorfilter.pipeline.executor import WorkerSpec, map_tasks

    for factory, message in ((failing_task_worker, "task 1: no"), (failing_worker, "init: no")):
        spec = WorkerSpec(factory, num_cpus=0.5)
        with pytest.raises(Exception) as raised:  # noqa: PT011 - Ray's own wrapper types
            list(
                map_tasks(
                    spec,
                    [1],
                    executor="ray",
                    num_workers=1,
                    ray_cfg=RayConfig(),
                )  # fmt: skip
            )
        assert str(raised.value) == message  # the worker's own error, not the remote stack
        ours = find_user_error(raised.value)
        assert ours is not None and ours.exit_code == EXIT_USAGE
        assert report_error(raised.value) == EXIT_USAGE
        assert capsys.readouterr().err == f"error: {message}\n"


def failing_worker():
    raise ConfigError("init: no")


def failing_task_worker():
    def worker(task):
        raise ConfigError(f"task {task}: no")

    return worker


def run_module(args: list[str], cwd: Path) -> subprocess.CompletedProcess:
    env = {**os.environ, "PYTHONPATH": str(ROOT)}
    env.pop("RAY_ADDRESS", None)  # a local Ray, not one a caller may have set
    return subprocess.run(
        [sys.executable, "-m", *args], capture_output=True, text=True, cwd=cwd, env=env,
        timeout=300, check=False,
    )  # fmt: skip


def test_config_error_inside_a_ray_actor_in_a_real_process(tmp_path, tokenizer_dir):
    import pyarrow as pa
    import pyarrow.parquet as pq

    pool = tmp_path / "pool.parquet"
    pq.write_table(pa.table({"content": ["some text"] * 4}), pool)  # no `text` column
    config = write_config(
        tmp_path,
        f"tokenizer: {tokenizer_dir}\nseq_len: 16\ndata:\n  pool: [{pool}]\n"
        "ray:\n  num_cpus: 1\n  object_store_memory_mb: 100\n"
        "",
    )
    result = run_module(["colorfilter", "prepare", str(config), "--set", "executor=ray"], tmp_path)
    assert result.returncode == EXIT_USAGE, result.stderr[-3000:]
    assert f"error: {pool}: no column 'text' (columns: content)" in result.stderr
    assert "Traceback" not in result.stderr + result.stdout


def test_job_entry_point_reports_like_the_cli(tmp_path):
    config = write_config(tmp_path, "selection:\n  temperature: 0\n")
    result = run_module(["pipelines.select", str(config)], ROOT)
    assert result.returncode == EXIT_USAGE
    assert result.stderr == "error: selection.temperature must be a finite number > 0, got 0.0\n"


# ------------------------------------------------------------------------- empty is loud


def prepare_config(tmp_path: Path, tokenizer_dir: Path, pool: list[Path], **data) -> Path:
    lines = [f"tokenizer: {tokenizer_dir}", "seq_len: 32", "data:"]
    lines.append(f"  pool: [{', '.join(str(p) for p in pool)}]")
    lines += [f"  {key}: {value}" for key, value in data.items()]
    return write_config(tmp_path, "\n".join(lines) + "\n")


def test_zero_byte_files_are_counted_skips(tmp_path, tokenizer_dir):
    records = [{"text": t} for t in sample_documents(12)]
    good = write_jsonl(tmp_path / "pool" / "a.jsonl", records)
    empty = [tmp_path / "pool" / name for name in ("b.jsonl.zst", "c.json.gz", "d.jsonl")]
    for path in empty:
        path.write_bytes(b"")
    config = prepare_config(tmp_path, tokenizer_dir, [good, *empty])
    result = invoke(["prepare", str(config)])
    assert result.exit_code == 0, result.output
    stats = json.loads((tmp_path / "out" / "tokens" / "pool" / "stats.json").read_text())
    assert stats["files_skipped"] == {"empty_file": 3} and stats["chunks"] > 0
    assert any(
        str(empty[0]) in sample and "empty_file" in sample for sample in stats["bad_samples"]
    )


def test_a_split_with_no_usable_record_fails_naming_its_files(tmp_path, tokenizer_dir):
    pool = write_jsonl(tmp_path / "pool.jsonl", [{"text": t} for t in sample_documents(12)])
    target = tmp_path / "target.jsonl"
    target.write_bytes(b"")
    config = prepare_config(tmp_path, tokenizer_dir, [pool], downstream_train=f"[{target}]")
    result = invoke(["prepare", str(config)])
    assert result.exit_code == EXIT_BAD_DATA
    assert f"error: data.downstream_train: no usable chunk in its 1 file(s) ({target})" in (
        result.output
    )
    # the next stage repeats what prepare found, instead of "run prepare first"
    result = invoke(["train-conditional", str(config)])
    assert result.exit_code == EXIT_USAGE
    assert "run `colorfilter prepare` first" not in result.output
    assert f"prepare made no downstream_train token shards (data.downstream_train: no usable " \
        f"chunk in its 1 file(s) ({target})" in result.output  # fmt: skip


def test_a_pool_of_unreadable_records_fails_in_prepare(tmp_path, tokenizer_dir):
    bad = tmp_path / "pool.jsonl"
    bad.write_text("not json\n{also not json\n")
    config = prepare_config(tmp_path, tokenizer_dir, [bad], max_bad_fraction=1.0)
    result = invoke(["prepare", str(config)])
    assert result.exit_code == EXIT_BAD_DATA
    assert f"data.pool: no usable chunk in its 1 file(s) ({bad})" in result.output
    assert "malformed_json" in result.output
    result = invoke(["select", str(config)])
    assert result.exit_code == EXIT_USAGE and str(bad) in result.output


def test_tau_larger_than_the_pool_is_refused_naming_both(tmp_path):
    from tests.dataset import synthetic

    pool = synthetic.build_pool(tmp_path / "run", n_files=1, docs_per_file=4)
    config = tmp_path / "c.yaml"
    config.write_text(f"output_dir: {tmp_path / 'run'}\nseq_len: {pool.seq_len}\n")
    n = pool.n_rows
    result = invoke(["select", str(config), "--set", f"selection.tau=[2, {n + 1}]"])
    assert result.exit_code == EXIT_USAGE
    assert (
        f"selection.tau=[{n + 1}] keeps fewer than selection.min_chunks=1 of the pool's {n} "
        "chunks" in result.output
    )
    assert not (tmp_path / "run" / "selected").exists()  # refused before writing anything
    result = invoke(["select", str(config), "--set", "selection.tau=[2]", "--set",
                     f"selection.min_chunks={n}"])  # fmt: skip
    assert result.exit_code == EXIT_USAGE and "use a tau <= 1," in result.output
    # a tau the pool holds: now the data is checked, and this pool has a chunk without a score
    result = invoke(["select", str(config), "--set", "selection.tau=[2]"])
    assert result.exit_code == EXIT_BAD_DATA
    assert f"hold {n - len(pool.unscored)} rows for {n} chunks" in result.output
    assert "rerun `colorfilter score`" in result.output
