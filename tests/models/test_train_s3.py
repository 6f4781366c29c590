"""train-prior and train-conditional with output_dir on a bucket (a real S3 server on 127.0.0.1).

The token splits and the tokenizer come from a local prepare, uploaded to the bucket (as the
other stages' helpers do it). Trained on the bucket, both models must equal the ones trained on
local disk byte for byte, nothing but the cache may land on local disk, a kill mid-training
resumes from the checkpoint committed on the bucket, and `prior.init_from` may be a URL.
"""

from __future__ import annotations

import csv
import dataclasses
import io
from pathlib import Path

import pytest
from transformers import AutoConfig

from colorfilter.config import Config
from colorfilter.errors import ConfigError, DamagedDataError
from colorfilter.io import storage
from colorfilter.io.commit import is_committed
from colorfilter.io.transfer import upload_folder
from colorfilter.layout import MODEL_RECORD, RunLayout
from colorfilter.models.checkpoints import commit_model_files, verified_model
from colorfilter.models.stages import train_prior
from colorfilter.pipeline.plan import prior_model_config
from colorfilter.pipeline.stages import run_stage
from colorfilter.pipeline.train import train_job
from tests.conftest import sample_documents, write_jsonl
from tests.hub_server import FakeHub
from tests.pipeline.test_prepare import make_config

from .synthetic import Killed, die_before_checkpoint_record, flipped_middle

TRAINING = {
    "seq_len": 64,
    "prepare.rows_per_shard": 128,  # a few shards: fewer objects to list and read
    "prior.preset": "micro",
    "prior.token_budget": 64 * 64,
    "prior.batch_size": 8,
    "prior.lr": 0.01,
    "prior.warmup_steps": 2,
    "prior.checkpoint_every": 2,
    "prior.progress": "false",
    "prior.torch_threads": 1,
    "conditional.batch_size": 4,
    "conditional.max_steps": 4,
    "conditional.lr": 0.01,
    "conditional.warmup_steps": 1,
    "conditional.checkpoint_every": 2,
    "conditional.progress": "false",
    "conditional.torch_threads": 1,
}
FILES = ("model.safetensors", "config.json", "train_seq_ids.parquet", "tokenizer.json")


@dataclasses.dataclass
class LocalRun:
    root: Path  # holds inputs/, the prepared-only copy prepared/ and the trained out/
    tokenizer: Path
    inputs: dict
    config: Config  # the trained local run

    def bucket_config(self, url: str, **extra) -> Config:
        return make_config(self.root, self.tokenizer, self.inputs, **TRAINING,
                           output_dir=url, **extra)


@pytest.fixture(scope="module")
def local_run(tmp_path_factory, tokenizer_dir) -> LocalRun:
    """prepare, then both trainings, on local disk; `prepared/` keeps the state in between."""
    import shutil

    root = tmp_path_factory.mktemp("train-s3")
    records = [{"text": t, "source": "web"} for t in sample_documents(70, seed=3)]
    inputs = {
        "pool": [write_jsonl(root / "in" / "pool-0.jsonl.gz", records[:30]),
                 write_jsonl(root / "in" / "pool-1.jsonl", records[30:55])],
        "downstream_train": [write_jsonl(root / "in" / "train.jsonl", records[55:64])],
        "downstream_eval": [write_jsonl(root / "in" / "eval.jsonl", records[64:])],
    }
    config = make_config(root, tokenizer_dir, inputs, out="out", **TRAINING)
    run_stage("prepare", config)
    shutil.copytree(config.output_path, root / "prepared")
    run_stage("train-prior", config)
    run_stage("train-conditional", config)
    return LocalRun(root, tokenizer_dir, inputs, config)


def upload_prepared(local_run: LocalRun, url) -> None:
    upload_folder(local_run.root / "prepared", url)


def curve(data: bytes) -> list[dict]:
    rows = csv.DictReader(io.StringIO(data.decode()))
    return [{k: v for k, v in row.items() if k != "elapsed_s"} for row in rows]


def assert_same_model(local_dir: Path, remote, names=FILES) -> None:
    for name in names:
        assert storage.read_bytes(remote.join(name)) == (local_dir / name).read_bytes(), name
    assert curve(storage.read_bytes(remote.join("loss_curve.csv"))) == curve(
        (local_dir / "loss_curve.csv").read_bytes()
    )


def assert_no_local_output(tmp_path: Path, cwd: Path) -> None:
    assert list(cwd.iterdir()) == []
    assert not [p for p in tmp_path.rglob("*") if p.name.startswith("s3:")]


def test_both_stages_on_a_bucket_equal_local_disk(local_run, s3_bucket, quiet_disk, tmp_path):
    out = s3_bucket.join("out")
    upload_prepared(local_run, out)
    config = local_run.bucket_config(out.url)
    run = RunLayout.of(config)
    with pytest.raises(ConfigError, match=r"prior model not found at s3://.*run `colorfilter tr"):
        run_stage("train-conditional", config)
    prior = run_stage("train-prior", config)
    conditional = run_stage("train-conditional", config)
    local = RunLayout.of(local_run.config)
    assert_same_model(Path(local.model("prior").path), run.model("prior"))
    assert_same_model(Path(local.model("conditional").path), run.model("conditional"),
                      FILES[:2] + FILES[3:])
    assert run.has_run("train-prior") and run.has_run("train-conditional")
    for name, stats in (("prior", prior), ("conditional", conditional)):  # same inputs, same hash
        local_stats = storage.read_json(local.model(name).join("train_stats.json"))
        assert stats["config_hash"] == local_stats["config_hash"]
    for name in ("prior", "conditional"):
        record = is_committed(run.model(name).join(MODEL_RECORD))
        assert set(record.objects) >= {"train_stats.json", "loss_curve.png", *FILES[:2]}
        assert storage.list_dir(run.model(name).join("checkpoint")) == []  # not kept
    assert conditional["prior_dir"] == run.model("prior").url
    assert conditional["prior_eval_loss"] == pytest.approx(prior["eval_loss"], rel=1e-6)
    assert run_stage("train-prior", config) == prior  # committed: a rerun trains nothing
    assert run_stage("train-conditional", config) == conditional
    assert_no_local_output(tmp_path, quiet_disk)


def test_kill_mid_training_on_a_bucket_resumes_to_the_same_weights(
    local_run, s3_bucket, quiet_disk, tmp_path, monkeypatch
):
    out = s3_bucket.join("out")
    upload_prepared(local_run, out)
    config = local_run.bucket_config(out.url)
    run = RunLayout.of(config)
    model = run.model("prior")

    def train(on_step=None) -> dict:
        job = dataclasses.replace(train_job(config, "prior"), device="cpu", on_step=on_step)
        return train_prior(job, config.prior)

    def kill_at(step_to_die: int):
        def hook(step: int) -> None:
            if step == step_to_die:
                raise Killed(step)
        return hook

    with pytest.raises(Killed):
        train(kill_at(5))
    assert not run.has_run("train-prior")
    assert is_committed(model.join("checkpoint", "step-00000004", "state.done.json"),
                        verify_sha256=True).meta["step"] == 4
    assert train()["resumed_from_steps"] == [4]
    local_prior = Path(RunLayout.of(local_run.config).model("prior").path)
    assert_same_model(local_prior, model)

    # Killed after the model's files are uploaded but before its record: not trusted, redone
    # from the final checkpoint (kept, as it is removed only after the record).
    import colorfilter.models.checkpoints as checkpoints

    def dies_at_the_record(record, *args, **kwargs):
        raise Killed("before the record")

    storage.remove(model, recursive=True)
    monkeypatch.setattr(checkpoints, "commit_unit", dies_at_the_record)
    with pytest.raises(Killed):
        train()
    assert storage.exists(model.join("model.safetensors")) and not run.has_run("train-prior")
    monkeypatch.undo()
    monkeypatch.chdir(quiet_disk)
    monkeypatch.setenv("COLORFILTER_CACHE", str(tmp_path / "cache"))
    assert train()["resumed_from_steps"] == [8]
    assert_same_model(local_prior, model)
    assert_no_local_output(tmp_path, quiet_disk)


@pytest.mark.parametrize("where", ["s3", "hf"])
def test_prior_init_from_a_url(local_run, s3_bucket, quiet_disk, tmp_path, monkeypatch, where):
    local_prior = Path(RunLayout.of(local_run.config).model("prior").path)
    out = s3_bucket.join("out")
    upload_prepared(local_run, out)
    with FakeHub() as hub:
        if where == "s3":
            source = s3_bucket.join("models", "my-prior")
            upload_folder(local_prior, source)
            url = source.url
        else:
            monkeypatch.setenv("HF_ENDPOINT", hub.url)
            files = {p.name: p.read_bytes() for p in local_prior.iterdir() if p.is_file()}
            hub.add_files("org/my-prior", files, repo_type="model")
            url = "hf://org/my-prior"
        config = local_run.bucket_config(out.url, **{"prior.init_from": url})
        stats = run_stage("train-prior", config, overwrite=True)  # prepared without init_from
        planned = prior_model_config(config, vocab=400)  # `colorfilter plan` reads its config
    expected = AutoConfig.from_pretrained(local_prior)
    assert planned.to_diff_dict() | {"_name_or_path": ""} == expected.to_diff_dict() | {
        "_name_or_path": ""}
    assert stats["init_from"] == url and stats["steps"] == 0
    prior = RunLayout.of(config).model("prior")
    assert storage.read_bytes(prior.join("model.safetensors")) == (
        local_prior / "model.safetensors").read_bytes()
    assert RunLayout.of(config).has_run("train-prior")
    assert_no_local_output(tmp_path, quiet_disk)


def test_init_from_refuses_unknown_schemes_and_names_missing_urls(local_run, s3_bucket):
    with pytest.raises(ConfigError, match=r"prior.init_from.*ftp:// is not supported"):
        local_run.bucket_config(s3_bucket.join("out").url, **{"prior.init_from": "ftp://x/y"})
    out = s3_bucket.join("out")
    upload_prepared(local_run, out)
    missing = s3_bucket.join("no-such-model").url
    config = local_run.bucket_config(out.url, **{"prior.init_from": missing})
    with pytest.raises(ConfigError, match=f"prior.init_from not found at {missing}"):
        run_stage("train-prior", config, overwrite=True)


def test_a_model_folder_written_by_other_means_can_be_committed(local_run, tmp_path):
    import shutil

    run = RunLayout.at(tmp_path / "out")
    folder = Path(run.model("prior").path)
    shutil.copytree(Path(RunLayout.of(local_run.config).model("prior").path), folder)
    (folder / MODEL_RECORD).unlink()
    (folder / "checkpoint").mkdir()
    (folder / "checkpoint" / "state.pt").write_bytes(b"not part of the model")
    assert not run.has_run("train-prior")
    record = commit_model_files(run.model("prior"))
    assert run.has_run("train-prior")
    assert {"model.safetensors", "config.json"} <= set(record["objects"])
    assert MODEL_RECORD not in record["objects"] and "checkpoint/state.pt" not in record["objects"]


def flip_bytes(loc) -> None:
    """Alter 16 bytes in the middle of an object on the bucket, keeping its size."""
    storage.write_bytes(loc, flipped_middle(storage.read_bytes(loc)))


def test_checkpoints_and_models_on_a_bucket_are_verified_before_use(
    local_run, s3_bucket, quiet_disk, monkeypatch, caplog
):
    out = s3_bucket.join("out")
    upload_prepared(local_run, out)
    config = local_run.bucket_config(out.url)
    run = RunLayout.of(config)
    model = run.model("prior")
    local_prior = Path(RunLayout.of(local_run.config).model("prior").path)
    checkpoints = model.join("checkpoint")

    def train(on_step=None) -> dict:
        job = dataclasses.replace(train_job(config, "prior"), device="cpu", on_step=on_step)
        caplog.clear()
        with caplog.at_level("WARNING"):
            return train_prior(job, config.prior)

    # Killed between the step-6 checkpoint and its record: step 4 is kept and resumed from.
    die_before_checkpoint_record(monkeypatch, 6)
    with pytest.raises(Killed):
        train()
    monkeypatch.undo()
    assert storage.exists(checkpoints.join("step-00000006", "state.pt"))
    assert is_committed(checkpoints.join("step-00000004", "state.done.json"), verify_sha256=True)
    assert train()["resumed_from_steps"] == [4]
    assert "checkpoint step 6 in s3://" in caplog.text and "resuming from step 4" in caplog.text
    assert_same_model(local_prior, model)
    unit = is_committed(model.join(MODEL_RECORD))
    assert all(len(entry["sha256"]) == 64 for entry in unit.objects.values())

    # The only checkpoint altered on the bucket (same size): never loaded, trained from scratch.
    storage.remove(model, recursive=True)
    with pytest.raises(Killed):
        train(kill_at(5))
    flip_bytes(checkpoints.join("step-00000004", "state.pt"))
    assert train()["resumed_from_steps"] == []
    assert "is damaged (state.pt: sha256" in caplog.text and "training from scratch" in caplog.text
    assert_same_model(local_prior, model)

    # The finished model altered on the bucket: refused where it is loaded, retrained by its stage.
    weights = model.join("model.safetensors")
    flip_bytes(weights)
    with pytest.raises(DamagedDataError, match=f"prior model file {weights.url} is damaged"):
        verified_model(model, "train-prior")
    with pytest.raises(DamagedDataError, match="rerun `colorfilter train-prior`"):
        run_stage("train-conditional", config)
    assert train()["resumed_from_steps"] == []
    assert f"prior model in {model.url} is damaged" in caplog.text
    assert_same_model(local_prior, model)
    verified_model(model, "train-prior")


def kill_at(step_to_die: int):
    def hook(step: int) -> None:
        if step == step_to_die:
            raise Killed(step)
    return hook
