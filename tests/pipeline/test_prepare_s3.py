"""prepare with output_dir on a bucket (a real S3 server on 127.0.0.1): the same shards, records
and stats as a local prepare, nothing on local disk but the cache, kill -9 safe on resume, and a
tokenizer read from a bucket URL.

The inputs stay on local disk here (tests/pipeline/test_prepare_storage.py reads them from
buckets), so the shards must equal the local run's byte for byte, `source_file` included.
"""

from __future__ import annotations

import fnmatch
import os
import subprocess
import sys
import time
from pathlib import Path

import numpy as np
import pyarrow as pa
import pytest

from colorfilter.config import to_yaml
from colorfilter.io import storage
from colorfilter.io.splits import plan_spans
from colorfilter.io.token_shards import list_shards, shard_locations
from colorfilter.io.transfer import read_parquet, upload_folder
from colorfilter.layout import RunLayout
from colorfilter.pipeline.plan import training_sequences, vocab_size
from colorfilter.pipeline.prepare import list_inputs
from colorfilter.pipeline.stages import run_stage
from tests.pipeline.test_prepare import make_config

SPLITS = ("pool", "downstream_train", "downstream_eval")
FEWER_OBJECTS = {"prepare.rows_per_shard": 64}  # still several shards per file, fewer PUTs
REPO = Path(__file__).resolve().parents[2]
PAUSE_ENV = "COLORFILTER_TEST_PAUSE_AT"
CHILD_BOOT = "from tests.pipeline.test_prepare_s3 import child_main; child_main()"


def child_main() -> None:
    """The colorfilter CLI, frozen just before it writes the Nth object matching a glob.

    $PAUSE_ENV is "GLOB|N|MARKER"; the marker file appears once frozen, and the test kills -9.
    """
    pattern, count, marker = os.environ[PAUSE_ENV].split("|")
    original, seen = storage.write_bytes, [0]

    def write_or_freeze(value, data: bytes) -> None:
        if fnmatch.fnmatch(storage.as_location(value).url, pattern):
            seen[0] += 1
            if seen[0] == int(count):
                Path(marker + ".part").write_text(storage.as_location(value).url)
                os.replace(marker + ".part", marker)
                while True:  # until the test's SIGKILL
                    time.sleep(60)
        original(value, data)

    storage.write_bytes = write_or_freeze  # shards, records and stats.json all pass here
    sys.argv = ["colorfilter", *sys.argv[1:]]
    from colorfilter.cli import main

    main()


def assert_nothing_local(root: Path, cwd: Path) -> None:
    assert list(cwd.iterdir()) == []
    assert not [p for p in root.rglob("*") if p.name.startswith("s3:")]
    assert not Path(REPO, "s3:").exists()


def records(split_dir) -> dict[str, dict]:
    """A split's completion records by name, without their timings."""
    found = {}
    for loc in storage.glob(storage.as_location(split_dir).join("*.done.json")):
        record = storage.read_json(loc)
        record["meta"]["stats"].pop("seconds")
        found[loc.name] = record
    return found


def split_tables(split_dir) -> dict[str, pa.Table]:
    return {loc.name: read_parquet(loc) for loc in shard_locations(split_dir)}


def assert_same_run(local, remote) -> None:
    """Same shards (names and tables), same records minus timings, same stats.json."""
    ours, theirs = RunLayout.of(remote), RunLayout.of(local)
    for split in SPLITS:
        expected = split_tables(theirs.tokens(split))
        got = split_tables(ours.tokens(split))
        assert sorted(got) == sorted(expected) and expected, split
        assert all(got[name].equals(table) for name, table in expected.items()), split
        assert records(ours.tokens(split)) == records(theirs.tokens(split))  # same sha256s
        stats = storage.read_json(ours.token_stats(split))
        assert stats == storage.read_json(theirs.token_stats(split))
    assert ours.has_run("prepare")
    assert not storage.glob(ours.tokens("pool").join("_parts", "*"))  # dropped once assembled


@pytest.mark.parametrize("executor", ["local", "ray"])
def test_prepare_to_a_bucket_equals_local_disk(
    tmp_path, tokenizer_dir, c4_inputs, s3_bucket, quiet_disk, executor, request
):
    extra = {**FEWER_OBJECTS, "prepare.split_bytes": 1500}  # the plain .jsonl file: in parts
    if executor == "ray":
        request.getfixturevalue("ray_session")
        extra |= {"prepare.num_workers": 2, "prepare.worker_cpus": 0.5}
    local = make_config(tmp_path, tokenizer_dir, c4_inputs, out="local", **extra)
    run_stage("prepare", local)
    out = s3_bucket.join("out").url
    config = make_config(tmp_path, tokenizer_dir, c4_inputs, executor=executor,
                         output_dir=out, **extra)
    stats = run_stage("prepare", config)
    assert_same_run(local, config)
    assert storage.read_json(RunLayout.of(config).token_stats("pool")) == stats["pool"]
    done = RunLayout.of(config).tokens("pool").join("*.done.json")
    before = {loc.name: storage.read_bytes(loc) for loc in storage.glob(done)}
    assert run_stage("prepare", config) == stats  # a rerun trusts every record: nothing redone
    assert {loc.name: storage.read_bytes(loc) for loc in storage.glob(done)} == before  # timings
    # `colorfilter plan` reads the bucket run's shards and tokenizer as the local run's
    assert training_sequences(config) == training_sequences(local)
    assert training_sequences(config)["conditional"] > 0
    assert vocab_size(config, None) == vocab_size(local, None) == 400
    assert_nothing_local(tmp_path, quiet_disk)


def kill_when_frozen(saved: Path, pattern: str, work: Path) -> str:
    """Run `colorfilter prepare` frozen before it writes the first object matching `pattern`,
    kill -9 it there; return that object's URL."""
    work.mkdir()
    marker, log = work / "frozen.txt", work / "driver.log"
    env = {**os.environ, "PYTHONPATH": str(REPO), PAUSE_ENV: f"{pattern}|1|{marker}"}
    with open(log, "wb") as out:
        driver = subprocess.Popen([sys.executable, "-c", CHILD_BOOT, "prepare", str(saved)],
                                  env=env, stdout=out, stderr=subprocess.STDOUT)
        deadline = time.time() + 120
        while not marker.exists() and driver.poll() is None and time.time() < deadline:
            time.sleep(0.05)
        driver.kill()  # kill -9: no cleanup code runs
        driver.wait()
    assert marker.exists(), log.read_text()[-3000:]
    return marker.read_text()


def test_killed_prepare_on_a_bucket_resumes_to_the_same_shards(
    tmp_path, tokenizer_dir, c4_inputs, s3_bucket, quiet_disk
):
    extra = {**FEWER_OBJECTS, "prepare.split_bytes": 1500}  # pool file 2 goes as parts
    local = make_config(tmp_path, tokenizer_dir, c4_inputs, out="local", **extra)
    run_stage("prepare", local)
    config = make_config(tmp_path, tokenizer_dir, c4_inputs, output_dir=s3_bucket.join("out").url,
                         **extra)
    saved = tmp_path / "config.yaml"
    saved.write_text(to_yaml(config))
    run = RunLayout.of(config)
    pool, parts = run.tokens("pool"), run.tokens("pool").join("_parts")

    # Killed mid-file: file 0 done, file 1's first shards written, its record not.
    kill_when_frozen(saved, f"{pool.url}/00001-00002.parquet", tmp_path / "kill-1")
    assert sorted(records(pool)) == ["00000.done.json"]
    names = [loc.name for loc in shard_locations(pool)]
    assert "00001-00001.parquet" in names and "00001-00002.parquet" not in names
    assert not storage.exists(run.token_stats("pool")) and not run.has_run("prepare")
    first = storage.read_bytes(pool.join("00000.done.json"))

    # Killed again among file 2's parts: two parts committed, the third's data without record.
    kill_when_frozen(saved, f"{parts.url}/00002-00002.json", tmp_path / "kill-2")
    assert sorted(records(pool)) == ["00000.done.json", "00001.done.json"]
    assert [loc.name for loc in storage.glob(parts.join("*"))] == [
        f"00002-0000{i}.{ext}" for i in range(2) for ext in ("json", "parquet")
    ] + ["00002-00002.parquet"]
    spans = plan_spans(list_inputs(config, "pool")[2], 1500)

    rerun = subprocess.run([sys.executable, "-m", "colorfilter", "prepare", str(saved)],
                           env={**os.environ, "PYTHONPATH": str(REPO)}, capture_output=True,
                           text=True, timeout=180)
    assert rerun.returncode == 0, rerun.stderr[-3000:]
    tasks = len(spans) - 2 + 2 + 1  # the parts not committed, the two target files, assembly
    assert f"{tasks}/{tasks} done" in rerun.stderr and "(2 files already done" in rerun.stderr
    assert storage.read_bytes(pool.join("00000.done.json")) == first  # not redone
    assert_same_run(local, config)
    seq_ids = np.concatenate([t.column("seq_id").to_numpy() for t in split_tables(pool).values()])
    assert np.unique(seq_ids).size == seq_ids.size  # no row written twice
    assert_nothing_local(tmp_path, quiet_disk)


def test_tokenizer_from_a_bucket_url(tmp_path, tokenizer_dir, c4_inputs, s3_bucket, quiet_disk):
    url = s3_bucket.join("tokenizers", "bpe400")
    upload_folder(tokenizer_dir, url)
    config = make_config(tmp_path, Path("unused"), c4_inputs, out="from-url", tokenizer=url.url)
    reference = make_config(tmp_path, tokenizer_dir, c4_inputs, out="from-dir")
    run_stage("prepare", config)
    run_stage("prepare", reference)
    saved = config.output_path / "tokenizer"
    expected = reference.output_path / "tokenizer"
    assert {p.name: p.read_bytes() for p in saved.iterdir()} == {
        p.name: p.read_bytes() for p in expected.iterdir()}
    for split in SPLITS:
        ours = config.output_path / "tokens" / split
        theirs = reference.output_path / "tokens" / split
        assert [p.name for p in list_shards(ours)] == [p.name for p in list_shards(theirs)]
        assert all(read_parquet(a).equals(read_parquet(b))
                   for a, b in zip(list_shards(ours), list_shards(theirs)))
    cached = list((tmp_path / "cache").iterdir())
    assert any(p.name.endswith("-bpe400") for p in cached)  # fetched once into the node cache
    assert list(quiet_disk.iterdir()) == []


def test_unreadable_tokenizer_url_is_one_config_error(tmp_path, c4_inputs, s3_bucket, quiet_disk):
    from colorfilter.errors import ConfigError

    url = s3_bucket.join("no-tokenizer-here").url
    config = make_config(tmp_path, Path("unused"), c4_inputs, tokenizer=url)
    with pytest.raises(ConfigError) as info:
        run_stage("prepare", config)
    assert str(info.value).startswith("tokenizer: ") and url in str(info.value)
    assert "\n" not in str(info.value)
    assert not (config.output_path / "tokenizer").exists()


def test_tokenizer_key_takes_folder_urls_and_hub_names(tmp_path, tokenizer_dir, c4_inputs):
    from colorfilter.errors import ConfigError

    for value in ("s3://b/tok", "gs://b/tok", "hf://org/model", "file:///tmp/tok",
                  "EleutherAI/gpt-neox-20b"):
        assert make_config(tmp_path, tokenizer_dir, c4_inputs, tokenizer=value).tokenizer == value
    with pytest.raises(ConfigError, match="tokenizer.*ftp://"):
        make_config(tmp_path, tokenizer_dir, c4_inputs, tokenizer="ftp://host/tok")
