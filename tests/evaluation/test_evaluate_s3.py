"""evaluate with its output dir on a bucket (a real S3 server on 127.0.0.1).

The inputs are the run directory the local evaluate tests use (token shards, score shards and a
tokenizer, as prepare and score leave them), copied to the bucket. The evaluation there must give
the local run's numbers, train its runs on Ray actors that read the shards from the bucket, write
nothing to local disk but the cache, and skip finished runs on a rerun.
"""

from __future__ import annotations

import json
import os
import shutil
from pathlib import Path

import pytest

from colorfilter.errors import ConfigError
from colorfilter.evaluation.config import EvaluateConfig
from colorfilter.evaluation.records import read_record
from colorfilter.evaluation.report import summary
from colorfilter.io import storage
from colorfilter.io.transfer import upload_folder
from colorfilter.layout import RunLayout
from colorfilter.pipeline.evaluate import run_evaluate
from tests.evaluation.test_evaluate import _config, _run_dir

# what a run's record holds that is not a result (wall clock)
TIMINGS = ("train_time_s", "wall_time_s", "finished_at")
PLOTS = ("loss_vs_tau.png", "random_curve.png", "scores_by_source.png")
MC_ITEMS = [
    {"context": "w1 w2 w3", "choices": [" w4 w5", " w20 w9"], "label": 0},
    {"context": "w5 w6", "choices": [" w30", " w7", " w2"], "label": 1},
]


def _small(config, multiple_choice: str):
    """The reduced evaluation: two methods at one tau, no random-curve point beyond them."""
    config.evaluate.methods, config.evaluate.taus = ["color", "random"], [4]
    config.evaluate.random_multiples = []
    config.evaluate.multiple_choice = [multiple_choice]
    return config


@pytest.fixture(scope="module")
def local_run(tmp_path_factory) -> tuple[Path, Path, Path, dict]:
    """(inputs without eval/, the multiple-choice file, the local run, its report)."""
    inputs = _run_dir(tmp_path_factory.mktemp("inputs"))
    mc = inputs.parent / "mc.jsonl"
    mc.write_text("".join(json.dumps(item) + "\n" for item in MC_ITEMS))
    local = tmp_path_factory.mktemp("local") / "run"
    shutil.copytree(inputs, local)
    return inputs, mc, local, run_evaluate(_small(_config(local), str(mc)))


@pytest.fixture
def bucket_run(local_run, s3_bucket, tmp_path, monkeypatch):
    """The inputs and the multiple-choice file on the bucket; cwd an empty folder, the cache
    in tmp. Yields (config with output_dir on the bucket, the empty cwd)."""
    inputs, mc, _, _ = local_run
    out = s3_bucket.join("out")
    upload_folder(inputs, out)
    mc_url = s3_bucket.join("mc", "mc.jsonl")
    storage.write_bytes(mc_url, mc.read_bytes())
    cwd = tmp_path / "cwd"
    cwd.mkdir()
    monkeypatch.chdir(cwd)
    monkeypatch.setenv("COLORFILTER_CACHE", str(tmp_path / "cache"))
    config = _small(_config(Path("unused")), mc_url.url)
    config.output_dir = out.url
    yield config, cwd
    assert not os.listdir(cwd)  # nothing landed in the working directory
    assert not list(tmp_path.rglob("s3:*"))  # nor a URL taken for a local path


def _records(eval_runs) -> dict[str, dict]:
    return {
        loc.name: {k: v for k, v in read_record(loc).items() if k not in TIMINGS}
        for loc in storage.list_dir(eval_runs)
    }


def test_evaluate_on_a_bucket_matches_local_and_resumes(
    local_run, bucket_run, ray_session, monkeypatch
) -> None:
    _, _, local, local_report = local_run
    config, _ = bucket_run
    config.executor, config.evaluate.workers = "ray", 2  # actors read the shards themselves
    layout = RunLayout.of(config)
    report = run_evaluate(config)
    local_eval = RunLayout.at(str(local)).eval
    assert storage.read_json(layout.eval.join("report.json")) == report
    assert report["results"] and report["random_curve"]
    _assert_same_numbers(report, local_report)
    remote_runs, local_runs = _records(layout.eval_runs), _records(local_eval.join("runs"))
    expected = ["color-tau4-n56-seed0.json", "random-tau4-n56-seed0.json"]
    assert sorted(remote_runs) == sorted(local_runs) == expected
    for name, record in remote_runs.items():
        assert record["run_hash"] == local_runs[name]["run_hash"]  # same data, same settings
        assert record["mc_items"] == 2  # the multiple-choice file was read from the bucket
        for key in ("heldout_loss", "mc_accuracy", "final_train_loss"):
            assert record[key] == pytest.approx(local_runs[name][key], rel=1e-6), (name, key)
    details = storage.read_json(layout.eval.join("details.json"))
    local_details = storage.read_json(local_eval.join("details.json"))
    for key in ("composition", "overlap_with_color", "scores_by_source", "budget_tokens"):
        assert details[key] == local_details[key], key
    for plot in PLOTS:
        assert storage.read_bytes(layout.eval.join(plot))[:8] == b"\x89PNG\r\n\x1a\n"
    assert summary(layout.eval).startswith(f"report: {layout.eval.url}/report.md")
    # a rerun trains nothing; a torn record (a kill mid-upload cannot leave one, a hand edit
    # can) is trained again, alone
    import colorfilter.evaluation.train as train_module

    def refuse(*args, **kwargs):
        raise AssertionError("a finished run was trained again")

    config.executor = "local"
    monkeypatch.setattr(train_module, "train_and_evaluate", refuse)
    assert run_evaluate(config) == report
    storage.write_bytes(layout.eval_runs.join("random-tau4-n56-seed0.json"), b'{"name": ')
    with pytest.raises(AssertionError, match="trained again"):
        run_evaluate(config)


def _assert_same_numbers(report: dict, local: dict) -> None:
    """report.json equal to the local one, losses to float rounding (actors vs one process)."""
    assert report.keys() == local.keys()
    for key in ("results", "random_curve"):
        assert len(report[key]) == len(local[key])
        for row, other in zip(report[key], local[key], strict=True):
            assert row.keys() == other.keys()
            for name, value in row.items():
                assert value == _close(other[name]), (key, name)
    assert report["data_multiplier"].keys() == local["data_multiplier"].keys()
    for tau, value in report["data_multiplier"].items():
        assert value == _close(local["data_multiplier"][tau]), tau


def _close(expected):
    return pytest.approx(expected, rel=1e-5) if isinstance(expected, float) else expected


def test_evaluate_on_a_bucket_without_scores_says_run_score_first(
    local_run, s3_bucket, monkeypatch, tmp_path
) -> None:
    out = s3_bucket.join("out")
    upload_folder(local_run[0], out)
    storage.remove(out.join("scores"), recursive=True)
    monkeypatch.chdir(tmp_path)
    config = _config(Path("unused"))
    config.output_dir = out.url
    with pytest.raises(ConfigError, match=r"scores not found at s3://.*run `colorfilter score`"):
        run_evaluate(config)
    assert not os.listdir(tmp_path)


def test_multiple_choice_files_may_be_urls() -> None:
    for url in (
        "s3://b/mc.jsonl",
        "gs://b/mc.jsonl.zst",
        "hf://datasets/o/n/mc.jsonl",
        "file:///x",
    ):
        assert EvaluateConfig(multiple_choice=[url]).validate() == []
    [problem] = EvaluateConfig(multiple_choice=["ftp://host/mc.jsonl"]).validate()
    assert "evaluate.multiple_choice[0]" in problem and "ftp://" in problem
