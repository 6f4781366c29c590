"""score.precision: resolved per device, recorded in shard records, checked on resume."""

from __future__ import annotations

import pytest

from colorfilter.config import load_config
from colorfilter.errors import ConfigError
from colorfilter.io.token_shards import list_shards
from colorfilter.scoring.base import build_scorer
from colorfilter.scoring.config import ScoreConfig
from colorfilter.scoring.precision import (
    check_resume_precision,
    recorded_precisions,
    resolve_precision,
)
from colorfilter.scoring.shard import ShardScoring, score_shards
from tests.scoring.conftest import PAD_ID, SEQ_LEN, random_chunks, write_token_shard


def test_auto_resolves_to_a_concrete_precision_per_device_and_backend():
    assert resolve_precision("auto", "cpu").as_dict() == {
        "name": "fp32", "weights": "float32", "autocast": "none", "device": "cpu"
    }
    paper = resolve_precision("auto", "cuda:1")
    assert (paper.name, paper.weights, paper.autocast, paper.device) == (
        "fp32-autocast-bf16", "float32", "bfloat16", "cuda"
    )
    assert resolve_precision("auto", "cuda", "vllm").name == "bf16"
    with pytest.raises(ConfigError, match="needs the torch backend"):
        resolve_precision("fp32-autocast-bf16", "cuda", "vllm")
    with pytest.raises(ConfigError, match="resolve the device|cpu, cuda"):
        resolve_precision("auto", "auto")


def test_the_old_dtype_key_names_its_replacement(tmp_path):
    path = tmp_path / "c.yaml"
    path.write_text("score:\n  dtype: bfloat16\n")
    with pytest.raises(ConfigError, match=r"score\.dtype' was replaced: use score\.precision"):
        load_config(path)
    with pytest.raises(ConfigError, match=r"bfloat16 -> bf16"):
        load_config(None, ["score.dtype=bfloat16"])
    assert load_config(None, ["score.precision=bf16"]).score.precision == "bf16"
    with pytest.raises(ConfigError, match="score.precision must be one of"):
        load_config(None, ["score.precision=bfloat16"])


def test_records_say_what_ran_and_a_resume_at_another_precision_is_refused(model_pair, tmp_path):
    tokens = [
        write_token_shard(tmp_path / "tokens" / f"s{i}.parquet", random_chunks(6, seed=i), i)
        for i in range(2)
    ]
    score_dir = tmp_path / "scores"
    scorer = build_scorer("torch", *model_pair, ScoreConfig(precision="bf16"), device="cpu")
    score_shards(tokens[:1], score_dir, scorer, ShardScoring(4, SEQ_LEN, PAD_ID, fingerprint="f"))
    ran = resolve_precision("bf16", "cpu")
    assert recorded_precisions(score_dir) == {ran.describe(): [tokens[0].stem]}
    check_resume_precision(score_dir, ran)  # same precision: resuming is fine
    for other in (resolve_precision("fp32", "cpu"), resolve_precision("bf16", "cuda")):
        with pytest.raises(ConfigError) as caught:
            check_resume_precision(score_dir, other)
        message = str(caught.value)
        assert ran.describe() in message and other.describe() in message
        assert "--overwrite" in message
    assert len(list_shards(score_dir)) == 1
