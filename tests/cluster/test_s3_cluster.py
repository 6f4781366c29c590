"""Two worker nodes on loopback with no shared disk in effect: inputs, tokenizer, models and
output_dir only on S3, every worker process in its own empty working directory with its
node's own cache. Prepare and score run there and give what a local run gives; nothing is
written to any working directory, and each node fetched the models it scored with once."""

from __future__ import annotations

import os
from pathlib import Path

import pytest

from colorfilter.io.transfer import read_parquet, upload_folder
from colorfilter.pipeline.stages import run_stage
from tests.cluster.nodes import NODE_ROOT_ENV, instead_of_session_ray
from tests.pipeline.test_prepare import make_config
from tests.s3_server import s3_bucket, s3_server  # noqa: F401 - fixtures

ON_CLUSTER = {"executor": "ray", "prepare.worker_cpus": 1, "prepare.num_workers": 2,
              "score.worker_cpus": 1, "score.num_workers": 2, "score.batch_size": 8,
              "score.torch_threads": 1, "ray.capacity_wait_s": 60,
              "prepare.rows_per_shard": 48}  # fmt: skip
TRAINING = {"prior.preset": "micro", "prior.token_budget": 4000, "prior.batch_size": 4,
            "prior.torch_threads": 1, "conditional.max_steps": 3, "conditional.batch_size": 4,
            "conditional.torch_threads": 1}  # fmt: skip
STAGES = ("prepare", "train-prior", "train-conditional", "score")


@pytest.fixture
def s3_cluster(s3_server, tmp_path, monkeypatch):  # noqa: F811
    """A head without CPUs and two worker nodes, started after the S3 endpoint is in the
    environment (the nodes' processes inherit it) with the isolating setup hook."""
    monkeypatch.setenv(NODE_ROOT_ENV, str(tmp_path / "nodes"))
    repo = str(Path(__file__).resolve().parents[2])  # the nodes' workers import the setup hook
    monkeypatch.setenv("PYTHONPATH", os.pathsep.join(filter(None, [repo, os.environ.get(
        "PYTHONPATH")])))
    hook = {"worker_process_setup_hook": "tests.cluster.nodes.isolate_worker"}
    with instead_of_session_ray(hook) as cluster:
        for _ in range(2):
            cluster.add_worker()
        yield cluster


def score_rows(output_dir) -> list[dict]:
    from colorfilter.io.token_shards import shard_locations
    from colorfilter.layout import RunLayout

    scores = RunLayout.at(output_dir).scores
    tables = [read_parquet(loc).sort_by("seq_id") for loc in shard_locations(scores)]
    return [row for table in tables for row in table.to_pylist()]


def test_prepare_and_score_on_two_nodes_with_everything_on_s3(
    s3_cluster, s3_bucket, tmp_path, tokenizer_dir, c4_inputs, monkeypatch  # noqa: F811
):
    reference = make_config(tmp_path, tokenizer_dir, c4_inputs, out="reference",
                            **{**ON_CLUSTER, **TRAINING, "executor": "local"})  # fmt: skip
    for stage in STAGES:
        run_stage(stage, reference)

    upload_folder(tmp_path / "pool", s3_bucket.join("inputs", "pool"))
    upload_folder(c4_inputs["downstream_train"][0].parent, s3_bucket.join("inputs", "target"))
    upload_folder(tokenizer_dir, s3_bucket.join("tokenizer"))
    inputs = s3_bucket.join("inputs")
    names = {key: [inputs.join(p.parent.name, p.name).url for p in paths]
             for key, paths in c4_inputs.items() if key != "records"}  # fmt: skip
    out = s3_bucket.join("out")
    config = make_config(tmp_path, tokenizer_dir, c4_inputs, **{**ON_CLUSTER, **TRAINING})
    config.output_dir, config.tokenizer = out.url, s3_bucket.join("tokenizer").url
    config.data.pool = names["pool"]
    config.data.downstream_train = names["downstream_train"]
    config.data.downstream_eval = names["downstream_eval"]
    driver_cwd = tmp_path / "driver-cwd"
    driver_cwd.mkdir()
    monkeypatch.chdir(driver_cwd)
    for stage in STAGES:
        run_stage(stage, config)

    assert score_rows(out) == score_rows(reference.output_dir)
    assert not any(driver_cwd.iterdir())
    nodes = sorted((tmp_path / "nodes").iterdir())
    assert len(nodes) == 2, "both nodes ran workers"
    for node in nodes:
        for cwd in node.glob("cwd-*"):
            assert not any(cwd.iterdir()), f"a worker wrote into its working dir: {cwd}"
    caches = [sorted(p.name.split("-", 1)[1] for p in (node / "cache").glob("*-*")
                     if p.is_dir() and not p.name.startswith(".tmp"))
              for node in nodes if (node / "cache").exists()]  # fmt: skip
    assert caches, "no node fetched the models: did the workers read them from the driver?"
    for fetched in caches:  # once per node: one copy of each folder, however many workers
        assert len(fetched) == len(set(fetched)), fetched
