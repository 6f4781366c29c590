"""`--overwrite` is a clean slate for what the config changes: outputs made under the old config
are removed (one line says which) before the new run writes, on local disk and on a bucket; an
unchanged config keeps today's behaviour (the stage redoes its work, nothing else goes)."""

from __future__ import annotations

import copy
import shutil
from dataclasses import replace

import pytest

from colorfilter.config import load_config
from colorfilter.configtools import to_dict
from colorfilter.io import storage
from colorfilter.io.transfer import upload_folder
from colorfilter.layout import RunLayout
from colorfilter.pipeline.stages import run_stage, run_stages, stage_changes
from tests.conftest import write_c4_inputs
from tests.pipeline.test_resume import build_scored_run


@pytest.fixture(scope="module")
def selected_run(tmp_path_factory, tokenizer_dir):
    """A scored run selected with methods color and random, tau 4 and 8."""
    root = tmp_path_factory.mktemp("overwrite")
    config = build_scored_run(root, tokenizer_dir, write_c4_inputs(root))
    run_stage("select", config)
    return config


@pytest.fixture
def local_run(selected_run, tmp_path):
    target = tmp_path / "run"
    shutil.copytree(selected_run.output_path, target)
    return replace(selected_run, output_dir=str(target))


def with_overrides(config, **overrides):
    """A copy of `config` with dotted keys set (as `--set` would)."""
    changed = copy.deepcopy(config)
    for key, value in overrides.items():
        *parents, name = key.split(".")
        target = changed
        for part in parents:
            target = getattr(target, part)
        setattr(target, name, value)
    return changed


def selections(config) -> set[str]:
    return {loc.name for loc in storage.list_dir(RunLayout.of(config).selected_root)}


def test_dropped_method_leaves_no_folder_behind(local_run, capsys):
    assert selections(local_run) == {"color-tau4", "color-tau8", "random-tau4", "random-tau8"}
    run_stage("select", local_run, overwrite=True)  # unchanged: redo, remove nothing
    assert "removed" not in capsys.readouterr().err
    assert selections(local_run) == {"color-tau4", "color-tau8", "random-tau4", "random-tau8"}
    narrowed = with_overrides(local_run, **{"selection.methods": ["color"]})
    run_stage("select", narrowed, overwrite=True)
    err = capsys.readouterr().err
    assert "selection.methods: ['color', 'random'] -> ['color']" in err
    assert "removed what the old one made: selected" in err
    assert selections(narrowed) == {"color-tau4", "color-tau8"}


def test_a_scoring_change_removes_scores_and_every_selection_before_writing(local_run, capsys):
    run = RunLayout.of(local_run)
    stale = run.selected("color-tau99")  # a folder only an older config made
    storage.write_json(stale.join("manifest.json"), {"complete": True})
    token_shard = local_run.output_path / "tokens" / "pool" / "00000-00000.parquet"
    token_mtime = token_shard.stat().st_mtime_ns
    changed = with_overrides(local_run, **{"score.precision": "fp32"})
    run_stages(["score", "select"], changed, overwrite=True)
    err = capsys.readouterr().err
    assert "config changed for 'score' (score.precision: 'auto' -> 'fp32')" in err
    assert "removed what the old one made: scores/pool, selected" in err
    assert selections(changed) == {"color-tau4", "color-tau8", "random-tau4", "random-tau8"}
    assert token_shard.stat().st_mtime_ns == token_mtime  # earlier stages' outputs are kept
    assert (local_run.output_path / "models" / "prior" / "model.safetensors").exists()


def test_changes_are_judged_stage_by_stage():
    before = to_dict(load_config(None, []))
    after = to_dict(load_config(None, ["selection.tau=[7]", "selection.num_workers=3"]))
    assert stage_changes("score", before, after) == []
    assert stage_changes("select", before, after) == ["selection.tau: [16.0] -> [7.0]"]
    later = to_dict(load_config(None, ["seq_len=256"]))
    assert stage_changes("prepare", before, later) == ["seq_len: 512 -> 256"]
    assert RunLayout.at("/o").outputs_from("score")[0].url == "/o/scores/pool"


def test_overwrite_on_a_bucket_removes_what_the_config_changed(
    selected_run, s3_bucket, quiet_disk, capsys
):
    upload_folder(selected_run.output_path, s3_bucket.join("out"))
    remote = replace(selected_run, output_dir=s3_bucket.join("out").url)
    before = {f.location.relative_to(s3_bucket) for f in storage.find(s3_bucket)}
    assert any(name.startswith("out/selected/random-tau4/") for name in before)
    narrowed = with_overrides(remote, **{"selection.methods": ["color"], "selection.tau": [4.0]})
    run_stage("select", narrowed, overwrite=True)
    assert "removed what the old one made: selected" in capsys.readouterr().err
    after = {f.location.relative_to(s3_bucket) for f in storage.find(s3_bucket)}
    assert {name.split("/")[2] for name in after if name.startswith("out/selected/")} == {
        "color-tau4"}
    kept = {n for n in before if n.startswith(("out/tokens/", "out/scores/", "out/models/"))}
    assert kept <= after
