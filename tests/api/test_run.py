"""`colorfilter.run` and `load_config`: the CLI's stages, the CLI's records, the CLI's resume."""

from __future__ import annotations

import hashlib
import os
import subprocess
import sys
from pathlib import Path

import numpy as np
import pyarrow.parquet as pq
import pytest

import colorfilter as cf
from colorfilter.config import save_resolved
from colorfilter.errors import ConfigError
from colorfilter.io.token_shards import list_shards
from tests.api.run_folder import STAGES

REPO = Path(__file__).resolve().parents[2]


def digests(folder: Path, pattern: str) -> dict[str, str]:
    return {
        p.relative_to(folder).as_posix(): hashlib.sha256(p.read_bytes()).hexdigest()
        for p in sorted(folder.glob(pattern))
    }


def table_rows(folder: Path) -> str:
    return pq.read_table(list_shards(folder)).sort_by("seq_id").to_string(show_metadata=False)


def test_run_writes_what_the_cli_writes_and_resumes(run_dir, tmp_path):
    """The session's run folder was made by cf.run; the CLI makes the same outputs from the
    same config, and a second cf.run finds everything done."""
    cli_config = cf.load_config(run_dir / "config.yaml", [f"output_dir={tmp_path / 'cli'}"])
    config_file = save_resolved(cli_config)
    done = subprocess.run(
        [sys.executable, "-m", "colorfilter", "run", str(config_file), "--stages", STAGES],
        env={**os.environ, "PYTHONPATH": str(REPO)},
        capture_output=True, text=True, timeout=300,
    )  # fmt: skip
    assert done.returncode == 0, done.stderr[-2000:]
    cli = cli_config.output_path
    for split in ("pool", "downstream_train", "downstream_eval"):
        assert table_rows(run_dir / "tokens" / split) == table_rows(cli / "tokens" / split)
    for model in ("prior", "conditional"):
        assert digests(run_dir / "models" / model, "*.safetensors") == digests(
            cli / "models" / model, "*.safetensors"
        )
    assert table_rows(run_dir / "scores" / "pool") == table_rows(cli / "scores" / "pool")
    ours, theirs = run_dir / "selected" / "color-tau4", cli / "selected" / "color-tau4"
    assert np.array_equal(np.load(ours / "indices.npy"), np.load(theirs / "indices.npy"))
    assert digests(ours, "data/*.parquet") == digests(theirs, "data/*.parquet")

    before = {p: p.stat().st_mtime_ns for p in run_dir.rglob("*.parquet")}
    config = cf.load_config(run_dir / "config.yaml")
    stats = cf.run(config, ["prepare", "score"])
    assert stats["score"]["shards_skipped"] == stats["score"]["shards"] > 0
    assert stats["score"]["shards_scored_now"] == 0
    assert {p: p.stat().st_mtime_ns for p in before} == before  # nothing rewritten


def test_load_config_from_a_dict_with_overrides():
    raw = {"seq_len": 128, "score": {"batch_size": 8}}
    config = cf.load_config(raw, ["score.batch_size=4", "selection.tau=[4,16]"])
    assert config.seq_len == 128 and config.score.batch_size == 4
    assert config.selection.tau == [4.0, 16.0]
    assert raw == {"seq_len": 128, "score": {"batch_size": 8}}  # the caller's dict is untouched
    with pytest.raises(ConfigError, match="score.batch_size"):
        cf.load_config({"score": {"batch_size": 0}})
    with pytest.raises(ConfigError, match="unknown"):
        cf.load_config({"no_such_key": 1})


def test_load_config_from_the_demo_file_as_the_readme_shows():
    config = cf.load_config(REPO / "configs" / "demo.yaml", overrides=["seq_len=256"])
    assert config.seq_len == 256 and config.output_dir == "outputs/demo"


def test_run_refuses_an_unknown_stage_before_any_work(tmp_path):
    config = cf.load_config({"output_dir": str(tmp_path / "out")})
    with pytest.raises(ConfigError, match="unknown stage"):
        cf.run(config, "prepare,nonsense")
    assert not (tmp_path / "out").exists()


def test_public_names_are_documented():
    for name in cf.__all__:
        value = getattr(cf, name)
        assert name == "__version__" or value.__doc__, name
    assert "load_scorer" in dir(cf)
    with pytest.raises(AttributeError):
        cf.no_such_name  # noqa: B018
