"""`load_selection` (local and on a bucket) and `load_scorer` on a bucket."""

from __future__ import annotations

import json
import shutil

import numpy as np
import pytest

import colorfilter as cf
from colorfilter.errors import ConfigError
from colorfilter.io.transfer import upload_folder
from tests.conftest import sample_documents


def test_load_selection_gives_the_selected_rows(run_dir, tmp_path):
    folder = run_dir / "selected" / "color-tau4"
    ds = cf.load_selection(folder, cache_dir=str(tmp_path))
    manifest = json.loads((folder / "manifest.json").read_text())
    assert len(ds) == manifest["counts"]["selected"] > 0
    assert {"seq_id", "input_ids", "text", "score", "prior_loss", "cond_loss"} <= set(ds.features)
    assert sorted(ds["seq_id"]) == sorted(np.load(folder / "indices.npy").tolist())
    scores = np.asarray(ds["score"])
    assert scores.min() >= manifest["selection"]["threshold"] - 1e-6  # the top 1/4 by score


def test_load_selection_refuses_unfinished_or_changed_folders(run_dir, tmp_path):
    original = run_dir / "selected" / "color-tau4"
    with pytest.raises(ConfigError, match="no complete manifest.json: not a selection folder"):
        cf.load_selection(run_dir / "selected")
    unfinished = tmp_path / "unfinished"
    shutil.copytree(original, unfinished)
    (unfinished / "manifest.json").unlink()
    with pytest.raises(ConfigError, match="its select stage did not finish"):
        cf.load_selection(unfinished)
    changed = tmp_path / "changed"
    shutil.copytree(original, changed)
    shard = sorted((changed / "data").glob("*.parquet"))[0]
    shard.unlink()
    with pytest.raises(ConfigError, match=rf"does not match its manifest.json .*{shard.name}: mis"):
        cf.load_selection(changed)
    same_size = tmp_path / "same-size"
    shutil.copytree(original, same_size)
    data = bytearray(shard_of(same_size).read_bytes())
    data[len(data) // 2] ^= 0xFF
    shard_of(same_size).write_bytes(bytes(data))
    with pytest.raises(ConfigError, match="sha256 differs from the manifest"):
        cf.load_selection(same_size, verify_sha256=True)


def shard_of(folder):
    return sorted((folder / "data").glob("*.parquet"))[0]


def test_selection_and_scorer_from_a_bucket(run_dir, s3_bucket, quiet_disk, tmp_path):
    remote = s3_bucket.join("out")
    upload_folder(run_dir, remote)  # the whole run: the scorer checks the tokenizer's record
    local = cf.load_selection(run_dir / "selected" / "color-tau4", cache_dir=str(tmp_path))
    ds = cf.load_selection(remote.join("selected", "color-tau4").url, cache_dir=str(tmp_path))
    assert ds["seq_id"] == local["seq_id"] and ds["score"] == local["score"]

    texts = sample_documents(6, seed=11)
    from_bucket = cf.load_scorer(remote.url).score_texts(texts)
    assert np.array_equal(from_bucket.score, cf.load_scorer(run_dir).score_texts(texts).score)
    assert list((tmp_path / "cache").iterdir())  # the models were fetched into the node cache
