"""Several selections written in one map/reduce pass equal each one written alone, whether the
tasks run in-process or on 1 or 2 Ray actors; the map pass reads every input shard once."""

from __future__ import annotations

import numpy as np
import pyarrow.parquet as pq
import pytest

from colorfilter.config import RayConfig
from colorfilter.dataset import manifest as mf
from colorfilter.dataset.merge import reducer_ranges
from colorfilter.dataset.writer import PoolInputs, SelectionJob, write_selections
from colorfilter.io import storage
from colorfilter.pipeline.execution import Execution
from colorfilter.selection import random_key
from tests.dataset.synthetic import write_one

ROWS_PER_SHARD = 5


def jobs_for(pool, root) -> list[SelectionJob]:
    ids = np.array(sorted(pool.scores()), dtype=np.uint64)
    random_ids = ids[np.argsort(random_key(ids, 3))[: len(ids) // 3]]
    return [
        SelectionJob(pool.top_k(4), root / "color-tau4", "color", 4.0, seed=1,
                     rows_per_shard=ROWS_PER_SHARD),
        SelectionJob(pool.top_k(8), root / "color-tau8", "color", 8.0, seed=1,
                     rows_per_shard=ROWS_PER_SHARD),
        SelectionJob(random_ids, root / "random-tau3", "random", 3.0, seed=2,
                     rows_per_shard=2 * ROWS_PER_SHARD, threshold=None),
    ]  # fmt: skip


def inputs_for(pool) -> PoolInputs:
    return PoolInputs(
        pool.token_dir, pool.score_dir, pool.tokenizer_dir, config={"run": 1},
        skipped={"empty_document": 2},
    )  # fmt: skip


def folder_state(folder) -> dict:
    """Everything a folder holds that must not depend on how it was written."""
    manifest = mf.read_manifest(folder)
    assert manifest is not None and mf.verify_files(folder, manifest) == []
    shards = sorted((folder / "data").glob("train-*.parquet"))
    return {
        "files": manifest["files"],  # sha256 of every data shard, indices.npy, PNG and card
        "counts": manifest["counts"],
        "scores": manifest["scores"],
        "rows": [pq.read_table(p).to_pylist() for p in shards],
        "indices": np.load(folder / "indices.npy").tolist(),
    }


@pytest.fixture(scope="module")
def alone(pool, tmp_path_factory) -> dict:
    """The reference: each selection written alone, in-process."""
    root = tmp_path_factory.mktemp("alone")
    states = {}
    for job in jobs_for(pool, root):
        write_one(
            job.seq_ids, pool.token_dir, pool.score_dir, pool.tokenizer_dir, job.out_dir,
            method=job.method, tau=job.tau, seed=job.seed, rows_per_shard=job.rows_per_shard,
            threshold=job.threshold, config={"run": 1}, skipped={"empty_document": 2},
        )  # fmt: skip
        states[job.out_dir.name] = folder_state(job.out_dir)
    return states


def test_one_pass_local_equals_each_alone(pool, alone, tmp_path, monkeypatch):
    import colorfilter.dataset.runs as runs
    from colorfilter.io.transfer import read_parquet

    reads = []

    def counting_read(loc, columns=None, expected=None):  # the map tasks' reads, counted
        reads.append(loc.path)
        return read_parquet(loc, columns, expected)

    monkeypatch.setattr(runs, "read_parquet", counting_read)
    jobs = jobs_for(pool, tmp_path)
    summaries = write_selections(jobs, inputs_for(pool), tmp_path / ".tmp-select", Execution())
    assert [s["noop"] for s in summaries] == [False] * 3
    inputs = sorted(str(p) for d in (pool.token_dir, pool.score_dir) for p in d.glob("*.parquet"))
    assert sorted(reads) == inputs  # every token and score shard read once for all selections
    assert {job.out_dir.name: folder_state(job.out_dir) for job in jobs} == alone
    assert not (tmp_path / ".tmp-select").exists()
    again = write_selections(jobs, inputs_for(pool), tmp_path / ".tmp-select", Execution())
    assert [s["noop"] for s in again] == [True] * 3


@pytest.mark.parametrize("workers", [1, 2])
def test_ray_actors_write_the_same_folders(pool, alone, tmp_path, ray_session, workers):
    execution = Execution("ray", workers, 0.5, RayConfig(num_cpus=2))
    jobs = jobs_for(pool, tmp_path)
    write_selections(jobs, inputs_for(pool), tmp_path / ".tmp-select", execution)
    assert {job.out_dir.name: folder_state(job.out_dir) for job in jobs} == alone


def test_reducer_ranges_cover_every_shard_once():
    assert reducer_ranges(1, 4) == [(0, 1)]
    assert reducer_ranges(10, 4) == [(0, 2), (2, 5), (5, 7), (7, 10)]
    for shards in (1, 3, 17):
        for reducers in (1, 2, 5, 40):
            ranges = reducer_ranges(shards, reducers)
            covered = [s for a, b in ranges for s in range(a, b)]
            assert covered == list(range(shards))


def test_recorded_hashes_only_while_they_describe_the_file(tmp_path):
    import json

    from colorfilter.dataset.provenance import recorded_sha256

    part, shard = tmp_path / "00003-00001.parquet", tmp_path / "00003-00001b.parquet"
    part.write_bytes(b"token part")
    shard.write_bytes(b"score shard")
    assert recorded_sha256(part) is None  # no record: the manifest hashes the file
    (tmp_path / "_done").mkdir()
    prepare = {"part_bytes": {part.name: 10}, "part_sha256": {part.name: "a" * 64}}
    (tmp_path / "_done" / "00003.json").write_text(json.dumps(prepare))
    (tmp_path / "_done" / f"{shard.stem}.json").write_text(
        json.dumps({"sha256": "b" * 64, "bytes": 11})
    )
    assert recorded_sha256(part) == "a" * 64 and recorded_sha256(shard) == "b" * 64
    part.write_bytes(b"rewritten since")
    assert recorded_sha256(part) is None
    entry = mf.describe_files([part], known=recorded_sha256)[0]
    assert entry["sha256"] == storage.file_sha256(part)
