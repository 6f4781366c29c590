"""The cascade end to end on a small real run (two tiny random models): distill, score, select.

Deterministic whatever runs it (the local executor, two Ray workers, a bucket), every pool chunk
accounted for, the refusals, color_distilled without an LM pass, and kill -9 in the middle of
cheap scoring and of candidate scoring: the rerun reaches the undisturbed run's outputs.
"""

from __future__ import annotations

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

from colorfilter.config import load_config, to_yaml
from colorfilter.distill.sample import SampleSpec
from colorfilter.errors import ConfigError
from colorfilter.io.token_shards import list_shards
from colorfilter.layout import RunLayout
from colorfilter.pipeline.stages import run_stage, stage_names
from tests.conftest import save_random_models, write_c4_inputs

REPO = Path(__file__).resolve().parents[2]
CASCADE = {
    "cascade.enabled": "true", "cascade.sample_fraction": 0.25, "cascade.holdout_fraction": 0.3,
    "cascade.keep_ratio": 2, "cascade.alphas": "[0.3,3.0]", "selection.tau": "[4]",
    "selection.methods": "[color,color_distilled,random]", "selection.output.rows_per_shard": 100,
}  # fmt: skip
STAGES = ("distill", "score", "select")
FREEZE_ENV = "COLORFILTER_TEST_FREEZE"
CHILD_BOOT = "from tests.distill.test_cascade_run import child_main; child_main()"


def make(root: Path, tokenizer_dir: Path, out: str, **extra):
    inputs = {split: sorted((root / "inputs" / d).glob("*")) for split, d in
              (("pool", "pool"), ("downstream_train", "target"), ("downstream_eval", "target"))}
    inputs["downstream_train"] = [p for p in inputs["downstream_train"] if "train" in p.name]
    inputs["downstream_eval"] = [p for p in inputs["downstream_eval"] if "eval" in p.name]
    overrides = {
        "output_dir": str(root / out), "seq_len": 64, "tokenizer": str(tokenizer_dir),
        "data.pool": "[" + ",".join(map(str, inputs["pool"])) + "]",
        "data.downstream_train": str(inputs["downstream_train"][0]),
        "data.downstream_eval": str(inputs["downstream_eval"][0]),
        "data.source_field": "source", "prepare.rows_per_shard": 48, "executor": "local",
        "score.batch_size": 16, "score.torch_threads": 1, **CASCADE, **extra,
    }  # fmt: skip
    return load_config(None, [f"{k}={v}" for k, v in overrides.items()])


@pytest.fixture(scope="module")
def prepared(tmp_path_factory, tokenizer_dir):
    """(root, prepared config): tokens and two random models, no cascade output yet."""
    root = tmp_path_factory.mktemp("cascade")
    write_c4_inputs(root / "inputs")
    config = make(root, tokenizer_dir, "prepared")
    run_stage("prepare", config)
    save_random_models(config)
    return root, config


def copy_of(prepared, name: str, **extra):
    root, config = prepared
    shutil.copytree(config.output_path, root / name)
    return make(root, Path(config.tokenizer), name, **extra)


def run_cascade(config) -> None:
    for stage in STAGES:
        run_stage(stage, config)


@pytest.fixture(scope="module")
def reference(prepared):
    config = copy_of(prepared, "reference")
    run_cascade(config)
    return config


def outputs(config) -> dict:
    """Every output the cascade decides, as comparable values."""
    out = config.output_path

    def tables(folder: str, columns=None) -> dict:
        return {p.name: pq.read_table(p, columns=columns).to_pydict()
                for p in list_shards(out / folder)}  # fmt: skip

    return {
        "sample": tables("scores/sample"),
        "cheap": tables("scores/cheap"),
        "candidates": np.load(out / "scores" / "cheap" / "candidates.npy").tolist(),
        "weights": (out / "models" / "cheap" / "weights.npy").read_bytes(),
        "scores": tables("scores/pool"),
        "selected": {d.name: np.load(d / "indices.npy").tolist()
                     for d in sorted((out / "selected").iterdir()) if d.is_dir()},
    }  # fmt: skip


def test_two_ray_workers_reach_the_local_run(prepared, reference, ray_session):
    config = copy_of(prepared, "on-ray", **{
        "executor": "ray", "score.num_workers": 2, "score.worker_cpus": 0.5,
        "cascade.num_workers": 2, "cascade.worker_cpus": 0.5, "selection.num_workers": 2,
        "selection.worker_cpus": 0.5})  # fmt: skip
    run_cascade(config)
    assert outputs(config) == outputs(reference)


def test_every_pool_chunk_is_accounted_for(reference):
    out = reference.output_path
    pool = pq.read_table(list_shards(out / "tokens" / "pool"), columns=["seq_id"])
    ids = np.sort(pool.column("seq_id").to_numpy())
    cheap = pq.read_table(list_shards(out / "scores" / "cheap")).sort_by("seq_id")
    assert np.array_equal(cheap.column("seq_id").to_numpy(), ids)
    # the candidates, recomputed here: top ceil(2 * N / 4) by cheap score, ties by seq_id
    k = int(np.ceil(2 * ids.size / 4))
    order = np.lexsort((cheap.column("seq_id").to_numpy(), -cheap.column("cheap_score").to_numpy()))
    candidates = np.sort(cheap.column("seq_id").to_numpy()[order[:k]])
    assert np.load(out / "scores" / "cheap" / "candidates.npy").tolist() == candidates.tolist()
    sample = SampleSpec(reference.seed, 0.25, 0.3).in_sample(ids)
    scored = np.union1d(candidates, ids[sample])
    lm = pq.read_table(list_shards(out / "scores" / "pool")).sort_by("seq_id")
    assert lm.column("seq_id").to_numpy().tolist() == scored.tolist()
    accounting = json.loads((out / "scores" / "pool" / "stats.json").read_text())["cascade"]
    assert accounting["pool_chunks"] == ids.size
    assert accounting["lm_scored_chunks"] == scored.size
    assert accounting["prefiltered_chunks"] == ids.size - scored.size
    color = json.loads((out / "selected" / "color-tau4" / "manifest.json").read_text())
    counts = color["counts"]
    assert counts["candidates"] == ids.size and counts["selected"] == ids.size // 4
    assert counts["skipped"] == {"prefiltered": ids.size - scored.size}
    assert counts["selected"] + counts["not_selected"] + counts["skipped_total"] == ids.size
    chosen = np.load(out / "selected" / "color-tau4" / "indices.npy")
    best = lm.take(np.lexsort((lm.column("seq_id").to_numpy(), -lm.column("score").to_numpy())))
    assert np.sort(chosen).tolist() == np.sort(
        best.column("seq_id").to_numpy()[: ids.size // 4]).tolist()  # fmt: skip
    assert color["cascade"]["recall_estimate"]["held_out_top_chunks"] >= 1
    card = (out / "selected" / "color-tau4" / "README.md").read_text()
    assert "Cascade (distilled prefilter)" in card and "estimated recall" in card
    random = json.loads((out / "selected" / "random-tau4" / "manifest.json").read_text())
    assert random["counts"]["skipped"] == {}  # random draws from every chunk
    assert random["scores"]["selected_without_score"] > 0


def test_a_tau_below_the_planned_one_is_refused_naming_it(reference):
    lower = replace(reference, selection=replace(reference.selection, tau=[2.0]))
    with pytest.raises(ConfigError, match="below the cascade's planned tau 4"):
        run_stage("select", lower)


def test_methods_that_need_every_lm_score_are_refused_under_the_cascade(prepared):
    root, config = prepared
    for method in ("prior_only", "conditional_only", "color_batchwise", "color_softmax"):
        with pytest.raises(ConfigError, match=f"names {method}, which needs every pool chunk"):
            make(root, Path(config.tokenizer), "x", **{"selection.methods": f"[{method}]"})


def test_color_distilled_needs_no_lm_pass(prepared, reference):
    config = copy_of(prepared, "distilled-only", **{
        "cascade.enabled": "false", "selection.methods": "[color_distilled]"})  # fmt: skip
    names = stage_names(None, config)
    assert "distill" in names and "score" not in names
    run_stage("distill", config, overwrite=True)  # the copy's saved config had the cascade on
    run_stage("select", config)
    out = config.output_path
    assert not (out / "scores" / "pool").exists()
    ours = np.load(out / "selected" / "color_distilled-tau4" / "indices.npy")
    theirs = np.load(reference.output_path / "selected" / "color_distilled-tau4" / "indices.npy")
    assert ours.tolist() == theirs.tolist()  # the same cheap scorer, with or without the cascade
    table = pq.read_table(list_shards(out / "selected" / "color_distilled-tau4" / "data"))
    cheap = pq.read_table(list_shards(out / "scores" / "cheap")).to_pydict()
    by_id = dict(zip(cheap["seq_id"], cheap["cheap_score"]))
    expected = [by_id[i] for i in table.column("seq_id").to_pylist()]
    assert table.column("score").to_pylist() == expected
    assert all(np.isnan(table.column("prior_loss").to_numpy()))


def child_main() -> None:
    """The CLI frozen inside the Nth commit of one module ($FREEZE_ENV = "MODULE|N|MARKER"):
    its data object is written, its record is not; the test then kills it with SIGKILL."""
    import importlib

    module_name, count, marker = os.environ[FREEZE_ENV].split("|")
    module = importlib.import_module(module_name)
    commit, calls = module.commit_unit, []

    def commit_or_freeze(record, *args, **kwargs):
        calls.append(record)
        if len(calls) == int(count):
            Path(marker).write_text(str(record))
            while True:
                time.sleep(60)
        return commit(record, *args, **kwargs)

    module.commit_unit = commit_or_freeze
    sys.argv = ["colorfilter", *sys.argv[1:]]
    from colorfilter.cli import main

    main()


def kill_mid_stage(config, stage: str, module: str, tmp_path: Path) -> None:
    """Run `colorfilter STAGE` in a child frozen at its 3rd commit in `module`; kill -9 it."""
    config_file, marker = tmp_path / f"{stage}.yaml", tmp_path / f"{stage}.frozen"
    config_file.write_text(to_yaml(config))
    env = {**os.environ, "PYTHONPATH": str(REPO), FREEZE_ENV: f"{module}|3|{marker}"}
    child = subprocess.Popen([sys.executable, "-c", CHILD_BOOT, stage, str(config_file)],
                             env=env, stdout=subprocess.DEVNULL, stderr=subprocess.PIPE)
    deadline = time.time() + 180
    while not marker.exists() and child.poll() is None and time.time() < deadline:
        time.sleep(0.05)
    child.send_signal(signal.SIGKILL)
    _, err = child.communicate()
    assert marker.exists(), err.decode()[-3000:]


def test_kill_9_during_cheap_and_candidate_scoring_reruns_to_the_same_selection(
    prepared, reference, tmp_path
):
    config = copy_of(prepared, "killed")
    kill_mid_stage(config, "distill", "colorfilter.distill.cheap", tmp_path)
    cheap_dir = config.output_path / "scores" / "cheap"
    assert len(list(cheap_dir.glob("*.done.json"))) == 2  # the 3rd shard's record never came
    run_stage("distill", config)
    kill_mid_stage(config, "score", "colorfilter.scoring.shard", tmp_path)
    assert not RunLayout.of(config).has_run("score")
    run_stage("score", config)
    run_stage("select", config)
    assert outputs(config) == outputs(reference)


def test_on_a_bucket_the_cascade_equals_local_disk(prepared, reference, s3_bucket, quiet_disk):
    from colorfilter.io import storage
    from colorfilter.io.location import Location
    from colorfilter.io.transfer import read_parquet, upload_folder

    root, config = prepared
    url = s3_bucket.join("out").url
    upload_folder(config.output_path, url)
    remote = replace(reference, output_dir=url)
    run_cascade(remote)
    out = Location.parse(url)
    local = reference.output_path
    assert storage.read_bytes(out.join("scores", "cheap", "candidates.npy")) == (
        local / "scores" / "cheap" / "candidates.npy").read_bytes()  # fmt: skip
    for name in ("color-tau4", "color_distilled-tau4", "random-tau4"):
        assert storage.read_bytes(out.join("selected", name, "indices.npy")) == (
            local / "selected" / name / "indices.npy").read_bytes()  # fmt: skip
    for shard in list_shards(local / "scores" / "pool"):
        remote_table = read_parquet(out.join("scores", "pool", shard.name))
        assert remote_table.equals(pq.read_table(shard))
    assert list(quiet_disk.iterdir()) == []  # nothing on local disk but the cache
