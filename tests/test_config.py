"""Config loading: YAML, dotted overrides with type checks, clear errors, resolved config saved."""

from __future__ import annotations

from pathlib import Path

import pytest
import yaml

from colorfilter.config import Config, load_config, save_resolved
from colorfilter.errors import ConfigError


def write(tmp_path, text: str):
    path = tmp_path / "c.yaml"
    path.write_text(text)
    return path


def test_yaml_and_overrides(tmp_path):
    path = write(tmp_path, "output_dir: out\nseq_len: 128\ndata:\n  pool: [a.jsonl]\n")
    config = load_config(
        path,
        [
            "data.pool=[a.jsonl.zst,b/*.json.gz]",
            "seq_len=256",
            "data.text_field=content",
            "prepare.worker_cpus=1",
        ],
    )
    assert config.data.pool == ["a.jsonl.zst", "b/*.json.gz"]
    assert config.seq_len == 256 and config.data.text_field == "content"
    assert config.prepare.worker_cpus == 1.0 and isinstance(config.prepare.worker_cpus, float)
    assert config.output_dir == "out"


def test_contract_defaults():
    config = Config()
    assert config.seq_len == 512 and config.data.text_field == "text"
    assert config.data.downstream_train == [] and config.data.downstream_eval == []


@pytest.mark.parametrize(
    ("override", "message"),
    [
        ("data.poool=[x]", "unknown config key 'data.poool'. Did you mean 'data.pool'"),
        ("seq_len=abc", "seq_len: expected int, got 'abc'"),
        ("seq_len=1", "seq_len must be >= 2, got 1"),
        ("data.pool={a: 1}", "data.pool: expected a list"),
        ("selection.tau=0.5", "selection.tau must be >= 1"),
        ("score.backend=tpu", "score.backend must be one of"),
        ("prepare.rows_per_shard=1.5", "expected int"),
        ("data=5", "data: expected a mapping"),
        ("seq_len.x=1", "'seq_len' is not a section"),
        ("novalue", "expects key=value"),
    ],
)
def test_bad_overrides_are_clear(override, message):
    with pytest.raises(ConfigError, match=message.replace("[", r"\[").replace(".", r"\.")):
        load_config(None, [override])


def test_unknown_key_in_yaml_names_it(tmp_path):
    with pytest.raises(ConfigError, match="unknown config key 'prepare.workers'"):
        load_config(write(tmp_path, "prepare:\n  workers: 2\n"))


def test_missing_and_invalid_files(tmp_path):
    with pytest.raises(ConfigError, match="config file not found"):
        load_config(tmp_path / "none.yaml")
    with pytest.raises(ConfigError, match="invalid YAML"):
        load_config(write(tmp_path, "a: [unclosed\n"))


def test_resolved_config_round_trips(tmp_path):
    config = load_config(None, [f"output_dir={tmp_path / 'run'}", "data.pool=[x.jsonl]"])
    path = save_resolved(config)
    assert Path(path) == tmp_path / "run" / "config.yaml"
    assert load_config(path) == config
    assert yaml.safe_load(Path(path).read_text())["data"]["pool"] == ["x.jsonl"]


def test_shipped_configs_load():
    from pathlib import Path

    for path in sorted(Path(__file__).parent.parent.joinpath("configs").glob("*.yaml")):
        load_config(path)


def test_unquoted_colon_in_a_string_gets_a_quoting_hint():
    with pytest.raises(ConfigError, match='quote the value: "book:"'):
        load_config(None, ["evaluate.target_source=[book:]"])
    assert load_config(None, ['evaluate.target_source=["book:"]']).evaluate.target_source == [
        "book:"
    ]


def test_removed_and_renamed_keys_say_what_to_do(tmp_path, capsys):
    with pytest.raises(ConfigError, match="hash_models' was removed: .*delete it"):
        load_config(None, ["selection.output.hash_models=false"])
    saved = tmp_path / "old.yaml"  # a config.yaml saved by an earlier version still loads
    saved.write_text("selection:\n  output:\n    hash_models: true\n")
    assert load_config(saved).selection.output.rows_per_shard == 100_000
    assert "ignoring config key 'selection.output.hash_models'" in capsys.readouterr().err
    with pytest.raises(ConfigError, match="'score.dtype' was replaced: use score.precision"):
        load_config(None, ["score.dtype=float32"])
