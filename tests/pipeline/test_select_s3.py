"""select with output_dir on a bucket (a real S3 server on 127.0.0.1): the same datasets as on
local disk, written only through the storage layer, and a killed run resumes to them.

The inputs (prepare + score with two random micro models) are built on local disk by the
`scored_run` fixture and uploaded; then select runs with the bucket URL as output_dir, in an
empty working directory that must stay empty.
"""

from __future__ import annotations

import os
import signal
import subprocess
import sys
import time
from dataclasses import replace
from pathlib import Path

import numpy as np
import pytest

from colorfilter.dataset import merge
from colorfilter.io import storage
from colorfilter.io.transfer import read_parquet, upload_folder
from colorfilter.pipeline.stages import run_stage
from tests.pipeline.test_resume import cli_command, cli_env, scored_run  # noqa: F401 (fixture)

NAMES = ["color-tau4", "color-tau8", "random-tau4", "random-tau8"]  # the order of writing
FREEZE_ENV = "COLORFILTER_TEST_FREEZE_SHARD"
CHILD_BOOT = "from tests.pipeline.test_select_s3 import child_main; child_main()"


def child_main() -> None:
    """The CLI in a subprocess that freezes before its Nth output shard upload (for kill -9)."""
    count, marker = os.environ[FREEZE_ENV].split("|")
    write, seen = merge.write_shard, []

    def write_or_freeze(loc, table):
        seen.append(loc)
        if len(seen) == int(count):
            Path(marker).write_text(loc.url)
            while True:  # until the test's SIGKILL
                time.sleep(60)
        return write(loc, table)

    merge.write_shard = write_or_freeze
    sys.argv = ["colorfilter", *sys.argv[1:]]
    from colorfilter.cli import main

    main()


@pytest.fixture
def on_bucket(scored_run, s3_bucket, tmp_path, monkeypatch):  # noqa: F811
    """(local reference config after select, bucket config before select, empty cwd)."""
    upload_folder(scored_run.output_path, s3_bucket.join("out"))
    run_stage("select", scored_run)
    cwd = tmp_path / "cwd"
    cwd.mkdir()
    monkeypatch.chdir(cwd)
    monkeypatch.setenv("COLORFILTER_CACHE", str(tmp_path / "cache"))
    return scored_run, replace(scored_run, output_dir=s3_bucket.join("out").url), cwd


def assert_same_datasets(local, remote_url: str) -> None:
    """indices.npy, every data shard (bytes) and the manifests' file hashes equal the local run's;
    the bucket holds no work dir or temp object."""
    root = storage.Location.parse(remote_url)
    for name in NAMES:
        ours, theirs = root.join("selected", name), local.output_path / "selected" / name
        assert storage.read_bytes(ours.join("indices.npy")) == (theirs / "indices.npy").read_bytes()
        shards = sorted(p.name for p in (theirs / "data").glob("*.parquet"))
        assert len(shards) > 1
        assert sorted(loc.name for loc in storage.list_dir(ours.join("data"))) == shards
        for shard in shards:
            assert storage.read_bytes(ours.join("data", shard)) == (theirs / "data" / shard).read_bytes()
        assert read_parquet(ours.join("data", shards[0])).equals(read_parquet(theirs / "data" / shards[0]))
        manifest = storage.read_json(ours.join("manifest.json"))
        expected = storage.read_json(theirs / "manifest.json")
        assert manifest["complete"] and manifest["counts"] == expected["counts"]
        for files in (manifest["files"], expected["files"]):
            files.pop("README.md")  # the card names the config hash, whose output_dir differs
        assert manifest["files"] == expected["files"]
        assert manifest["inputs"][0]["path"].startswith("s3://")
    names = [info.location.relative_to(root) for info in storage.find(root.join("selected"))]
    assert not [n for n in names if n.startswith("selected/_work") or "/.tmp-" in n]


def assert_nothing_local(cwd: Path, tmp_path: Path) -> None:
    assert list(cwd.iterdir()) == []
    assert not [p for p in tmp_path.rglob("*") if p.name.startswith("s3:")]


def test_select_on_a_bucket_equals_local_disk(on_bucket, tmp_path):
    local, remote, cwd = on_bucket
    summaries = run_stage("select", remote)
    assert sorted(summaries) == sorted(NAMES) and not any(s["noop"] for s in summaries.values())
    assert_same_datasets(local, remote.output_dir)
    assert_nothing_local(cwd, tmp_path)
    assert (tmp_path / "cache").is_dir()  # the tokenizer, fetched once for decoding
    again = run_stage("select", remote)  # complete folders: nothing to do
    assert all(s["noop"] for s in again.values())


def test_ray_actors_select_on_a_bucket(on_bucket, tmp_path, ray_session):
    local, remote, cwd = on_bucket
    remote = replace(remote, executor="ray", selection=replace(
        remote.selection, num_workers=2, worker_cpus=0.5))
    run_stage("select", remote)
    assert_same_datasets(local, remote.output_dir)
    assert_nothing_local(cwd, tmp_path)


def test_killed_select_on_a_bucket_resumes_to_the_same_datasets(on_bucket, tmp_path):
    local, remote, cwd = on_bucket
    command = [*cli_command("select", local.output_path / "config.yaml"),
               "--set", f"output_dir={remote.output_dir}"]
    marker = tmp_path / "frozen.txt"
    boot = [sys.executable, "-c", CHILD_BOOT, *command[3:]]
    env = {**cli_env(), FREEZE_ENV: f"7|{marker}"}  # the 7th shard: inside the second folder
    driver = subprocess.Popen(boot, env=env, cwd=cwd, stdout=subprocess.DEVNULL,
                              stderr=subprocess.PIPE)
    deadline = time.time() + 60
    while not marker.exists() and driver.poll() is None and time.time() < deadline:
        time.sleep(0.05)
    driver.send_signal(signal.SIGKILL)  # kill -9: no cleanup code runs
    _, stderr = driver.communicate()
    assert marker.exists(), stderr.decode()[-3000:]
    root = storage.Location.parse(remote.output_dir)
    done = [storage.exists(root.join("selected", n, "manifest.json")) for n in NAMES]
    assert done == [True, False, False, False]  # what the kill left is not trusted
    assert storage.exists(root.join("selected", "_work", "plan.json"))
    written = []
    write = merge.write_shard
    with pytest.MonkeyPatch.context() as patch:
        patch.setattr(merge, "write_shard", lambda loc, t: written.append(loc) or write(loc, t))
        summaries = run_stage("select", remote)
    assert {n: s["noop"] for n, s in summaries.items()} == dict(zip(NAMES, done))
    total = sum(s["num_shards"] for s in summaries.values())
    first = summaries[NAMES[0]]["num_shards"]
    assert 0 < len(written) < total - first  # finished reducers' shards were kept
    assert_same_datasets(local, remote.output_dir)
    assert_nothing_local(cwd, tmp_path)
    assert np.load(local.output_path / "selected" / NAMES[1] / "indices.npy").size
