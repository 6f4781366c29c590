"""Model folders are trusted only as their records say (size and sha256), wherever they are read.

A model whose file was altered, cut short or removed after it was committed is refused by the
stages that load it (the conditional loading the prior, score, the Python API) with one line
naming the file and the stage to rerun (exit 3), and retrained by its own stage's rerun; and the
config hashes that name every trained model stay what earlier versions computed.
"""

from __future__ import annotations

import logging
import shutil
import subprocess
from pathlib import Path

import pytest
import torch
from safetensors.torch import load_file

import colorfilter.models.stages as stages
from colorfilter.config import load_config, save_resolved
from colorfilter.errors import EXIT_BAD_DATA, ConfigError, DamagedDataError
from colorfilter.io import storage
from colorfilter.io.commit import commit_unit, read_unit
from colorfilter.layout import MODEL_RECORD, SPLITS, RunLayout
from colorfilter.models.checkpoints import load_tokenizer, verified_model
from colorfilter.models.stages import train_conditional, train_prior
from colorfilter.pipeline.stages import run_stage
from colorfilter.pipeline.train import run_train_conditional, run_train_prior
from colorfilter.scorer import ScorerSettings
from tests.conftest import save_random_models
from tests.pipeline.test_prepare import make_config
from tests.pipeline.test_resume import cli_command, cli_env

from .synthetic import alter, job, micro_conditional_config, micro_prior_config

REPO = Path(__file__).resolve().parents[2]
# What the code before the models' records carried sha256 (commit f0d6855) computed for the demo
# config on the fake run below: a different hash would retrain every existing model.
DEMO_PRIOR_HASH, DEMO_CONDITIONAL_HASH = "39cc8692eb5a4cea", "7bf9d564a32b1a11"


def truncate(path: Path) -> None:
    path.write_bytes(path.read_bytes()[: path.stat().st_size // 2])


DAMAGE = {  # how -> the reason the error gives
    "altered": (alter, "its bytes differ from its record's sha256"),
    "truncated": (truncate, "its record says"),
    "removed": (Path.unlink, "missing"),
}


@pytest.fixture
def prior_copy(trained_prior, tmp_path) -> Path:
    folder = tmp_path / "prior"
    shutil.copytree(trained_prior[0], folder)
    return folder


def test_a_published_model_lists_every_file_with_its_sha256(trained_prior):
    unit = read_unit(trained_prior[0] / MODEL_RECORD)
    assert {"model.safetensors", "config.json", "train_stats.json"} <= set(unit.objects)
    assert all(len(entry["sha256"]) == 64 for entry in unit.objects.values())
    assert verified_model(trained_prior[0], "train-prior").objects == unit.objects


@pytest.mark.parametrize("how", sorted(DAMAGE))
def test_a_damaged_model_file_is_refused_naming_it(prior_copy, how):
    damage, reason = DAMAGE[how]
    damage(prior_copy / "model.safetensors")
    with pytest.raises(DamagedDataError) as caught:
        verified_model(prior_copy, "train-prior")
    message = str(caught.value)
    assert caught.value.exit_code == EXIT_BAD_DATA and "\n" not in message
    assert message.startswith(f"prior model file {prior_copy / 'model.safetensors'} is damaged")
    assert reason in message and "rerun `colorfilter train-prior`" in message


def test_a_model_record_cut_short_or_missing(prior_copy):
    record = prior_copy / MODEL_RECORD
    record.write_text(record.read_text()[:50])
    with pytest.raises(DamagedDataError, match=f"{record} is damaged.*does not parse"):
        verified_model(prior_copy, "train-prior")
    assert stages.finished_stats(prior_copy, "any") is None  # not trusted: trained again
    record.unlink()
    with pytest.raises(ConfigError, match="prior model not found.*run `colorfilter train-prior`"):
        verified_model(prior_copy, "train-prior")


def test_the_conditional_refuses_a_damaged_prior(prior_copy, corpus, tmp_path):
    alter(prior_copy / "model.safetensors")
    with pytest.raises(DamagedDataError) as caught:
        train_conditional(job(corpus.train, tmp_path / "conditional", corpus.tokenizer),
                          micro_conditional_config(), prior_copy)  # fmt: skip
    assert str(caught.value).startswith(f"prior model file {prior_copy / 'model.safetensors'}")
    assert not (tmp_path / "conditional" / MODEL_RECORD).exists()


def test_a_damaged_finished_model_is_trained_again(trained_prior, prior_copy, corpus, caplog):
    before = load_file(trained_prior[0] / "model.safetensors")
    alter(prior_copy / "model.safetensors")
    prior_job = job(corpus.pool, prior_copy, corpus.tokenizer, eval_data=corpus.pool_eval)
    with caplog.at_level(logging.WARNING, logger=stages.log.name):
        stats = train_prior(prior_job, micro_prior_config())
    assert f"prior model in {prior_copy} is damaged (model.safetensors: its bytes" in caplog.text
    assert "training it again" in caplog.text
    assert stats["finished_at"] != trained_prior[1]["finished_at"]  # really retrained
    again = load_file(prior_copy / "model.safetensors")
    assert all(torch.equal(before[name], again[name]) for name in before)
    verified_model(prior_copy, "train-prior")  # whole again
    caplog.clear()
    with caplog.at_level(logging.WARNING, logger=stages.log.name):
        assert train_prior(prior_job, micro_prior_config()) == stats  # intact: skipped
    assert "damaged" not in caplog.text


def test_load_tokenizer_names_the_folder_only(tmp_path):
    with pytest.raises(ConfigError) as caught:
        load_tokenizer(tmp_path / "nowhere")
    assert str(caught.value) == f"no tokenizer folder at {tmp_path / 'nowhere'}"


# -- the stages that load both models, through the CLI and the Python API ----------------------
@pytest.fixture(scope="module")
def prepared_run(tmp_path_factory, tokenizer_dir):
    """A prepared run with two random micro models committed as the train stages commit."""
    from tests.conftest import write_c4_inputs

    root = tmp_path_factory.mktemp("trust")
    config = make_config(root, tokenizer_dir, write_c4_inputs(root),
                         **{"score.batch_size": 16, "score.torch_threads": 1})  # fmt: skip
    run_stage("prepare", config)
    save_random_models(config)
    save_resolved(config)
    return config


def cli(stage: str, config_path: Path) -> tuple[int, str]:
    done = subprocess.run(cli_command(stage, config_path), env=cli_env(), capture_output=True,
                          text=True, timeout=300)  # fmt: skip
    return done.returncode, done.stderr


@pytest.mark.parametrize("name", ["prior", "conditional"])
def test_score_and_the_api_refuse_an_altered_model_with_exit_3(prepared_run, name):
    run = RunLayout.of(prepared_run)
    weights = Path(run.model(name).path) / "model.safetensors"
    original = weights.read_bytes()
    alter(weights)
    try:
        code, err = cli("score", run.config_file.path)
        last = err.strip().splitlines()[-1]
        assert code == EXIT_BAD_DATA, err
        assert last.startswith(f"error: {name} model file {weights} is damaged"), err
        assert f"rerun `colorfilter train-{name}`" in last and "unexpected" not in err
        assert not storage.exists(run.score_stats)  # nothing was scored
        with pytest.raises(DamagedDataError, match=f"{name} model file {weights} is damaged"):
            ScorerSettings.from_run(str(run.root.path))
        if name == "prior":
            code, err = cli("train-conditional", run.config_file.path)
            assert code == EXIT_BAD_DATA, err
            assert err.strip().splitlines()[-1].startswith(
                f"error: prior model file {weights} is damaged")
    finally:
        weights.write_bytes(original)


# -- identity: the hashes that name trained models -----------------------------------------------
def fake_demo_run(root: Path):
    """configs/demo.yaml over a run folder of fixed fake files (no model is trained here)."""
    config = load_config(REPO / "configs" / "demo.yaml", [f"output_dir={root}"])
    run = RunLayout.of(config)
    for split in SPLITS:
        folder = Path(run.tokens(split).path)
        folder.mkdir(parents=True)
        (folder / "00000-00000.parquet").write_bytes(f"fake shard of {split}".encode())
    tokenizer = Path(run.tokenizer.path)
    tokenizer.mkdir(parents=True)
    (tokenizer / "tokenizer.json").write_text('{"fake": "tokenizer"}')
    files = [info.location for info in storage.find(run.tokenizer)]
    run.finish_stage("prepare", files, {"tokenizer_sha256": storage.folder_sha256(run.tokenizer)})
    return config, run


def commit_finished(folder, config_hash: str) -> dict:
    stats = {"config_hash": config_hash, "steps": 1}
    storage.write_json(folder.join("train_stats.json"), stats)
    commit_unit(folder.join(MODEL_RECORD), [folder.join("train_stats.json")],
                {"config_hash": config_hash}, sha256=True)  # fmt: skip
    return stats


def test_the_demo_configs_model_hashes_are_unchanged(tmp_path, monkeypatch):
    config, run = fake_demo_run(tmp_path / "run")

    def would_train(*args):
        raise AssertionError("the config hash changed: every existing model would be retrained")

    monkeypatch.setattr(stages, "_load_common", would_train)
    prior = commit_finished(run.model("prior"), DEMO_PRIOR_HASH)
    conditional = commit_finished(run.model("conditional"), DEMO_CONDITIONAL_HASH)
    assert run_train_prior(config) == prior  # skipped: the same hash as before
    assert run_train_conditional(config) == conditional
