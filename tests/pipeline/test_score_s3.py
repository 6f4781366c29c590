"""score with output_dir on a bucket (a real S3 server on 127.0.0.1): the same scores as on local
disk, written by actors that fetch the models by URL; a kill -9 mid-stage resumes to the same
scores and nothing the killed run (or a torn upload) left is trusted; a second config is refused.

The inputs (token shards, tokenizer, two tiny models) are built on local disk by the earlier
stages and uploaded; the stage under test runs with its cwd in an empty folder, which must stay
empty: on a bucket nothing lands on local disk but the cache ($COLORFILTER_CACHE, a tmp folder).
"""

from __future__ import annotations

import os
import signal
import subprocess
import sys
import time
from dataclasses import dataclass, replace
from pathlib import Path

import pytest

from colorfilter.config import Config, to_yaml
from colorfilter.errors import EXIT_USAGE, ConfigError
from colorfilter.io import storage
from colorfilter.io.commit import committed
from colorfilter.io.location import Location
from colorfilter.io.token_shards import list_shards, shard_locations
from colorfilter.io.transfer import upload_folder
from colorfilter.pipeline.stages import run_stage
from colorfilter.scoring.precision import check_resume_precision, resolve_precision
from colorfilter.scoring.shard import done_record_path, score_records
from tests.cluster.nodes import prepare_scoring_run
from tests.conftest import sample_documents, write_jsonl
from tests.pipeline.test_faults import copy_run
from tests.test_user_errors import invoke

REPO = Path(__file__).resolve().parents[2]
FREEZE_ENV = "COLORFILTER_TEST_FREEZE_AT_COMMIT"
CHILD_BOOT = "from tests.pipeline.test_score_s3 import child_main; child_main()"


@dataclass
class BucketRun:
    local: Config  # prepared and scored on local disk: the reference
    remote: Config  # the same prepared run uploaded to the bucket, not scored yet
    config_file: Path  # the remote config as YAML, for the CLI
    cwd: Path  # an empty folder: the stage's working directory

    @property
    def scores(self) -> Location:
        return Location.parse(self.remote.output_dir).join("scores", "pool")


@pytest.fixture(scope="module")
def prepared(tmp_path_factory, tokenizer_dir) -> tuple[Config, Config]:
    """(prepared, reference): a prepared run with its two models, and a copy scored locally."""
    root = tmp_path_factory.mktemp("score-s3")
    docs = [{"text": t, "source": "web" if i % 3 else "book"}
            for i, t in enumerate(sample_documents(12, seed=5))]  # fmt: skip
    inputs = {
        "pool": [write_jsonl(root / "pool" / f"c4-{i}.json.gz", docs[4 * i : 4 * i + 4])
                 for i in range(2)],
        "downstream_train": [write_jsonl(root / "target" / "train.jsonl", docs[8:10])],
        "downstream_eval": [write_jsonl(root / "target" / "eval.jsonl", docs[10:])],
    }  # fmt: skip
    config = prepare_scoring_run(root, tokenizer_dir, inputs, **{
        "prepare.rows_per_shard": 16, "score.batch_size": 8, "score.worker_cpus": 1})
    reference = copy_run(config, root / "reference")
    run_stage("score", reference)
    return config, reference


@pytest.fixture
def bucket_run(prepared, tmp_path, s3_bucket, monkeypatch) -> BucketRun:
    """The prepared run uploaded to a fresh bucket; cwd empty, the cache in tmp_path."""
    config, reference = prepared
    url = s3_bucket.join("out").url
    upload_folder(config.output_path, url)
    remote = replace(config, output_dir=url)
    config_file = tmp_path / "remote.yaml"
    config_file.write_text(to_yaml(remote))
    cwd = tmp_path / "cwd"
    cwd.mkdir()
    monkeypatch.chdir(cwd)
    monkeypatch.setenv("COLORFILTER_CACHE", str(tmp_path / "cache"))
    return BucketRun(reference, remote, config_file, cwd)


def cli(run: BucketRun, *args: str, boot: list[str] | None = None) -> list[str]:
    """The `colorfilter score` command line on the bucket run's config (`boot`: what starts it)."""
    boot = [sys.executable, "-m", "colorfilter"] if boot is None else boot
    return [*boot, "score", str(run.config_file), *args]


def cli_env(**extra: str) -> dict[str, str]:
    return {**os.environ, "PYTHONPATH": str(REPO), **extra}


def shard_bytes(run: BucketRun) -> tuple[dict[str, bytes], dict[str, bytes]]:
    """(local, bucket) score shards: name -> bytes."""
    local = {p.name: p.read_bytes() for p in list_shards(run.local.output_path / "scores" / "pool")}
    return local, {loc.name: storage.read_bytes(loc) for loc in shard_locations(run.scores)}


def assert_nothing_local(run: BucketRun, tmp_path: Path) -> None:
    assert list(run.cwd.iterdir()) == []
    assert not list(tmp_path.rglob("s3:*")) and not list(REPO.glob("s3:*"))


def test_score_on_a_bucket_equals_local_disk_and_resumes(bucket_run, tmp_path):
    run = bucket_run
    args = ["--set", "executor=ray", "--set", "ray.num_cpus=1", "--set", "device=cpu",
            "--set", "score.num_workers=1"]  # fmt: skip
    proc = subprocess.run(cli(run, *args), env=cli_env(), cwd=run.cwd, capture_output=True,
                          text=True, timeout=240)  # fmt: skip
    assert proc.returncode == 0, proc.stderr[-3000:]
    local, remote = shard_bytes(run)
    assert 4 <= len(local) <= 12 and remote == local  # byte for byte, shard by shard
    stats = storage.read_json(run.scores.join("stats.json"))
    expected = storage.read_json(run.local.output_path / "scores" / "pool" / "stats.json")
    assert (stats["rows"], stats["shards"]) == (expected["rows"], expected["shards"])
    cached = sorted(p.name.split("-", 1)[1] for p in (tmp_path / "cache").iterdir()
                    if p.is_dir() and not p.name.startswith("."))  # fmt: skip
    assert cached == ["conditional", "prior", "tokenizer"]  # fetched by URL, once for the node
    records = score_records(run.scores)
    fingerprints = {r.meta["fingerprint"] for r in committed(records, True).values()}
    local_record = storage.read_json(done_record_path(
        list_shards(run.local.output_path / "scores" / "pool")[0]))
    assert fingerprints == {local_record["meta"]["fingerprint"]} and len(records) == len(local)

    again = run_stage("score", run.remote)  # in-process: every shard verified on the bucket
    assert (again["shards_skipped"], again["shards_scored_now"]) == (len(local), 0)
    with pytest.raises(ConfigError, match="scored at fp32 .* would score at bf16"):
        check_resume_precision(run.scores, resolve_precision("bf16", "cpu"))
    assert_nothing_local(run, tmp_path)


def child_main() -> None:
    """The CLI, frozen inside the Nth shard commit: its parquet object is uploaded, its record is
    not. $FREEZE_ENV is "N|MARKER"; the marker file receives the record's URL once frozen."""
    from colorfilter.scoring import shard

    count, marker = os.environ[FREEZE_ENV].split("|")
    commit, calls = shard.commit_unit, []

    def commit_or_freeze(record, *args, **kwargs):
        calls.append(record)
        if len(calls) == int(count):
            Path(marker + ".part").write_text(record.url)
            os.replace(marker + ".part", marker)  # whole when the test reads it
            while True:  # until the test's SIGKILL
                time.sleep(60)
        return commit(record, *args, **kwargs)

    shard.commit_unit = commit_or_freeze
    sys.argv = ["colorfilter", *sys.argv[1:]]
    from colorfilter.cli import main

    main()


def test_kill_9_mid_score_on_a_bucket_resumes_and_trusts_nothing_it_left(bucket_run, tmp_path):
    run = bucket_run
    marker, args = tmp_path / "frozen.txt", ["--set", "executor=local"]
    boot = [sys.executable, "-c", CHILD_BOOT]
    env = cli_env(**{FREEZE_ENV: f"2|{marker}"})
    driver = subprocess.Popen(cli(run, *args, boot=boot), env=env, cwd=run.cwd,
                              stdout=subprocess.DEVNULL, stderr=subprocess.PIPE, text=True)
    deadline = time.time() + 120
    while not marker.exists() and driver.poll() is None and time.time() < deadline:
        time.sleep(0.05)
    driver.send_signal(signal.SIGKILL)  # kill -9: no cleanup code runs
    _, err = driver.communicate()
    assert marker.exists(), err[-3000:]
    names = sorted(shard_bytes(run)[0])
    first, second, third, fourth = (run.scores.join(n) for n in names[:4])
    # What the kill left: shard 0 committed, shard 1 uploaded without its record, nothing else.
    assert marker.read_text() == done_record_path(second).url
    assert [r.name for r in score_records(run.scores)] == [done_record_path(first).name]
    assert [loc.name for loc in shard_locations(run.scores)] == [first.name, second.name]
    kept = storage.read_bytes(done_record_path(first))
    # What a torn upload or another writer could leave: a record over a torn object (shard 2),
    # a torn record over a whole object (shard 3), all copied from the local reference run.
    reference = run.local.output_path / "scores" / "pool"
    for loc, torn_object in ((third, True), (fourth, False)):
        data = (reference / loc.name).read_bytes()
        record = storage.read_bytes(done_record_path(reference / loc.name))
        storage.write_bytes(loc, data[: len(data) // 2] if torn_object else data)
        storage.write_bytes(done_record_path(loc), record if torn_object else record[:100])

    rerun = run_stage("score", run.remote)
    assert (rerun["shards_skipped"], rerun["shards_scored_now"]) == (1, len(names) - 1)
    assert storage.read_bytes(done_record_path(first)) == kept  # not redone
    local, remote = shard_bytes(run)
    assert remote == local
    records = score_records(run.scores)
    assert len(committed(records, verify_sha256=True)) == len(records) == len(local)
    assert_nothing_local(run, tmp_path)


def test_a_second_config_into_the_same_bucket_output_is_refused(bucket_run, tmp_path):
    run = bucket_run
    before = [(f.location.url, f.size) for f in storage.find(run.remote.output_dir)]
    result = invoke(cli(run, "--set", "prepare.rows_per_shard=32", boot=[]))
    assert result.exit_code == EXIT_USAGE, result.output
    assert f"{run.remote.output_dir} holds outputs made with a different config" in result.output
    assert "prepare.rows_per_shard: 16 -> 32" in result.output
    assert [(f.location.url, f.size) for f in storage.find(run.remote.output_dir)] == before
    assert_nothing_local(run, tmp_path)
