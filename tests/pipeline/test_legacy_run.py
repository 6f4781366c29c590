"""A run folder an earlier version wrote resumes: its records are read, nothing is redone.

Earlier versions kept prepare's per-file records in `tokens/<split>/_done/<file>.json` (shard
sizes and sha256 as `part_bytes`/`part_sha256`) and marked a finished stage with its
`stats.json` alone. A rerun of this version reads those records (colorfilter.io.commit), keeps
every shard they still describe, replaces them by this version's records and writes the stage
markers: no shard is tokenized or scored again.
"""

from __future__ import annotations

import json
from pathlib import Path

from colorfilter.io.token_shards import list_shards
from colorfilter.layout import RunLayout
from colorfilter.pipeline.stages import run_stage
from tests.conftest import save_random_models
from tests.pipeline.test_prepare import make_config


def to_earlier_version(config) -> None:
    """Rewrite a finished run's prepare records and markers as an earlier version left them."""
    run = RunLayout.of(config)
    for split in ("pool", "downstream_train", "downstream_eval"):
        folder = run.tokens(split).path
        for record in sorted(Path(folder).glob("*.done.json")):
            unit = json.loads(record.read_text())
            legacy = {
                **unit["meta"],
                "part_bytes": {n: e["size"] for n, e in unit["objects"].items()},
                "part_sha256": {n: e["sha256"] for n, e in unit["objects"].items()},
            }
            legacy.pop("tokenizer_sha256")
            done = record.parent / "_done"
            done.mkdir(exist_ok=True)
            (done / record.name.replace(".done.json", ".json")).write_text(json.dumps(legacy))
            record.unlink()
    for stage in ("prepare", "score"):
        run.withdraw_stage(stage)  # an earlier version's stats.json were its only markers


def test_an_earlier_versions_run_resumes_without_redoing_anything(tmp_path, tokenizer_dir,
                                                                  c4_inputs):  # fmt: skip
    config = make_config(tmp_path, tokenizer_dir, c4_inputs, **{"score.batch_size": 8})
    run_stage("prepare", config)
    save_random_models(config)
    run_stage("score", config)
    to_earlier_version(config)
    run = RunLayout.of(config)
    assert not run.has_run("prepare") and not run.has_run("score")
    written = {p: p.stat().st_mtime_ns for split in ("tokens/pool", "scores/pool")
               for p in list_shards(config.output_path / split)}  # fmt: skip

    prepared = run_stage("prepare", config)
    scored = run_stage("score", config)
    assert run.has_run("prepare") and run.has_run("score")
    assert scored["shards_scored_now"] == 0 and prepared["pool"]["chunks"] > 0
    assert {p: p.stat().st_mtime_ns for p in written} == written  # no shard rewritten
    assert not list(config.output_path.glob("tokens/*/_done/*.json"))  # records replaced
    pool = run.tokens("pool").path
    assert len(list(Path(pool).glob("*.done.json"))) == 3
