"""Node faults on a real multi-node Ray on loopback: a worker node killed mid-prepare or
mid-score (a fresh one joins) and the stage finishes by itself with the outputs of an
undisturbed run; a node lost with no replacement stops the stage with a clear error after
`ray.capacity_wait_s`, and the rerun completes. Recovery times are printed (pytest -s)."""

from __future__ import annotations

import re
import shutil
import time

import pytest

from colorfilter.errors import ColorFilterError
from colorfilter.io.atomic import read_json
from colorfilter.pipeline import prepare, score
from colorfilter.pipeline.prepare import SPLITS, PrepareWorker
from colorfilter.pipeline.stages import run_stage
from tests.cluster.nodes import (
    SlowPrepareWorker,
    SlowScoreWorker,
    SlowSelectWorker,
    instead_of_session_ray,
    marks,
    prepare_scoring_run,
    run_killing_node,
)
from tests.pipeline import test_resume
from tests.pipeline.test_faults import copy_run, file_records, score_table
from tests.pipeline.test_prepare import make_config, shard_digests
from tests.pipeline.test_resume import mtimes

many_inputs = test_resume.many_inputs  # the fixture: eight small pool files

ON_CLUSTER = {"executor": "ray", "prepare.worker_cpus": 1, "prepare.num_workers": 2,
              "ray.capacity_wait_s": 60, "ray.retry_backoff_s": 0.2}  # fmt: skip


@pytest.fixture(scope="module")
def cluster():
    """One head for the module (tests add and kill worker nodes); the session's local Ray, if
    any, is stopped meanwhile and started again afterwards."""
    with instead_of_session_ray() as loopback:
        yield loopback


@pytest.fixture
def two_workers(cluster):
    nodes = [cluster.add_worker() for _ in range(2)]
    yield nodes
    for node in list(cluster.cluster.worker_nodes):
        cluster.kill(node)


def token_digests(config) -> dict:
    return {split: shard_digests(config.output_path / "tokens" / split) for split in SPLITS}


def split_stats(config) -> dict:
    return {s: read_json(config.output_path / "tokens" / s / "stats.json") for s in SPLITS}


def test_node_killed_mid_prepare_a_fresh_node_finishes_it(
    cluster, two_workers, tmp_path, tokenizer_dir, many_inputs, monkeypatch
):
    reference = make_config(tmp_path, tokenizer_dir, many_inputs, out="reference")
    run_stage("prepare", reference)
    config = make_config(tmp_path, tokenizer_dir, many_inputs, **ON_CLUSTER)
    monkeypatch.setattr(prepare, "PrepareWorker", SlowPrepareWorker)
    killed = run_killing_node(
        cluster, tmp_path, two_workers[0], lambda: run_stage("prepare", config), add_node=True
    )
    assert "error" not in killed, killed
    recovered_s = killed["ended_at"] - killed["killed_at"]
    redone_on = {node for task, node in marks(tmp_path, "done") if task == killed["task"]}
    assert redone_on and two_workers[0].node_id not in redone_on
    assert token_digests(config) == token_digests(reference)  # same names, same contents
    assert split_stats(config) == split_stats(reference)
    print(f"\nprepare: node killed mid-task, recovered in {recovered_s:.1f} s")


@pytest.fixture
def prepared(tmp_path, tokenizer_dir, c4_inputs):
    return prepare_scoring_run(tmp_path, tokenizer_dir, c4_inputs, **{"score.worker_gpus": 1})


def test_only_node_killed_mid_score_a_fresh_node_finishes_it(
    cluster, prepared, tmp_path, monkeypatch
):
    from dataclasses import replace

    reference = copy_run(prepared, tmp_path / "reference")
    run_stage("score", reference)
    config = replace(prepared, executor="ray")
    config.ray.capacity_wait_s, config.ray.retry_backoff_s = 60, 0.2
    monkeypatch.setattr(score, "ScoreWorker", SlowScoreWorker)
    only = cluster.add_worker()  # one GPU-like slot: the replacement must wait for a new node
    killed = run_killing_node(
        cluster, tmp_path, only, lambda: run_stage("score", config), add_node=True, min_done=1
    )
    stats, recovered_s = killed["result"], killed["ended_at"] - killed["killed_at"]
    done_on = {node for _task, node in marks(tmp_path, "done")}
    assert done_on == {only.node_id, killed["added"].node_id}  # the fresh node took over
    redone_on = {node for task, node in marks(tmp_path, "done") if task == killed["task"]}
    assert redone_on == {killed["added"].node_id}
    assert stats["shards_skipped"] == 0 and stats["shards"] >= 8
    assert score_table(config) == score_table(reference)  # every column, every row
    print(f"\nscore: the only node killed mid-shard, recovered in {recovered_s:.1f} s")
    cluster.kill(killed["added"])


def test_node_lost_without_replacement_stops_then_rerun_completes(
    cluster, tmp_path, tokenizer_dir, many_inputs, monkeypatch
):
    reference = make_config(tmp_path, tokenizer_dir, many_inputs, out="reference")
    run_stage("prepare", reference)
    only = cluster.add_worker()
    config = make_config(tmp_path, tokenizer_dir, many_inputs, **{
        **ON_CLUSTER, "ray.capacity_wait_s": 3, "prepare.num_workers": 1})  # fmt: skip
    monkeypatch.setattr(prepare, "PrepareWorker", SlowPrepareWorker)
    pool = config.output_path / "tokens" / "pool"
    killed = run_killing_node(
        cluster, tmp_path, only, lambda: run_stage("prepare", config), add_node=False, min_done=2
    )
    error, stopped_s = killed.get("error"), killed["ended_at"] - killed["killed_at"]
    assert isinstance(error, ColorFilterError), killed
    assert re.search(
        r"no capacity for \d+ pending tasks after \d+ s: no node can host a worker "
        r"\(1 CPU\).*finished units are kept, rerun to resume",
        str(error),
    )
    records = file_records(pool)
    assert len(records) >= 2  # the files done before the kill have their records
    kept = mtimes([q for p in records for q in pool.glob(f"{p.name.split('.')[0]}-*.parquet")]
                  + records)
    cluster.add_worker()
    monkeypatch.setattr(prepare, "PrepareWorker", PrepareWorker)  # the rerun at full speed
    start = time.monotonic()
    run_stage("prepare", config)
    rerun_s = time.monotonic() - start
    assert mtimes(list(kept)) == kept  # finished files were kept, not rewritten
    assert token_digests(config) == token_digests(reference)
    assert split_stats(config) == split_stats(reference)
    print(
        f"\nno capacity: stopped {stopped_s:.1f} s after the kill (wait 3 s): "
        f"{str(error)[:60]}...; rerun with a new node took {rerun_s:.1f} s"
    )
    for node in list(cluster.cluster.worker_nodes):
        cluster.kill(node)


def test_node_killed_mid_select_a_fresh_node_finishes_it(cluster, prepared, tmp_path, monkeypatch):
    from dataclasses import replace

    import numpy as np
    import pyarrow.parquet as pq

    from colorfilter.dataset import work

    prepared.selection.methods, prepared.selection.tau = ["color", "random"], [4.0]
    run_stage("score", prepared)  # in-process
    reference = replace(prepared, output_dir=str(tmp_path / "reference"))
    shutil.copytree(prepared.output_path, reference.output_path)
    run_stage("select", reference)
    config = replace(prepared, executor="ray")
    config.ray.capacity_wait_s, config.ray.retry_backoff_s = 60, 0.2
    config.selection.num_workers = 1
    monkeypatch.setattr(work, "SelectWorker", SlowSelectWorker)
    only = cluster.add_worker()
    killed = run_killing_node(
        cluster, tmp_path, only, lambda: run_stage("select", config), add_node=True, min_done=1
    )
    assert "error" not in killed, killed
    recovered_s = killed["ended_at"] - killed["killed_at"]
    redone_on = {node for task, node in marks(tmp_path, "done") if task == killed["task"]}
    assert redone_on == {killed["added"].node_id}
    for name in ("color-tau4", "random-tau4"):
        ours = config.output_path / "selected" / name
        theirs = reference.output_path / "selected" / name
        shards = sorted(p.name for p in (ours / "data").glob("*.parquet"))
        assert shards and shards == sorted(p.name for p in (theirs / "data").glob("*.parquet"))
        for shard in shards:
            table = pq.read_table(ours / "data" / shard)
            assert table.equals(pq.read_table(theirs / "data" / shard))
        assert np.array_equal(np.load(ours / "indices.npy"), np.load(theirs / "indices.npy"))
    print(f"\nselect: the only node killed mid-map, recovered in {recovered_s:.1f} s")
    cluster.kill(killed["added"])
