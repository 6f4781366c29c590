"""Bad input: each case stops with a clear error naming the problem, or is skipped and counted."""

from __future__ import annotations

import json
import os
import random
import subprocess
import sys

import numpy as np
import pyarrow.parquet as pq
import pytest

from colorfilter.config import save_resolved
from colorfilter.errors import ConfigError
from colorfilter.io.token_shards import list_shards
from colorfilter.pipeline.stages import config_conflicts, run_stage
from tests.conftest import save_random_models, write_jsonl
from tests.pipeline.test_prepare import make_config


@pytest.mark.slow
def test_huge_single_document_is_prepared_in_bounded_memory(tmp_path, tokenizer_dir, c4_inputs):
    rng = random.Random(0)
    words = [f"w{rng.getrandbits(20):x}" for _ in range(300)] + ["the", "of", "and", "a"]
    text = " ".join(rng.choices(words, k=7_000_000))  # ~50 MB in one record
    assert len(text) > 45_000_000
    huge = write_jsonl(tmp_path / "huge" / "one.jsonl", [{"text": text}])
    config = make_config(
        tmp_path, tokenizer_dir, dict(c4_inputs, pool=[huge]), **{"prepare.rows_per_shard": 100_000}
    )
    config_path = save_resolved(config)
    command = [sys.executable, "-m", "colorfilter", "prepare", str(config_path)]
    child = subprocess.Popen(command, stdout=subprocess.DEVNULL, stderr=subprocess.PIPE)
    _, status, usage = os.wait4(child.pid, 0)
    assert status == 0, child.stderr.read().decode()[-2000:]
    peak_mb = usage.ru_maxrss / 1024
    assert peak_mb < 2500, f"peak RSS {peak_mb:.0f} MB for a 50 MB document"
    table = pq.read_table(list_shards(config.output_path / "tokens" / "pool"))
    assert table.num_rows > 1000 and set(table.column("doc_last").to_pylist()) == {0}
    ids = np.concatenate(
        [np.asarray(x) for x in table.sort_by("seq_id").column("input_ids").to_pylist()]
    )
    from tokenizers import Tokenizer

    backend = Tokenizer.from_file(str(tokenizer_dir / "tokenizer.json"))
    assert backend.decode(ids[:-1].tolist(), skip_special_tokens=False) == text


def test_unreadable_inputs_name_the_file(tmp_path, tokenizer_dir, c4_inputs):
    folder = tmp_path / "pool" / "not-a-file.jsonl"
    folder.mkdir(parents=True)
    with pytest.raises(ConfigError, match="not-a-file.jsonl"):
        run_stage("prepare", make_config(tmp_path, tokenizer_dir, dict(c4_inputs, pool=[folder])))
    if os.geteuid() != 0:  # root reads any file, so permission bits cannot be tested as root
        locked = write_jsonl(tmp_path / "locked.jsonl", [{"text": "x"}])
        locked.chmod(0)
        with pytest.raises(ConfigError, match="cannot read"):
            run_stage(
                "prepare", make_config(tmp_path, tokenizer_dir, dict(c4_inputs, pool=[locked]))
            )


def test_tokenizer_that_does_not_fit_the_models_is_refused(tmp_path, tokenizer_dir, c4_inputs):

    config = make_config(tmp_path, tokenizer_dir, c4_inputs)
    run_stage("prepare", config)
    save_random_models(config, vocab_size=300, seeds=(0, 0))  # the tokenizer has 400 tokens
    with pytest.raises(ConfigError, match="has 400 tokens but the models"):
        run_stage("score", config)


def test_output_dir_of_another_config_is_refused(tmp_path, tokenizer_dir, c4_inputs):
    config = make_config(tmp_path, tokenizer_dir, c4_inputs)
    run_stage("prepare", config)
    other_tokenizer = make_config(tmp_path, tokenizer_dir, c4_inputs, **{"data.text_field": "url"})
    with pytest.raises(ConfigError, match="data.text_field: 'text' -> 'url'"):
        run_stage("prepare", other_tokenizer)
    saved = json.loads(json.dumps({"prior": {"lr": 0.001, "torch_threads": 1}, "seed": 0}))
    current = {"prior": {"lr": 0.002, "torch_threads": 2}, "seed": 0}
    assert config_conflicts("train-prior", saved, current) == ["prior.lr: 0.001 -> 0.002"]
    assert config_conflicts("prepare", saved, current) == []  # prior settings: later stage


def test_token_rows_are_all_accounted_for(tmp_path, tokenizer_dir, c4_inputs):
    bad = tmp_path / "pool" / "bad.jsonl"
    bad.write_bytes(b'{"text": "a fine document here"}\n{"oops"\n{"text": ""}\n')
    config = make_config(
        tmp_path,
        tokenizer_dir,
        dict(c4_inputs, pool=c4_inputs["pool"] + [bad]),
        **{"data.max_bad_fraction": 0.1},
    )
    stats = run_stage("prepare", config)["pool"]
    assert stats["records"] == 83 and stats["documents"] == 81
    assert stats["skipped"] == {"malformed_json": 1, "empty_text": 1}
    rows = sum(
        pq.ParquetFile(p).metadata.num_rows
        for p in list_shards(config.output_path / "tokens" / "pool")
    )
    assert rows == stats["chunks"]
