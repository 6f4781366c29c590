"""select with output_dir on a bucket (a real S3 server on 127.0.0.1): the same datasets as on
local disk, written only through the storage layer, and a killed run resumes to them.

The inputs (prepare + score with two random micro models) are built on local disk by the
`scored_run` fixture and uploaded; then select runs with the bucket URL as output_dir, in an
empty working directory that must stay empty.
"""

from __future__ import annotations

import os
import shutil
import signal
import subprocess
import sys
import time
from dataclasses import replace
from pathlib import Path

import numpy as np
import pytest

from colorfilter.dataset import merge, runs
from colorfilter.dataset.runfiles import save_array, sorted_slice
from colorfilter.io import storage
from colorfilter.io.transfer import read_parquet, upload_folder
from colorfilter.pipeline.stages import run_stage
from tests.conftest import write_c4_inputs
from tests.pipeline.test_resume import build_scored_run, cli_command, cli_env

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


@pytest.fixture(scope="module")
def reference(tmp_path_factory, tokenizer_dir):
    """A prepared and scored run (kept unselected in `pristine`), then selected on local disk."""
    root = tmp_path_factory.mktemp("select-s3")
    scored = build_scored_run(root, tokenizer_dir, write_c4_inputs(root))
    pristine = root / "scored"
    shutil.copytree(scored.output_path, pristine)
    run_stage("select", scored)
    return scored, pristine


@pytest.fixture
def on_bucket(reference, s3_bucket, tmp_path, monkeypatch):
    """(local reference config, the same run's config on a bucket before select, empty cwd)."""
    local, pristine = reference
    upload_folder(pristine, s3_bucket.join("out"))
    cwd = tmp_path / "cwd"
    cwd.mkdir()
    monkeypatch.chdir(cwd)
    monkeypatch.setenv("COLORFILTER_CACHE", str(tmp_path / "cache"))
    return local, replace(local, output_dir=s3_bucket.join("out").url), cwd


def assert_same_datasets(local, remote_url: str) -> None:
    """indices.npy, every data shard (bytes) and the manifests' file hashes equal the local run's;
    the bucket holds no work dir or temp object."""
    root = storage.Location.parse(remote_url)
    for name in NAMES:
        ours, theirs = root.join("selected", name), local.output_path / "selected" / name
        indices = storage.read_bytes(ours.join("indices.npy"))
        assert indices == (theirs / "indices.npy").read_bytes()
        shards = sorted(p.name for p in (theirs / "data").glob("*.parquet"))
        assert len(shards) > 1
        assert sorted(loc.name for loc in storage.list_dir(ours.join("data"))) == shards
        for shard in shards:
            data = storage.read_bytes(ours.join("data", shard))
            assert data == (theirs / "data" / shard).read_bytes()
        table = read_parquet(ours.join("data", shards[0]))
        assert table.equals(read_parquet(theirs / "data" / shards[0]))
        manifest = storage.read_json(ours.join("manifest.json"))
        expected = storage.read_json(theirs / "manifest.json")
        assert manifest["complete"] and manifest["counts"] == expected["counts"]
        for files in (manifest["files"], expected["files"]):
            files.pop("README.md")  # the card names the config hash, whose output_dir differs
        assert manifest["files"] == expected["files"]
        assert manifest["inputs"][0]["path"].startswith("s3://")
    names = [info.location.relative_to(root) for info in storage.find(root.join("selected"))]
    assert names and not [n for n in names if n.startswith("selected/_work") or "/.tmp-" in n]


def assert_nothing_local(cwd: Path, tmp_path: Path) -> None:
    assert list(cwd.iterdir()) == []
    assert not [p for p in tmp_path.rglob("*") if p.name.startswith("s3:")]


def test_select_on_a_bucket_equals_local_disk(on_bucket, tmp_path):
    local, remote, cwd = on_bucket
    summaries = run_stage("select", remote)
    assert sorted(summaries) == sorted(NAMES) and not any(s["noop"] for s in summaries.values())
    assert_same_datasets(local, remote.output_dir)
    assert_nothing_local(cwd, tmp_path)
    assert list((tmp_path / "cache").iterdir())  # the tokenizer, fetched once for decoding
    again = run_stage("select", remote)  # complete folders: nothing to do
    assert all(s["noop"] for s in again.values())


def test_ray_actors_select_on_a_bucket(on_bucket, tmp_path, ray_session):
    local, remote, cwd = on_bucket
    remote = replace(remote, executor="ray", selection=replace(
        remote.selection, num_workers=2, worker_cpus=0.5))
    run_stage("select", remote)
    assert_same_datasets(local, remote.output_dir)
    assert_nothing_local(cwd, tmp_path)


def kill_frozen_cli(command: list[str], count: int, cwd: Path, marker: Path) -> None:
    """Run the CLI until it is about to upload its `count`th output shard, then kill -9 it."""
    boot = [sys.executable, "-c", CHILD_BOOT, *command[3:]]
    env = {**cli_env(), FREEZE_ENV: f"{count}|{marker}"}
    driver = subprocess.Popen(boot, env=env, cwd=cwd, stdout=subprocess.DEVNULL,
                              stderr=subprocess.PIPE)
    deadline = time.time() + 120
    while not marker.exists() and driver.poll() is None and time.time() < deadline:
        time.sleep(0.05)
    driver.send_signal(signal.SIGKILL)  # kill -9: no cleanup code runs
    _, stderr = driver.communicate()
    assert marker.exists(), stderr.decode()[-3000:]


def test_killed_select_on_a_bucket_resumes_to_the_same_datasets(on_bucket, tmp_path):
    local, remote, cwd = on_bucket
    shards = [storage.read_json(local.output_path / "selected" / n / "manifest.json")
              ["selection"]["num_shards"] for n in NAMES]
    second = merge.reducer_ranges(shards[1], 2)[1][0]  # the second folder's second reducer
    command = [*cli_command("select", local.output_path / "config.yaml"),
               "--set", f"output_dir={remote.output_dir}"]
    # killed before the second folder's second reducer uploads its first shard
    kill_frozen_cli(command, shards[0] + second + 1, cwd, tmp_path / "frozen.txt")
    root = storage.Location.parse(remote.output_dir)
    folders = [root.join("selected", n) for n in NAMES]
    done = [storage.exists(folder.join("manifest.json")) for folder in folders]
    assert done == [True, False, False, False]  # nothing of the kill is trusted but folder 1
    assert storage.exists(folders[1].join(".tmp-reduce-0000.json"))  # its first reducer's
    assert storage.exists(root.join("selected", "_work", "plan.done.json"))
    written, mapped = [], []
    write, map_shard = merge.write_shard, runs.map_shard
    with pytest.MonkeyPatch.context() as patch:
        patch.setattr(merge, "write_shard", lambda loc, t: written.append(loc) or write(loc, t))
        patch.setattr(runs, "map_shard", lambda *a: mapped.append(a) or map_shard(*a))
        summaries = run_stage("select", remote)
    assert {n: s["noop"] for n, s in summaries.items()} == dict(zip(NAMES, done))
    assert mapped == []  # every map task was committed before the kill
    assert len(written) == sum(shards) - shards[0] - second  # finished reducers were kept
    assert_same_datasets(local, remote.output_dir)
    assert_nothing_local(cwd, tmp_path)


def test_index_slices_by_ranged_reads_on_a_bucket(s3_bucket, tmp_path, monkeypatch):
    """A large remote index is binary-searched by ranged reads: the same slice as on disk."""
    import colorfilter.dataset.runfiles as runfiles

    rng = np.random.default_rng(0)
    ids = np.unique(rng.integers(0, 1 << 40, 3000, dtype=np.uint64))
    positions = rng.permutation(ids.size).astype(np.int64)
    local = [storage.Location.parse(str(tmp_path / n)) for n in ("ids.npy", "pos.npy")]
    remote = [s3_bucket.join(n) for n in ("ids.npy", "pos.npy")]
    for locs in (local, remote):
        save_array(locs[0], ids)
        save_array(locs[1], positions)
    monkeypatch.setattr(runfiles, "WHOLE_READ_BYTES", 0)
    for low, high in [(0, 1 << 41), (int(ids[10]), int(ids[20])), (int(ids[5]) + 1, int(ids[6]))]:
        got, expected = sorted_slice(*remote, low, high), sorted_slice(*local, low, high)
        assert np.array_equal(got[0], expected[0]) and np.array_equal(got[1], expected[1])
    assert sorted_slice(*remote, int(ids[5]) + 1, int(ids[6]) - 1)[0].size == 0


def test_dsir_weights_on_a_bucket_equal_local_disk(on_bucket, tmp_path):
    from colorfilter.pipeline.select import dsir_weight_shards

    local, remote, cwd = on_bucket
    expected = dsir_weight_shards(local)
    got = dsir_weight_shards(remote)
    assert [loc.name for loc in got] == [loc.name for loc in expected] and got
    assert all(loc.url.startswith("s3://") and "/scores/dsir/" in loc.url for loc in got)
    for ours, theirs in zip(got, expected):
        assert storage.read_bytes(ours) == storage.read_bytes(theirs)
    assert dsir_weight_shards(remote) == got  # present: reused, not recomputed
    assert_nothing_local(cwd, tmp_path)
