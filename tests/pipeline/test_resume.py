"""Resume: a driver killed with kill -9 during prepare or select, and the debris a kill leaves
(temp files, parts without a completion record, truncated files), end in an undisturbed run's
result on rerun, without rewriting finished work.

The killed drivers are real `python -m colorfilter` subprocesses. To kill them at a chosen point
rather than at a lucky moment, the subprocess freezes (a test hook, `child_main`) just after the
Nth matching output is written to its temp file and before it is renamed into place; the test
then sends SIGKILL, which leaves exactly what a kill -9 at that instant leaves.
"""

from __future__ import annotations

import fnmatch
import json
import os
import shutil
import signal
import subprocess
import sys
import time
from dataclasses import replace
from pathlib import Path

import numpy as np
import pyarrow.parquet as pq
import pytest

from colorfilter.config import Config, save_resolved
from colorfilter.io import storage
from colorfilter.io.atomic import TMP_PREFIX, read_json
from colorfilter.io.token_shards import list_shards
from colorfilter.pipeline.prepare import SPLITS, done_path
from colorfilter.pipeline.stages import run_stage
from colorfilter.scoring.shard import done_record_path, is_shard_done
from tests.conftest import sample_documents, save_random_models, write_jsonl
from tests.pipeline.test_faults import file_records, score_table
from tests.pipeline.test_prepare import make_config, shard_digests

REPO = Path(__file__).resolve().parents[2]
PAUSE_ENV = "COLORFILTER_TEST_PAUSE_AT"
CHILD_BOOT = "from tests.pipeline.test_resume import child_main; child_main()"
SELECTION = {
    "selection.methods": "[color,random]",
    "selection.tau": "[4,8]",
    "selection.output.rows_per_shard": 16,
}


def child_main() -> None:
    """A driver subprocess: the colorfilter CLI with the pause hook that $PAUSE_ENV names."""
    install_pause_hook(os.environ[PAUSE_ENV])
    sys.argv = ["colorfilter", *sys.argv[1:]]
    from colorfilter.cli import main

    main()


def install_pause_hook(spec: str) -> None:
    """Freeze when the Nth output matching a glob is written but not yet renamed into place.

    `spec` is "GLOB|N|MARKER": the marker file receives the temp file's path once frozen.
    """
    from colorfilter.io import atomic

    pattern, count, marker = spec.split("|")
    seen = 0
    fsync = atomic._fsync_file

    def fsync_then_maybe_freeze(tmp: Path) -> None:
        nonlocal seen
        fsync(tmp)
        final = tmp.parent / tmp.name[len(TMP_PREFIX) :].rsplit(".", 1)[0]
        if fnmatch.fnmatch(str(final), pattern):
            seen += 1
            if seen == int(count):
                Path(marker + ".part").write_text(str(tmp))
                os.replace(marker + ".part", marker)  # whole when the test sees it
                while True:  # until the test's SIGKILL
                    time.sleep(60)

    atomic._fsync_file = fsync_then_maybe_freeze


def cli_command(stage: str, config_path: Path) -> list[str]:
    return [sys.executable, "-m", "colorfilter", stage, str(config_path), "--set", "executor=local"]


def cli_env() -> dict[str, str]:
    return {**os.environ, "PYTHONPATH": str(REPO)}


def kill_when_frozen(command: list[str], pattern: str, count: int, work: Path) -> Path:
    """Run the CLI `command` with the pause hook, kill -9 it once frozen; return its temp file."""
    marker, log = work / "frozen.txt", work / "driver.log"
    boot = [sys.executable, "-c", CHILD_BOOT, *command[3:]]  # command = python -m colorfilter ...
    env = {**cli_env(), PAUSE_ENV: f"{pattern}|{count}|{marker}"}
    with open(log, "wb") as out:
        driver = subprocess.Popen(boot, env=env, stdout=out, stderr=subprocess.STDOUT)
        deadline = time.time() + 60
        while not marker.exists() and driver.poll() is None and time.time() < deadline:
            time.sleep(0.05)
        driver.send_signal(signal.SIGKILL)  # kill -9: no cleanup code runs
        driver.wait()
    assert marker.exists(), f"the driver never reached {pattern}:\n{log.read_text()[-3000:]}"
    return Path(marker.read_text())


def mtimes(paths: list[Path]) -> dict[Path, int]:
    return {p: p.stat().st_mtime_ns for p in paths}


def temp_files(directory: Path) -> list[Path]:
    return list(directory.rglob(TMP_PREFIX + "*"))


def truncate(path: Path) -> None:
    """Cut a file in half, as a torn copy or a full disk would."""
    path.write_bytes(path.read_bytes()[: path.stat().st_size // 2])


@pytest.fixture
def many_inputs(tmp_path: Path, c4_inputs: dict) -> dict:
    """Eight small pool files in three formats: a prepare run of many files and parts."""
    records = [{"text": t, "source": "web"} for t in sample_documents(64, seed=3)]
    suffixes = (".json.gz", ".jsonl.zst", ".jsonl")
    names = [f"part-{i:02d}{suffixes[i % 3]}" for i in range(8)]
    pool = [
        write_jsonl(tmp_path / "many" / n, records[8 * i : 8 * i + 8]) for i, n in enumerate(names)
    ]
    return dict(c4_inputs, pool=pool)


@pytest.fixture
def scored_run(tmp_path: Path, tokenizer_dir: Path, c4_inputs: dict) -> Config:
    """A prepared and scored run (two random micro models), in-process, with two selections."""
    return build_scored_run(tmp_path, tokenizer_dir, c4_inputs)


def build_scored_run(tmp_path: Path, tokenizer_dir: Path, c4_inputs: dict) -> Config:
    """What `scored_run` builds, under `tmp_path` (for fixtures of a wider scope)."""

    config = make_config(tmp_path, tokenizer_dir, c4_inputs, **{
        "prepare.rows_per_shard": 48, "score.batch_size": 16, "score.torch_threads": 1,
        **SELECTION,
    })  # fmt: skip
    run_stage("prepare", config)
    save_random_models(config)
    run_stage("score", config)
    return config


def test_killed_prepare_driver_resumes_to_the_same_shards(tmp_path, tokenizer_dir, many_inputs):
    reference = make_config(tmp_path, tokenizer_dir, many_inputs, out="reference")
    run_stage("prepare", reference)
    config = make_config(tmp_path, tokenizer_dir, many_inputs)
    command = cli_command("prepare", save_resolved(config))
    tokens, pool = config.output_path / "tokens", config.output_path / "tokens" / "pool"

    writing = kill_when_frozen(command, "*/tokens/pool/00003-00002.parquet", 1, tmp_path)
    # What the kill left: files 0-2 finished, file 3 half written (parts 0-1 in place, part 2 a
    # temp file) with no completion record, files 4-7 and the target splits not started.
    assert [p.name for p in file_records(pool)] == [f"{i:05d}.done.json" for i in range(3)]
    assert writing.exists() and writing.parent == pool and writing.name.startswith(TMP_PREFIX)
    assert (pool / "00003-00001.parquet").exists() and not done_path(pool, 3).exists()
    assert not (tokens / "downstream_train").exists()
    done_before = mtimes([*pool.glob("0000[0-2]-*.parquet"), *file_records(pool)])

    rerun = subprocess.run(command, env=cli_env(), capture_output=True, text=True, check=True)
    assert "(3 files already done, skipped)" in rerun.stderr
    assert mtimes(list(done_before)) == done_before  # finished files were not rewritten
    for split in SPLITS:
        ours, theirs = tokens / split, reference.output_path / "tokens" / split
        assert shard_digests(ours) == shard_digests(theirs)  # same shard names, same contents
        table = pq.read_table(list_shards(ours), columns=["seq_id", "input_ids"]).sort_by("seq_id")
        expected = pq.read_table(list_shards(theirs), columns=["seq_id", "input_ids"])
        assert table.equals(expected.sort_by("seq_id"))
        seq_ids = table.column("seq_id").to_numpy()
        assert np.unique(seq_ids).size == seq_ids.size  # no row written twice
        assert read_json(ours / "stats.json") == read_json(theirs / "stats.json")
    assert not temp_files(tokens)


def test_killed_select_driver_resumes_to_the_same_datasets(scored_run, tmp_path, monkeypatch):

    reference = replace(scored_run, output_dir=str(tmp_path / "reference"))
    shutil.copytree(scored_run.output_path, reference.output_path)
    hashed = []
    sha256_file = storage.file_sha256
    monkeypatch.setattr(storage, "file_sha256", lambda p: hashed.append(Path(p)) or sha256_file(p))
    run_stage("select", reference)
    monkeypatch.undo()
    # The manifests' input hashes come from prepare's and score's records: no shard is re-read.
    inputs = read_json(reference.output_path / "selected" / "color-tau4" / "manifest.json")
    assert {e["sha256"] for e in inputs["inputs"]} == {
        sha256_file(e["path"]) for e in inputs["inputs"]
    }
    assert not [p for p in hashed if p.parent.name == "pool"]
    command = cli_command("select", scored_run.output_path / "config.yaml")
    selected = scored_run.output_path / "selected"
    work = selected / "_work"
    names = ["color-tau4", "color-tau8", "random-tau4", "random-tau8"]  # the order of writing
    n_shards = len(list_shards(scored_run.output_path / "tokens" / "pool"))

    # Killed in the map pass (one task per token shard writes the runs of all four selections):
    # five shards mapped, the sixth's record a temp file, no folder written yet.
    kills = [tmp_path / "kill-1", tmp_path / "kill-2"]
    for path in kills:
        path.mkdir()
    writing = kill_when_frozen(command, "*/selected/_work/maps/000005.json", 1, kills[0])
    assert writing.exists() and len(list((work / "maps").glob("0*.json"))) == 5
    assert not any((selected / n / "manifest.json").exists() for n in names)
    mapped = mtimes(sorted((work / "maps").glob("00000[0-4]/*.arrow")))
    assert len(mapped) == 5 * len(names)

    # Killed again in the reduce phase: the rerun kept the five mapped shards, mapped the rest,
    # finished two folders and was writing the third one's second output shard.
    writing = kill_when_frozen(command, "*/selected/random-tau4/data/train-00001-of-*", 1, kills[1])
    assert "(5 shards already done, skipped)" in (kills[1] / "driver.log").read_text()
    assert mtimes(list(mapped)) == mapped  # finished map tasks were not redone
    complete = [(selected / n / "manifest.json").exists() for n in names]
    assert complete == [True, True, False, False]
    assert writing.exists() and (work / "maps").is_dir()
    assert len(list((selected / "random-tau4" / "data").glob("train-*.parquet"))) == 1
    done_before = mtimes([p for n in names[:2] for p in (selected / n).rglob("*") if p.is_file()])

    rerun = subprocess.run(command, env=cli_env(), capture_output=True, text=True, check=True)
    assert f"({n_shards} shards already done, skipped)" in rerun.stderr
    summaries = json.loads(rerun.stdout)
    assert {n: s["noop"] for n, s in summaries.items()} == dict(zip(names, complete))
    assert mtimes(list(done_before)) == done_before  # complete folders were not rewritten
    for name in names:
        ours, theirs = selected / name, reference.output_path / "selected" / name
        shards = sorted(p.name for p in (ours / "data").glob("*.parquet"))
        assert shards == sorted(p.name for p in (theirs / "data").glob("*.parquet"))
        assert len(shards) > 1
        for shard in shards:
            table = pq.read_table(ours / "data" / shard)
            assert table.equals(pq.read_table(theirs / "data" / shard))
        assert np.array_equal(np.load(ours / "indices.npy"), np.load(theirs / "indices.npy"))
        manifest, expected = read_json(ours / "manifest.json"), read_json(theirs / "manifest.json")
        assert manifest["complete"] and manifest["counts"] == expected["counts"]
        assert set(manifest["files"]) == set(expected["files"])
        ours_files, expected_files = manifest["files"], expected["files"]
        for files in (ours_files, expected_files):
            files.pop("README.md")  # its card names the run's config, whose output_dir differs
        assert ours_files == expected_files  # same bytes, shard by shard
        assert manifest["counts"]["selected"] == np.load(ours / "indices.npy").size
    assert not temp_files(selected) and not work.exists()


def test_prepare_redoes_partial_and_corrupt_outputs(tmp_path, tokenizer_dir, c4_inputs, capsys):
    config = make_config(tmp_path, tokenizer_dir, c4_inputs)
    run_stage("prepare", config)
    tokens = config.output_path / "tokens"
    pool, train = tokens / "pool", tokens / "downstream_train"
    digests = {split: shard_digests(tokens / split) for split in SPLITS}
    stats = {split: read_json(tokens / split / "stats.json") for split in SPLITS}
    untouched = mtimes([*pool.glob("00002-*.parquet"), *list_shards(tokens / "downstream_eval")])
    # pool file 0: a truncated part and no completion record (killed between part and record)
    done_path(pool, 0).unlink()
    truncate(pool / "00000-00001.parquet")
    # pool file 1: its record says done, but a part is truncated
    truncate(pool / "00001-00002.parquet")
    # pool file 2: done and whole, with the temp files of a killed rewrite beside it
    (pool / f"{TMP_PREFIX}00002-00000.parquet.k1ll3d").write_bytes(b"PAR1 partial")
    (pool / f"{TMP_PREFIX}00002.done.json.k1ll3d").write_text('{"input": ')
    # the target split's only file: a torn completion record
    done_path(train, 0).write_text('{"input": {"uri": ')
    capsys.readouterr()

    rerun = run_stage("prepare", config)
    assert "(2 files already done, skipped)" in capsys.readouterr().err  # of 5: 3 redone
    assert {split: shard_digests(tokens / split) for split in SPLITS} == digests
    assert {split: rerun[split] for split in SPLITS} == stats
    assert mtimes(list(untouched)) == untouched
    assert not temp_files(tokens)


def test_score_redoes_partial_and_corrupt_shards(scored_run):
    score_dir = scored_run.output_path / "scores" / "pool"
    expected = score_table(scored_run)
    paths = list_shards(score_dir)
    # shard 0: a truncated file and no completion record
    Path(done_record_path(paths[0])).unlink()
    truncate(paths[0])
    # shard 1: whole, but no completion record (killed between the rename and the record)
    Path(done_record_path(paths[1])).unlink()
    # shard 2: its record says done, but the file is truncated
    truncate(paths[2])
    # shard 3: done and whole, with the temp files of a killed rewrite beside it
    (score_dir / f"{TMP_PREFIX}{paths[3].name}.k1ll3d").write_bytes(b"PAR1 partial")
    (score_dir / f"{TMP_PREFIX}{paths[3].stem}.done.json.k1ll3d").write_text('{"format": ')
    untouched = mtimes([*paths[3:], *(Path(done_record_path(p)) for p in paths[3:])])

    stats = run_stage("score", scored_run)
    assert (stats["shards_scored_now"], stats["shards_skipped"]) == (3, len(paths) - 3)
    assert stats["rows"] == len(expected["seq_id"])
    assert score_table(scored_run) == expected
    assert mtimes(list(untouched)) == untouched
    token_dir = scored_run.output_path / "tokens" / "pool"
    assert all(is_shard_done(p, token_dir / p.name) for p in list_shards(score_dir))
    assert not temp_files(score_dir)


class _Killed(Exception):
    pass


def _killed_map(*args, **kwargs):
    raise _Killed  # the driver dies as the first task would start
    yield  # pragma: no cover - a generator, like map_tasks


def test_a_rerun_that_redoes_work_withdraws_the_stage_marker_until_it_finishes(
    scored_run, monkeypatch
):
    """A killed rerun must not leave the old stats.json (what later stages `require`) beside
    half-redone outputs: select would take a mix of old and new shards as a finished stage."""
    from colorfilter.layout import RunLayout
    from colorfilter.pipeline import executor

    run = RunLayout.of(scored_run)
    assert run.has_run("score") and run.has_run("prepare")
    records = sorted((scored_run.output_path / "scores" / "pool").glob("*.done.json"))
    records[0].unlink()  # one shard to redo, as after a changed model
    monkeypatch.setattr(executor, "map_tasks", _killed_map)
    with pytest.raises(_Killed):
        run_stage("score", scored_run)
    assert not run.has_run("score")

    first = sorted((scored_run.output_path / "tokens" / "pool").glob("*.done.json"))[0]
    first.unlink()  # that file's shards are redone
    with pytest.raises(_Killed):
        run_stage("prepare", scored_run)
    assert not run.has_run("prepare")
