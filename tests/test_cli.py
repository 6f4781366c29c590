"""The CLI: instant help with no heavy imports, clear exit codes for user errors."""

from __future__ import annotations

import subprocess
import sys

from typer.testing import CliRunner

from colorfilter.cli import app
from colorfilter.errors import EXIT_NOT_IMPLEMENTED, EXIT_USAGE

runner = CliRunner()


def test_help_imports_no_heavy_library():
    code = (
        "import sys, time; t = time.perf_counter(); import colorfilter.cli as c;"
        "from typer.testing import CliRunner; r = CliRunner().invoke(c.app, ['--help']);"
        "assert r.exit_code == 0, r.output; heavy = {'torch', 'ray', 'transformers', 'vllm',"
        " 'pyarrow', 'datasets'} & set(sys.modules); assert not heavy, heavy;"
        "print(time.perf_counter() - t)"
    )
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True)
    assert float(out.stdout) < 1.0


def test_every_stage_has_a_command():
    result = runner.invoke(app, ["--help"])
    for name in (
        "run",
        "prepare",
        "train-prior",
        "train-conditional",
        "score",
        "select",
        "evaluate",
        "release",
        "submit",
    ):
        assert name in result.output


def test_unknown_override_exits_with_usage_code(tmp_path):
    config = tmp_path / "c.yaml"
    config.write_text(f"output_dir: {tmp_path / 'o'}\n")
    result = runner.invoke(app, ["prepare", str(config), "--set", "data.nope=1"])
    assert result.exit_code == EXIT_USAGE
    assert "unknown config key 'data.nope'" in result.output


def test_typers_own_usage_errors_inside_a_command_are_not_unexpected_failures(tmp_path):
    config = tmp_path / "c.yaml"
    config.write_text(f"output_dir: {tmp_path / 'o'}\n")
    result = runner.invoke(app, ["submit", str(config), "--env", "BAD", "--address", "http://x:1"])
    assert result.exit_code == EXIT_USAGE  # typer's BadParameter, raised before any cluster call
    assert "--env wants KEY=VALUE" in result.output and "unexpected" not in result.output


def test_unbuilt_stage_says_so(tmp_path, monkeypatch):
    from colorfilter.pipeline import stages

    monkeypatch.setitem(stages.STAGES, "evaluate", None)  # as a build without that stage has it
    config = tmp_path / "c.yaml"
    config.write_text(f"output_dir: {tmp_path / 'o'}\n")
    result = runner.invoke(app, ["evaluate", str(config)])
    assert result.exit_code == EXIT_NOT_IMPLEMENTED
    assert "not available" in result.output


def test_run_leaves_evaluate_out_unless_asked():
    from colorfilter.pipeline.stages import stage_names

    assert stage_names(None) == ["prepare", "train-prior", "train-conditional", "score", "select"]
    assert stage_names("score,evaluate") == ["score", "evaluate"]


def fake_stage(config, overwrite):
    return {"ran": True}


def test_only_rank_zero_writes_the_config_and_prints_stats(tmp_path, monkeypatch):
    from colorfilter.pipeline import stages

    monkeypatch.setitem(stages.STAGES, "select", "tests.test_cli:fake_stage")
    config = tmp_path / "c.yaml"
    for rank, out in (("1", tmp_path / "rank1"), ("0", tmp_path / "rank0")):
        config.write_text(f"output_dir: {out}\n")
        monkeypatch.setenv("RANK", rank)
        result = runner.invoke(app, ["select", str(config)])
        assert result.exit_code == 0, result.output
        assert (out / "config.yaml").exists() == (rank == "0")
        assert ('"ran": true' in result.output) == (rank == "0")
