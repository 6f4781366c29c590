"""Evaluation run records are colorfilter.io.commit units: a rerun trusts a whole one with the
same run hash; an earlier version's plain-JSON record is reused once and rewritten as a unit."""

from __future__ import annotations

import json

import colorfilter.evaluation.train as train_module
from colorfilter.evaluation.records import read_record
from colorfilter.io.commit import read_unit
from colorfilter.pipeline.evaluate import run_evaluate
from tests.evaluation.test_evaluate import _config, _run_dir


def test_records_are_units_and_earlier_ones_are_reused_once(tmp_path, monkeypatch) -> None:
    config = _config(_run_dir(tmp_path / "run"))
    config.evaluate.methods, config.evaluate.taus = ["color", "random"], [4]
    config.evaluate.random_multiples = []
    run_evaluate(config)
    runs = config.output_path / "eval" / "runs"
    color, random = runs / "color-tau4-n56-seed0.json", runs / "random-tau4-n56-seed0.json"
    assert read_unit(color).kind == "unit" and read_unit(color).objects == {}
    earlier = read_record(color)
    color.write_text(json.dumps(earlier))  # as earlier versions wrote a record: the result itself
    foreign = {**read_record(random), "run_hash": "0" * 16}  # another run's (other settings)
    random.write_text(json.dumps(foreign))
    trained: list[str] = []
    real = train_module.train_and_evaluate

    def spy(index, order, cfg, setup, seed, name):
        trained.append(name)
        return real(index, order, cfg, setup, seed, name)

    monkeypatch.setattr(train_module, "train_and_evaluate", spy)
    run_evaluate(config)
    assert trained == ["random-tau4-n56-seed0"]  # the earlier record of the same run is reused
    assert read_unit(color).kind == "unit" and read_record(color) == earlier  # ... rewritten
    assert read_record(random)["run_hash"] not in (foreign["run_hash"], None)
    trained.clear()
    run_evaluate(config)  # units only now: nothing to train
    assert trained == []
    color.write_bytes(color.read_bytes()[:-10])  # a record cut short: that run alone again
    run_evaluate(config)
    assert trained == ["color-tau4-n56-seed0"]
    assert read_record(color)["run_hash"] == earlier["run_hash"]
