"""The run layout on local disk and on a bucket: every path from one root, one "run X first"."""

from __future__ import annotations

import json

import pyarrow as pa
import pytest

from colorfilter.errors import ConfigError
from colorfilter.io import storage
from colorfilter.io.transfer import (
    open_parquet,
    read_parquet,
    staged_folder,
    upload_folder,
    write_parquet,
)
from colorfilter.layout import RunLayout
from tests.s3_server import s3_bucket, s3_server  # noqa: F401 - fixtures


@pytest.fixture(params=["local", "s3"])
def root(request, tmp_path):
    if request.param == "local":
        return str(tmp_path / "out")
    return request.getfixturevalue("s3_bucket").join("runs", "out").url


def test_paths_are_joined_under_the_root(root):
    run = RunLayout.at(root)
    assert run.tokens("pool").url == f"{run.root.url}/tokens/pool"
    assert run.model("prior").relative_to(run.root) == "models/prior"
    assert run.selected("color-tau16").relative_to(run.root) == "selected/color-tau16"
    with pytest.raises(ValueError, match="unknown split"):
        run.tokens("pol")


def test_require_names_the_missing_output_and_the_stage(root):
    run = RunLayout.at(root)
    assert not run.has_run("score")
    missing = r"pool.s scores not found at .*/score.done.json: run `colorfilter score` first"
    with pytest.raises(ConfigError, match=missing):
        run.require("score")
    storage.makedirs(run.scores)
    storage.write_json(run.score_stats, {"rows": 1})
    assert not run.has_run("score")  # the summary alone is no marker
    run.finish_stage("score", [run.score_stats], {"rows": 1})
    assert run.has_run("score")
    assert run.require("score").meta == {"rows": 1}
    assert "score" in run.stages_run() and "prepare" not in run.stages_run()
    marker = storage.read_bytes(run.marker("score"))
    storage.write_bytes(run.marker("score"), marker[: len(marker) // 2])  # cut short
    assert not run.has_run("score")
    storage.write_bytes(run.marker("score"), marker)
    storage.write_json(run.score_stats, {"rows": 12})  # a listed file changed since
    assert not run.has_run("score")


def test_parquet_and_staged_folders_round_trip(root, tmp_path):
    run = RunLayout.at(root)
    table = pa.table({"seq_id": pa.array([3, 1, 2], pa.uint64())})
    shard = run.scores.join("shard-00000.parquet")
    storage.makedirs(shard.parent)
    write_parquet(shard, table, row_group_size=2)
    assert read_parquet(shard).equals(table)
    with open_parquet(shard) as parquet:
        assert parquet.metadata.num_row_groups == 2
    with staged_folder(run.model("prior")) as folder:
        (folder / "config.json").write_text("{}")
        (folder / "sub").mkdir()
        (folder / "sub" / "w.bin").write_bytes(b"x" * 10)
    assert storage.read_text(run.model("prior").join("config.json")) == "{}"
    assert storage.size(run.model("prior").join("sub", "w.bin")) == 10
    source = tmp_path / "src"
    (source / "a").mkdir(parents=True)
    (source / "a" / "b.txt").write_text("hi")
    [copied] = upload_folder(source, run.tokenizer)
    assert copied.relative_to(run.root) == "tokenizer/a/b.txt"
    assert storage.read_text(copied) == "hi"


def test_a_failed_staged_block_uploads_nothing(s3_bucket):  # noqa: F811
    dest = s3_bucket.join("m")
    with pytest.raises(RuntimeError), staged_folder(dest) as folder:
        (folder / "config.json").write_text("{}")
        raise RuntimeError("killed")
    assert not storage.exists(dest.join("config.json"))


def test_a_failed_first_run_does_not_block_a_corrected_one(tmp_path):
    from colorfilter.config import load_config
    from colorfilter.pipeline.stages import check_output_dir

    out = tmp_path / "out"
    first = load_config(None, [f"output_dir={out}", "data.pool=[typo/*.json]"])
    from colorfilter.config import save_resolved

    save_resolved(first)  # the config is saved, then the stage fails on the input
    fixed = load_config(None, [f"output_dir={out}", "data.pool=[pool/*.json]"])
    check_output_dir("prepare", fixed, overwrite=False)  # nothing written yet: no refusal
    (out / "tokens").mkdir()
    with pytest.raises(ConfigError, match="holds outputs made with a different config"):
        check_output_dir("prepare", fixed, overwrite=False)


def test_a_swapped_tokenizer_is_refused_naming_both_hashes(tmp_path, tokenizer_dir):
    import shutil

    from colorfilter.errors import DamagedDataError
    from tests.conftest import mark_finished

    out = tmp_path / "out"
    shutil.copytree(tokenizer_dir, out / "tokenizer")
    mark_finished(out, "prepare")
    run = RunLayout.at(str(out))
    recorded = run.check_tokenizer()
    vocab = out / "tokenizer" / "tokenizer.json"
    data = json.loads(vocab.read_text())
    ids = data["model"]["vocab"]
    first, second = list(ids)[10:12]
    ids[first], ids[second] = ids[second], ids[first]  # another vocabulary, the same size
    vocab.write_text(json.dumps(data))
    with pytest.raises(DamagedDataError) as refused:
        run.check_tokenizer()
    message = str(refused.value)
    assert recorded in message and storage.folder_sha256(run.tokenizer) in message
    assert str(out / "tokenizer") in message and "rerun `colorfilter prepare`" in message
